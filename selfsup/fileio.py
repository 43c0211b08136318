"""Atomic file writes: a kill at any moment leaves the old file or the new one, never half of one. Used by checkpoints,
mask caches and shard indexes (every layer may use it). Also the one check of an output folder given by the user."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from selfsup.errors import ConfigError

__all__ = ["atomic_replace", "atomic_write_bytes", "make_output_dir"]


def make_output_dir(path: os.PathLike, option: str) -> Path:
    """Create the output folder ``path`` (named ``option`` in messages, e.g. ``out=``) with its parents; a path that is
    a file or cannot be created is a one-line :class:`~selfsup.errors.ConfigError` before any work is done."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option}{path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{option}{path} cannot be created: {exc.strerror or exc}") from None
    return path


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
