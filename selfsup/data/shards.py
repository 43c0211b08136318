"""Streaming shards: an image folder packed into litdata chunks, read by index (``data.dataset=shards``).

**Why litdata.** It is Lightning's streaming format (already in our stack), made for data on network storage or across
nodes: a few large chunk files instead of a million small ones, written in parallel, read locally, from a mount, or
from object storage through its cache. Its datasets also read a record *by index*, which keeps everything selfsup
builds on an index: the step sampler that gives every DDP rank and node its own part of each global batch and makes a
resume exact (:class:`selfsup.engine.trainer.StepBatchSampler`), and the saliency mask cache keyed by dataset index.
webdataset's tar streams are read in order only, which would give up both.

**Layout.** ``selfsup data pack SRC OUT`` writes ``OUT/train`` (and ``OUT/test`` when SRC has a test split, found as
for ``data.dataset=folder``: ``SRC/train`` + ``SRC/val``, or ``SRC`` without its ``val``/``test`` folder). Each split
folder holds litdata's chunks and ``index.json``, plus ``selfsup.json`` (class names, record count, source) and
``labels.npy`` (every label, known without reading a record), all in record order. A record is the image file's bytes
as they were (JPEG stays JPEG: no re-encoding, no quality lost) and its label; records are decoded exactly like files
(:func:`selfsup.data.datasets.decode_image_bytes`), so a corrupt record gets the same one-line error, or
skip-and-count with ``data.skip_corrupt``, naming the record and its source file. A split folder appears only when it
is complete (written beside, then renamed), so a killed pack leaves nothing half-written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from selfsup.config import DataConfig
from selfsup.data.base import IMAGENET_MEAN, IMAGENET_STD
from selfsup.data.images import DEFAULT_MAX_PIXELS, EncodedImageDataset, _read_regular_file
from selfsup.errors import DataError
from selfsup.fileio import atomic_write_bytes

__all__ = ["pack", "ShardDataset", "FORMAT"]

log = logging.getLogger("selfsup.data")

FORMAT = "selfsup-shards-v1"


def _record(item: Tuple[int, str, int]) -> Dict[str, Any]:
    """One litdata record: the file's bytes (empty if it cannot be read: the error is then the record's, at training
    time, as for a file that breaks later), its label and its position in the listing."""
    position, path, label = item
    try:
        data = _read_regular_file(Path(path))
    except DataError:
        data = b""
    return {"image": data, "label": int(label), "position": int(position)}


def _reader(directory: Path):
    """litdata's index-addressed reader of a shard folder (local or mounted: chunks are memory-mapped in place; the
    cache size only silences litdata's notice, nothing is copied)."""
    import litdata

    return litdata.StreamingDataset(str(directory), max_cache_size="100GB")


def _pack_split(ds: Any, out: Path, chunk_bytes: str, workers: int, progress: bool) -> Dict[str, Any]:
    import litdata

    tmp = out.parent / f".{out.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    inputs = [(k, str(p), int(lab)) for k, (p, lab) in enumerate(zip(ds.files, ds._label_list))]
    t0 = time.perf_counter()
    litdata.optimize(fn=_record, inputs=inputs, output_dir=str(tmp), chunk_bytes=chunk_bytes,
                     num_workers=max(1, workers), reorder_files=False, mode="overwrite", verbose=progress,
                     start_method="fork" if os.name == "posix" else None)
    # litdata's record order is its own (workers write their own chunks): read it back, which also checks every record
    reader = _reader(tmp)
    if len(reader) != len(inputs):
        raise DataError(f"packing {ds.directory} wrote {len(reader)} records for {len(inputs)} images")
    order = np.empty(len(reader), dtype=np.int64)
    empty = 0
    for k in range(len(reader)):
        record = reader[k]
        order[k] = int(record["position"])
        empty += not len(record["image"])
    labels = np.asarray(ds._label_list, dtype=np.int64)[order]
    names = [str(Path(ds.files[i]).relative_to(ds.directory)) for i in order.tolist()]
    meta = {"format": FORMAT, "records": len(order), "source": str(ds.directory), "classes": ds.class_names,
            "names": names, "unreadable_files": empty,
            "seconds": round(time.perf_counter() - t0, 2)}
    buf = _npy_bytes(labels)
    atomic_write_bytes(tmp / "labels.npy", buf)
    atomic_write_bytes(tmp / "selfsup.json", json.dumps(meta).encode())
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return meta


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    f = io.BytesIO()
    np.save(f, array, allow_pickle=False)
    return f.getvalue()


