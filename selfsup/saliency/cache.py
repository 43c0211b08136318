"""Writing a saliency mask cache (``selfsup saliency predict``), the files :class:`selfsup.data.masks.MaskCache` reads.

The format is the reader's (:mod:`selfsup.data.masks`, :data:`~selfsup.data.masks.FORMAT`): ``<dir>/<split>.json``
holds the dataset's fingerprint, the mask side and the name of the array file ``<split>.<token>.npy`` (uint8 masks
``(N, s, s)``, 255 = foreground).

*Replacing a cache* (``saliency predict`` again into the same folder): the new array is written under a new name beside
the old cache, which stays valid and readable the whole time; once it is complete, one atomic ``os.replace`` of the JSON
switches readers from the old array to the new one, and only then is the old array (the one the old JSON named, a
file this module wrote) removed. A kill at any moment leaves the old cache or the new one, never a fingerprint of one
with the array of the other. Nothing else in the folder is touched, and a ``<split>.json`` that is not a mask cache's
is never overwritten.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from selfsup.data.masks import FORMAT, MaskCache
from selfsup.errors import ConfigError, DataError
from selfsup.fileio import atomic_write_bytes

__all__ = ["check_writable", "create_cache", "write_cache"]


def check_writable(directory: os.PathLike, split: str, option: str = "--out") -> Path:
    """Before any work: ``directory`` must be a folder selfsup can write (created if missing), and an existing
    ``<split>.json`` in it must be a mask cache's (its fingerprint read back); anything else is one line naming
    ``option`` and the file. Returns the folder."""
    from selfsup.metafiles import make_output_dir

    d = make_output_dir(directory, option)
    _, meta = MaskCache.paths(d, split)
    if meta.is_symlink() or meta.exists():
        try:
            if meta.is_symlink():
                raise DataError(f"{meta} is a symbolic link")
            MaskCache.read_record(meta, split)
        except DataError as exc:
            raise ConfigError(f"{option} {d}: {meta.name} there is not a mask cache selfsup wrote ({exc}); "
                              "refusing to replace it: choose another folder") from None
    return d


def create_cache(directory: os.PathLike, split: str, fingerprint: Dict[str, Any],
                 mask_size: int) -> Tuple[np.memmap, "_PendingCache"]:
    """A writable memory-mapped ``(N, mask_size, mask_size)`` uint8 array in a new file beside the current cache
    (which stays valid), and ``finish()``, which flushes it and switches the cache to it in one atomic replace of
    the JSON (see the module docstring); ``finish.abort()`` removes the new file instead. A killed write leaves the
    old cache, never one that could be mistaken for a finished new one."""
    d = check_writable(directory, split, "mask cache folder")
    _, meta = MaskCache.paths(d, split)
    while True:
        token = secrets.token_hex(8)
        npy = d / f"{split}.{token}.npy"
        partial = d / f".{split}.{token}.npy.partial"
        if not npy.exists() and not partial.exists():
            break
    arr = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8,
                                    shape=(int(fingerprint["size"]), mask_size, mask_size))
    return arr, _PendingCache(arr, partial, npy, meta, split, dict(fingerprint, format=FORMAT,
                                                                   mask_size=int(mask_size), array=npy.name))


def write_cache(directory: os.PathLike, split: str, masks: np.ndarray, fingerprint: Dict[str, Any]) -> MaskCache:
    """Write ``masks`` (uint8 ``(N, s, s)``) and the fingerprint (see :func:`create_cache`)."""
    masks = np.asarray(masks)
    if masks.dtype != np.uint8 or masks.ndim != 3 or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"cache masks must be uint8 (N, s, s), got {masks.dtype} {masks.shape}")
    if masks.shape[0] != fingerprint["size"]:
        raise ValueError(f"{masks.shape[0]} masks for a dataset of {fingerprint['size']} images")
    arr, finish = create_cache(directory, split, fingerprint, masks.shape[1])
    try:
        arr[:] = masks
    except BaseException:
        finish.abort()
        raise
    return finish()


class _PendingCache:
    """``finish()`` of :func:`create_cache` (callable), with ``abort()``."""

    def __init__(self, arr: np.memmap, partial: Path, npy: Path, meta: Path, split: str, record: Dict[str, Any]):
        self.arr, self.partial, self.npy, self.meta = arr, partial, npy, meta
        self.split, self.record = split, record

    def _old_array(self) -> Optional[Path]:
        """The array the current JSON names, if the JSON is a mask cache's (else None: nothing is removed)."""
        if not self.meta.is_file() or self.meta.is_symlink():
            return None
        try:
            _, old = MaskCache.read_record(self.meta, self.split)
        except DataError:
            return None
        return old

    def abort(self) -> None:
        """Drop the new file; the current cache is untouched."""
        for p in (self.partial, self.npy):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def __call__(self) -> MaskCache:
        try:
            self.arr.flush()
            with open(self.partial, "rb+") as fh:
                os.fsync(fh.fileno())
            old = self._old_array()
            os.replace(self.partial, self.npy)  # complete, under its own new name; nothing refers to it yet
            atomic_write_bytes(self.meta, (json.dumps(self.record, indent=2) + "\n").encode())  # the switch
        except BaseException:
            self.abort()
            raise
        if old is not None and old != self.npy and old.is_file() and not old.is_symlink():
            try:
                old.unlink()  # the previous cache's array: written here, named by its own JSON, now unreferenced
            except OSError:
                pass
        return MaskCache(np.load(self.npy, mmap_mode="r"), self.record, self.npy)
