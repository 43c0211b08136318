"""Atomic file writes: a kill at any moment leaves the old file or the new one, never half of one. Used by checkpoints,
mask caches and shard indexes (every layer may use it).
The checks of output paths given by the user are in :mod:`selfsup.metafiles`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_replace", "atomic_write_bytes"]


def atomic_replace(path: Path, fill: Callable[[str], None]) -> None:
    """``fill(tmp)`` writes a temporary file next to ``path`` (the name does not exist yet), which then replaces
    ``path`` in one ``os.replace``; on any failure the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        fill(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (flushed and fsync'ed; the folder is created if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def fill(tmp: str) -> None:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    atomic_replace(path, fill)