def pack(splits: Dict[str, Any], out: os.PathLike, *, chunk_bytes: str = "64MB", workers: int = 1,
         progress: bool = True) -> Dict[str, Dict[str, Any]]:
    """Pack folder datasets (``{"train": FolderDataset, "test": ...}``, as ``data.dataset=folder`` lists them) into
    ``out/<split>``. Returns each split's ``selfsup.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return {name: _pack_split(ds, out / name, chunk_bytes, workers, progress) for name, ds in splits.items()}


class ShardDataset(EncodedImageDataset):
    """One split of a ``selfsup data pack`` folder, read by index through litdata (see the module docstring).

    Labels and class names come from the split's ``selfsup.json`` / ``labels.npy`` without reading a record; images are
    decoded and fitted like folder images (whole for pretraining's views, centre squares elsewhere). The litdata
    reader is opened lazily in each process that reads (DataLoader workers included), never pickled.
    """

    def __init__(self, directory: os.PathLike, image_size: int, *, skip_corrupt: bool = False,
                 limit: Optional[int] = None, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS, whole: bool = False,
                 max_aspect: float = 3.0):
        directory = Path(directory)
        meta_path, labels_path = directory / "selfsup.json", directory / "labels.npy"
        if not directory.is_dir():
            raise DataError(f"shard folder {directory} does not exist (write one with `selfsup data pack SRC OUT`)")
        if not meta_path.is_file() or not labels_path.is_file() or not (directory / "index.json").is_file():
            raise DataError(f"{directory} is not a selfsup shard folder (no selfsup.json, labels.npy and index.json; "
                            f"write one with `selfsup data pack SRC OUT`)")
        try:
            meta = json.loads(meta_path.read_text())
            labels = np.load(labels_path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the shard index in {directory}: {exc}") from None
        if meta.get("format") != FORMAT or labels.ndim != 1 or len(labels) != meta.get("records"):
            raise DataError(f"{directory}: shard index of format {meta.get('format')!r} with {len(labels)} labels for "
                            f"{meta.get('records')} records; expected {FORMAT} (pack it again)")
        n = len(labels) if limit is None else min(limit, len(labels))
        self.directory = directory
        self.names: List[str] = list(meta.get("names") or [])[:n]
        self.class_names = meta.get("classes")
        self.num_classes = len(self.class_names) if self.class_names else None
        self.labels = torch.from_numpy(labels[:n].astype(np.int64))
        self._label_list = self.labels.tolist()
        self._setup(image_size, skip_corrupt, max_pixels, whole, max_aspect)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.has_masks = False
        self._reader = None

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_reader"] = None  # each process opens its own
        return state

    def _open(self):
        if self._reader is None:
            try:
                self._reader = _reader(self.directory)
            except Exception as exc:  # noqa: BLE001 - litdata raises several kinds on a broken index
                raise DataError(f"cannot open the shards in {self.directory}: {exc}") from None
        return self._reader

    def _read(self, i: int) -> Tuple[bytes, str]:
        name = self.names[i] if i < len(self.names) else "?"
        source = f"record {i} ({name}) of {self.directory}"
        try:
            record = self._open()[i]
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - a truncated or corrupt chunk
            raise DataError(f"cannot read image {source}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") \
                from None
        return bytes(record["image"]), source


def shard_dataset(cfg: DataConfig, split: str, whole: bool = False) -> ShardDataset:
    """``data.dataset=shards``: ``data.root`` is a ``selfsup data pack`` output (``ROOT/train``, ``ROOT/test``);
    ``data.test_root`` names another test shard folder."""
    from selfsup.errors import ConfigError

    if not cfg.root:
        raise ConfigError("data.root is required for data.dataset=shards (a folder written by `selfsup data pack`)")
    root = Path(cfg.root).expanduser()
    directory = root / split
    if split == "test" and cfg.test_root:
        directory = Path(cfg.test_root).expanduser()
    if split == "test" and not directory.is_dir():
        raise DataError(f"no test split in {root} (pack a source with a test folder, or set data.test_root)")
    return ShardDataset(directory, cfg.image_size, skip_corrupt=cfg.skip_corrupt, limit=cfg.limit,
                        max_pixels=cfg.max_pixels, whole=whole, max_aspect=cfg.max_aspect)
