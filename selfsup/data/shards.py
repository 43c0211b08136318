"""Streaming shards: an image folder packed into litdata chunks, read by index (``data.dataset=shards``).

**Why litdata.** It is Lightning's streaming format (already in our stack), made for data on network storage or across
nodes: a few large chunk files instead of a million small ones, written in parallel, read locally, from a mount, or
from object storage through its cache. Its datasets also read a record *by index*, which keeps everything selfsup
builds on an index: the step sampler that gives every DDP rank and node its own part of each global batch and makes a
resume exact (:class:`selfsup.engine.batches.StepBatchSampler`), and the saliency mask cache keyed by dataset index.
webdataset's tar streams are read in order only, which would give up both.

**Layout.** ``selfsup data pack SRC OUT`` writes ``OUT/train`` (and ``OUT/test`` when SRC has a test split, found as
for ``data.dataset=folder``: ``SRC/train`` + ``SRC/val``, or ``SRC`` without its ``val``/``test`` folder). Each split
folder holds litdata's chunks and ``index.json``, plus ``selfsup.json`` (class names, record count, source) and
``labels.npy`` (every label, known without reading a record), all in record order. A record is the image file's bytes
as they were (JPEG stays JPEG: no re-encoding, no quality lost) and its label; records are decoded exactly like files
(:func:`selfsup.data.images.decode_image_bytes`), so a corrupt record gets the same one-line error, or
skip-and-count with ``data.skip_corrupt``, naming the record and its source file. A split folder appears only when it
is complete (written beside, then renamed), so a killed pack leaves nothing half-written.

**What a pack may replace.** Only ``OUT/train`` and ``OUT/test``, and only when the folder is a split that ``data pack``
wrote itself (its ``selfsup.json`` of format :data:`FORMAT` and nothing but litdata's and selfsup's files) or is empty;
anything else in ``OUT`` (a README) is left alone. An ``OUT`` that is, contains or sits inside the source or one of its
split folders is refused before any work. A new split is written beside the old one (a hidden ``.train.partial-*``
folder of its own in ``OUT``, removed on any failure) and swapped in only when complete: the old one is renamed aside,
the new one renamed in, then the old one removed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from selfsup.config import DataConfig
from selfsup.data.base import IMAGENET_MEAN, IMAGENET_STD
from selfsup.data.images import DEFAULT_MAX_PIXELS, EncodedImageDataset, _read_regular_file
from selfsup.errors import ConfigError, DataError
from selfsup.fileio import atomic_write_bytes
from selfsup.metafiles import Fields, claim_output_dir, make_output_dir, read_json, same_or_nested

__all__ = ["pack", "ShardDataset", "FORMAT", "parse_chunk_bytes", "check_pack_output", "is_shard_split"]

log = logging.getLogger("selfsup.data")

FORMAT = "selfsup-shards-v1"

#: the split names ``data pack`` writes (and may replace) in ``OUT``
SPLIT_NAMES = ("train", "test")
#: every file a split folder written by ``data pack`` holds: litdata's chunks and index, and selfsup's two files
_OWN_FILE = re.compile(r"(?:index\.json|labels\.npy|selfsup\.json|chunk-\d+-\d+\.bin)\Z")
#: units of ``--chunk-bytes`` (litdata's: powers of 1000)
_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "tb": 1000 ** 4}


def parse_chunk_bytes(value: Union[int, str], option: str = "--chunk-bytes") -> int:
    """The chunk size in bytes: a positive integer with an optional unit B, KB, MB, GB or TB (any case, litdata's
    powers of 1000), e.g. ``64MB``; anything else is a one-line :class:`ConfigError` naming ``option``."""
    if isinstance(value, bool):
        raise ConfigError(f"{option} must be a positive size such as 64MB, not {value!r}")
    if isinstance(value, int):
        number, unit = value, ""
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", str(value))
        if m is None or m.group(2).lower() not in _UNITS:
            raise ConfigError(f"{option} must be a positive size such as 64MB (an integer with an optional unit "
                              f"B, KB, MB, GB or TB), not {str(value)[:40]!r}")
        number, unit = int(m.group(1)), m.group(2).lower()
    if number < 1:
        raise ConfigError(f"{option} must be a positive size such as 64MB, not {str(value)[:40]!r}")
    return number * _UNITS[unit]


def _owned_marker(marker: Path) -> bool:
    """Whether the split folder of ``marker`` (its ``selfsup.json``) is one that ``data pack`` wrote: the marker is
    ours (format :data:`FORMAT`) and the folder holds nothing but regular files of our own names."""
    meta = read_json(marker, "shard index")
    if meta.get("format") != FORMAT:
        return False
    with os.scandir(marker.parent) as entries:
        return all(_OWN_FILE.match(e.name) and e.is_file(follow_symlinks=False) for e in entries)


def is_shard_split(directory: os.PathLike) -> bool:
    """Whether ``directory`` is a split folder that ``data pack`` wrote (and so may replace or remove)."""
    directory = Path(directory)
    marker = directory / "selfsup.json"
    if directory.is_symlink() or not directory.is_dir() or marker.is_symlink() or not marker.is_file():
        return False
    try:
        return _owned_marker(marker)
    except (DataError, OSError):
        return False


def check_pack_output(out: os.PathLike, sources: Iterable[Optional[Union[str, os.PathLike]]],
                      splits: Sequence[str] = SPLIT_NAMES) -> Path:
    """Refuse, before any work, an ``OUT`` that is, contains or sits inside one of ``sources`` (the source folder and
    its split folders), and an ``OUT/<split>`` that exists and is neither empty nor a split ``data pack`` wrote."""
    out = Path(out).expanduser()
    source_dirs = [Path(s).expanduser() for s in sources if s is not None]
    for src in source_dirs:
        if src.exists() and same_or_nested(out, src):
            raise ConfigError(f"OUT {out} is, contains or sits inside the source {src}; write the shards somewhere "
                              f"else")
    for p in (out, *out.parents):  # OUT, or the folder it would be made in, is a file (make_output_dir's words)
        if p.exists():
            if not p.is_dir():
                raise ConfigError(f"OUT {out} is a file, not a folder" if p == out else
                                  f"OUT {out}: {p} is a file, not a folder")
            break
    for name in splits:
        claim_output_dir(out / name, "OUT ", marker="selfsup.json", owned=_owned_marker, sources=source_dirs)
    return out


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


def _pack_split(ds: Any, out: Path, name: str, chunk_bytes: int, workers: int, progress: bool,
                tmps: List[Path]) -> Tuple[Path, Dict[str, Any]]:
    """Write split ``name`` of ``ds`` into a new hidden folder of its own in ``out`` (appended to ``tmps`` at once, so
    that the caller removes it on any failure); returns the folder and its ``selfsup.json``."""
    import litdata

    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=out))
    tmps.append(tmp)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp's folder is private; the split is an ordinary folder once renamed in
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
    return tmp, meta


def _swap_in(new: Path, dest: Path) -> None:
    """Put the complete split ``new`` at ``dest``: an empty ``dest`` is removed, a split of ours is renamed aside,
    ``new`` renamed in, then the old one removed; anything else at ``dest`` is refused (checked again here, as the
    folder may have changed while packing)."""
    old = None
    if dest.is_symlink() or dest.exists():
        if dest.is_dir() and not dest.is_symlink() and not any(os.scandir(dest)):
            os.rmdir(dest)
        elif is_shard_split(dest):
            old = dest.parent / f".{dest.name}.old-{secrets.token_hex(6)}"
            os.rename(dest, old)
        else:
            raise ConfigError(f"OUT {dest} now holds files that selfsup did not write; refusing to replace it "
                              f"(the new shards were not kept)")
    try:
        os.rename(new, dest)
    except OSError:
        if old is not None:
            os.rename(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    f = io.BytesIO()
    np.save(f, array, allow_pickle=False)
    return f.getvalue()


def pack(splits: Dict[str, Any], out: os.PathLike, *, chunk_bytes: Union[int, str] = "64MB", workers: int = 1,
         progress: bool = True, sources: Iterable[Optional[os.PathLike]] = ()) -> Dict[str, Dict[str, Any]]:
    """Pack folder datasets (``{"train": FolderDataset, "test": ...}``, as ``data.dataset=folder`` lists them) into
    ``out/<split>``. Returns each split's ``selfsup.json``.

    Before any work: ``chunk_bytes`` is checked (:func:`parse_chunk_bytes`) and ``out`` must not be, contain or sit
    inside ``sources`` or any split's folder, and each ``out/<split>`` must be missing, empty or a split written here
    (:func:`check_pack_output`). Every split is written beside and swapped in only when all of them are complete; a
    failure removes what was written and leaves ``out`` as it was. A ``test`` split of ours left in ``out`` from an
    earlier pack is removed when ``splits`` has none (it would be scored against the new training split)."""
    for name in splits:
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}")
    size = parse_chunk_bytes(chunk_bytes)
    sources = [*sources, *(ds.directory for ds in splits.values())]
    out = check_pack_output(out, sources, list(splits))
    make_output_dir(out, "OUT ")
    written: Dict[str, Tuple[Path, Dict[str, Any]]] = {}
    tmps: List[Path] = []
    try:
        for name, ds in splits.items():
            written[name] = _pack_split(ds, out, name, size, workers, progress, tmps)
        for name, (tmp, _) in written.items():
            _swap_in(tmp, out / name)
        for name in SPLIT_NAMES:
            if name not in splits and is_shard_split(out / name):
                log.warning("%s: removed the %s split of an earlier pack (the source has none)", out / name, name)
                shutil.rmtree(out / name)
    finally:
        for tmp in tmps:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return {name: meta for name, (_, meta) in written.items()}


def folder_pack_plan(src: str, out: str, *, test_root: Optional[str] = None, limit: Optional[int] = None,
                     workers: int = 1, chunk_bytes: Union[int, str] = "64MB") -> Dict[str, Any]:
    """``selfsup data pack SRC OUT``, checked before anything is listed or written: the options, then ``OUT`` against
    every folder the source reads (it may be none of them, nor contain one, nor sit inside one: a flat SRC lists its
    own sub-folders as training images), then the splits, listed as ``data.dataset=folder`` lists them (its test split
    SRC/val, SRC/test or ``test_root``, if any). Returns the arguments of :func:`pack` (``splits``, ``out``,
    ``chunk_bytes`` in bytes, ``sources``) and ``stale_test``: whether pack will remove the test split of an earlier
    pack in ``OUT`` (this source has none)."""
    from selfsup.data.sources.folder import find_test_dir, folder_dataset  # not at the top: sources imports this module

    if workers < 1 or (limit is not None and limit < 1):
        raise ConfigError("--workers and --limit must be >= 1")
    size = parse_chunk_bytes(chunk_bytes, "--chunk-bytes")
    src_dir, out_dir = Path(src).expanduser(), Path(out).expanduser()
    cfg = DataConfig(dataset="folder", root=src, test_root=test_root, limit=limit)
    sources = [src_dir, src_dir / "train", src_dir / "val", src_dir / "test", test_root]
    test_dir = find_test_dir(cfg, src_dir) if src_dir.is_dir() else None
    check_pack_output(out_dir, sources, ["train", "test"] if test_dir is not None else ["train"])
    splits = {"train": folder_dataset(cfg, "train")}  # checks that SRC exists
    if test_dir is not None:  # found as data.dataset=folder finds it
        splits["test"] = folder_dataset(cfg, "test")
    return {"splits": splits, "out": out_dir, "chunk_bytes": size, "sources": sources,
            "stale_test": "test" not in splits and is_shard_split(out_dir / "test")}


def read_shard_meta(directory: os.PathLike) -> Dict[str, Any]:
    """The checked ``selfsup.json`` of a shard split: ``format`` (:data:`FORMAT`), ``records`` (an integer >= 1),
    ``classes`` (distinct strings, or None when unlabelled) and ``names`` (strings, one per record, or None). One
    :class:`DataError` line naming the file and the field otherwise."""
    path = Path(directory) / "selfsup.json"
    f = Fields(read_json(path, "shard index"), path, "shard index")
    fmt = f.raw("format", None)
    if fmt != FORMAT:
        raise DataError(f"{path}: shard index of format {str(fmt)[:40]!r}; expected {FORMAT} (pack it again)")
    records = f.integer("records", lo=1)
    classes = f.list("classes", None, of=str, allow_none=True) or None
    if classes is not None and len(set(classes)) != len(classes):
        raise f.error("classes", "names a class twice")
    names = f.list("names", None, of=str, allow_none=True)
    if names is not None and len(names) != records:
        raise f.error("names", f"has {len(names)} entries for {records} records")
    return {"format": fmt, "records": records, "classes": classes, "names": names}


def _read_labels(path: Path, records: int, classes: Optional[List[str]]) -> np.ndarray:
    """``labels.npy``: a 1-D integer array of ``records`` labels, each in ``[0, len(classes))``, or every one -1 when
    the split is unlabelled (no classes). One :class:`DataError` line naming the file otherwise."""
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read the shard labels: {str(exc).splitlines()[0][:160]}") from None
    if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: the shard labels must be a 1-D integer array, not "
                        f"{getattr(labels, 'ndim', '?')}-D {getattr(labels, 'dtype', type(labels).__name__)} "
                        f"(pack it again)")
    if len(labels) != records:
        raise DataError(f"{path}: {len(labels)} labels for the {records} records of selfsup.json (pack it again)")
    if classes:
        bad = (labels < 0) | (labels >= len(classes))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: label {int(labels[k])} of record {k} is outside [0, {len(classes)}) "
                            f"(selfsup.json names {len(classes)} classes; pack it again)")
    elif (labels != -1).any():
        k = int(np.flatnonzero(labels != -1)[0])
        raise DataError(f"{path}: label {int(labels[k])} of record {k} in an unlabelled split (selfsup.json names "
                        f"no classes, so every label is -1; pack it again)")
    return labels.astype(np.int64)


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
        meta = read_shard_meta(directory)
        labels = _read_labels(labels_path, meta["records"], meta["classes"])
        n = len(labels) if limit is None else min(limit, len(labels))
        self.directory = directory
        self.names: List[str] = list(meta["names"] or [])[:n]
        self.class_names: Optional[List[str]] = meta["classes"]
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
    ds = ShardDataset(directory, cfg.image_size, skip_corrupt=cfg.skip_corrupt, limit=cfg.limit,
                      max_pixels=cfg.max_pixels, whole=whole, max_aspect=cfg.max_aspect)
    if split == "test":
        _check_same_classes(root / "train", ds)
    return ds


def _check_same_classes(train_dir: Path, test: ShardDataset) -> None:
    """A test split is scored against the training split's labels, so both must name the same classes in the same
    order (a label is a position in that list). As for ``data.dataset=folder``, an unlabelled split on either side is
    not compared; a missing training split leaves nothing to compare."""
    if not (train_dir / "selfsup.json").is_file():
        return
    train_classes = read_shard_meta(train_dir)["classes"]
    if train_classes and test.class_names and train_classes != test.class_names:
        def show(c: List[str]) -> str:
            return ", ".join(c[:5]) + (f", ... ({len(c)} in all)" if len(c) > 5 else "")

        raise DataError(f"the test shards {test.directory} name other classes ({show(test.class_names)}) than the "
                        f"training shards {train_dir} ({show(train_classes)}); pack both splits from one dataset")
