"""Datasets: uint8 RGB images of one square size, with labels and (for the built-in data) foreground masks.

Every dataset is an :class:`ImageDataset` whose items are dicts:

* ``image``: uint8 ``(3, S, S)`` RGB; grayscale sources are replicated to three channels;
* ``label``: int, ``-1`` for unlabelled images;
* ``index``: int, the item's position in the dataset (the trainer uses it, e.g. to find an image again);
* ``mask``: uint8 ``(1, S, S)``, ``255`` = foreground (soft, anti-aliased values in between), only when
  ``dataset.has_masks``.

Augmentation is *not* done here: the views of a step are rendered batched by :class:`selfsup.data.views.MultiViewSampler`,
so a dataset only has to deliver the source images, and :func:`collate` stacks them. Two kinds of datasets:

* **In memory** (:class:`InMemoryDataset`: Fashion-MNIST, CIFAR-10/100 and the procedural shapes of
  :mod:`selfsup.data.shapes`): one uint8 tensor ``(N, 3, S, S)``, resized once at load time if ``data.image_size`` is not
  the native size. :meth:`InMemoryDataset.__getitems__` gathers a whole batch with one indexing op, which
  ``torch.utils.data.DataLoader`` uses instead of one ``__getitem__`` call per image.
* **Folders** (:class:`FolderDataset`): an ImageFolder layout (one sub-folder per class) or a flat folder of unlabelled
  images, decoded lazily from disk in ``__getitem__``; the short side is resized to ``S`` and the centre ``S x S`` crop
  kept. A corrupt image is a one-line :class:`~selfsup.errors.DataError` naming the file, or, with
  ``data.skip_corrupt=true``, an item of ``None`` that :func:`collate` drops and counts.

Files a user supplies are never trusted: IDX headers and sizes are checked, CIFAR pickles are read with an unpickler that
only builds numpy arrays (:class:`RestrictedUnpickler`), so a malicious file cannot run code.
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import stat
import zlib
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from selfsup.config import DataConfig
from selfsup.data.base import (IMAGENET_MEAN, IMAGENET_STD, ImageDataset, InMemoryDataset,  # noqa: F401  (re-exported)
                               _triple, collate)
from selfsup.data.images import (DEFAULT_MAX_PIXELS, EncodedImageDataset, _one_line,  # noqa: F401  (re-exported)
                                 _read_regular_file, decode_image_bytes, decode_image_file, fit_image, load_image)
from selfsup.data.shapes import BACKGROUND_FAMILIES, ShapesDataset
from selfsup.errors import ConfigError, DataError

log = logging.getLogger("selfsup.data")

SPLITS = ("train", "test")

# Per-channel statistics in [0, 1] space, used to normalise the views.
FASHION_MNIST_MEAN = (0.2860, 0.2860, 0.2860)
FASHION_MNIST_STD = (0.3530, 0.3530, 0.3530)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)  # the per-pixel std over the training set (not the often-quoted 0.2023, ...)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

FASHION_MNIST_ENV = "SELFSUP_FASHION_MNIST"
FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist/"  # Debian package dataset-fashion-mnist
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


# --------------------------------------------------------------------------------------------------------------------
# build_dataset
# --------------------------------------------------------------------------------------------------------------------


def build_dataset(cfg: DataConfig, split: str, *, for_views: bool = False,
                  device_decode: bool = False) -> ImageDataset:
    """The ``split`` ("train" or "test") of ``cfg.dataset``, limited to the first ``cfg.limit`` images.

    ``for_views``: the dataset that pretraining crops its views from. Folder data then keeps each image whole (aspect
    kept, short side ``image_size``) when ``cfg.crop_from`` is "whole" (shards too); everywhere else (evaluation, saliency) images
    are the centre square, which is the evaluation's "resize, centre-crop". With ``device_decode`` the views' dataset
    leaves JPEGs encoded for :func:`selfsup.data.images.decode_on_device` (:func:`decode_on` says when). ``cfg.mean`` / ``cfg.std``, when set,
    replace the dataset's own normalisation statistics.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got '{split}'")
    name = cfg.dataset
    if name == "shapes":

        size = cfg.train_size if split == "train" else cfg.test_size
        if cfg.limit is not None:
            size = min(size, cfg.limit)
        ds: ImageDataset = ShapesDataset(num_classes=cfg.num_classes, image_size=cfg.image_size, size=size,
                                         split=split, seed=0,
                                         spurious=cfg.spurious if split == "train" or cfg.test_spurious is None
                                         else cfg.test_spurious,
                                         stats_images=min(cfg.train_size, 2048),
                                         backgrounds=BACKGROUND_FAMILIES if cfg.backgrounds is None else cfg.backgrounds)
    elif name == "fashion_mnist":
        ds = load_fashion_mnist(cfg.root, split, cfg.image_size, cfg.limit)
    elif name in ("cifar10", "cifar100"):
        if not cfg.root:
            raise ConfigError(f"data.root is required for data.dataset={name}")
        ds = load_cifar(cfg.root, name, split, cfg.image_size, cfg.limit)
    elif name == "folder":
        ds = folder_dataset(cfg, split, whole=for_views and cfg.crop_from == "whole")
    elif name == "shards":
        from selfsup.data.shards import shard_dataset  # imports litdata: only when asked for

        ds = shard_dataset(cfg, split, whole=for_views and cfg.crop_from == "whole")
    else:
        raise ConfigError(f"unknown data.dataset '{name}'")
    if for_views and device_decode and isinstance(ds, EncodedImageDataset):
        ds.device_decode = True  # JPEGs stay encoded until the trainer decodes the batch (decode_on_device)
    if cfg.mean is not None:
        ds.mean = _triple(cfg.mean)
    if cfg.std is not None:
        ds.std = _triple(cfg.std)
    return ds


def decode_on(cfg: DataConfig, device: torch.device) -> bool:
    """Whether pretraining decodes JPEGs on ``device``: ``data.decode`` device, or auto on a CUDA device."""
    return cfg.decode == "device" or (cfg.decode == "auto" and torch.device(device).type == "cuda")


def resize_images(images: Tensor, size: int, chunk: int = 4096) -> Tensor:
    """Resize a uint8 batch ``(N, C, H, W)`` to ``(N, C, size, size)`` with antialiasing, in chunks (bounded memory)."""
    from torchvision.transforms.v2 import functional as TF

    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty(images.shape[0], images.shape[1], size, size, dtype=torch.uint8)
    for a in range(0, images.shape[0], chunk):
        out[a:a + chunk] = TF.resize(images[a:a + chunk], [size, size], antialias=True)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Fashion-MNIST (IDX files)
# --------------------------------------------------------------------------------------------------------------------

_IDX_UBYTE = 0x08


def read_idx(path: os.PathLike, limit: Optional[int] = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzipped or not) into a uint8 array of the shape its header declares.

    The header is checked: two zero bytes, type code 0x08 (unsigned byte; the only type Fashion-MNIST uses), the number
    of dimensions, then one big-endian uint32 size per dimension. With ``limit`` only the first ``limit`` entries along
    the first dimension are read (and checked for truncation); without it the whole file must match the header exactly.
    Any mismatch, a truncated or corrupt gzip stream -> :class:`DataError` naming the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
        opener = gzip.open if gz else open
        with opener(path, "rb") as f:
            header = f.read(4)
            if len(header) < 4 or header[0] != 0 or header[1] != 0:
                raise DataError(f"{path} is not an IDX file (bad magic number {header.hex() or 'empty'})")
            if header[2] != _IDX_UBYTE:
                raise DataError(f"{path}: unsupported IDX element type 0x{header[2]:02x} (expected 0x08, unsigned byte)")
            ndim = header[3]
            if ndim == 0:
                raise DataError(f"{path}: IDX header declares 0 dimensions")
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"{path} is truncated (incomplete IDX header)")
            dims = [int.from_bytes(dims_raw[4 * k:4 * k + 4], "big") for k in range(ndim)]
            n = dims[0] if limit is None else min(dims[0], int(limit))
            per_item = int(np.prod(dims[1:], dtype=np.int64)) if ndim > 1 else 1
            need = n * per_item
            data = f.read(need)
            if len(data) < need:
                raise DataError(f"{path} is truncated: the header declares {dims[0]} x {dims[1:]} bytes "
                                f"but the file holds {len(data) // max(per_item, 1)} items")
            if limit is None and f.read(1):
                raise DataError(f"{path} has more data than its IDX header declares ({dims})")
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {path}: {_one_line(exc)}") from None
    return np.frombuffer(data, dtype=np.uint8).reshape(n, *dims[1:])


def _find_file(directory: Path, name: str) -> Optional[Path]:
    for cand in (directory / f"{name}.gz", directory / name):
        if cand.is_file():
            return cand
    return None


def fashion_mnist_dir(root: Optional[str]) -> Path:
    """``root``, else ``$SELFSUP_FASHION_MNIST``, else the Debian package's ``/usr/share/datasets/fashion-mnist/``."""
    return Path(root or os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DEFAULT_DIR).expanduser()


def load_fashion_mnist(root: Optional[str], split: str, image_size: int = 28,
                       limit: Optional[int] = None) -> InMemoryDataset:
    """Fashion-MNIST (Xiao et al. 2017) from its four IDX files (``.gz`` or not) in :func:`fashion_mnist_dir`.

    Also looks in ``DIR/FashionMNIST/raw`` (torchvision's layout) and ``DIR/fashion-mnist``. The 28 px grayscale images
    are resized once to ``image_size`` (e.g. 32) and replicated to three channels (an expanded view, no extra memory).
    """
    base = fashion_mnist_dir(root)
    img_name, lbl_name = FASHION_MNIST_FILES[split]
    found = None
    for d in (base, base / "FashionMNIST" / "raw", base / "fashion-mnist"):
        img_path, lbl_path = _find_file(d, img_name), _find_file(d, lbl_name)
        if img_path and lbl_path:
            found = (img_path, lbl_path)
            break
    if found is None:
        missing = img_name if _find_file(base, img_name) is None else lbl_name
        raise DataError(f"Fashion-MNIST not found in {base} (no {missing}[.gz]); install it with "
                        f"`apt-get install dataset-fashion-mnist` or pass data.root=DIR")
    img_path, lbl_path = found
    images = read_idx(img_path, limit)
    labels = read_idx(lbl_path, limit)
    if images.ndim != 3:
        raise DataError(f"{img_path}: expected 3 IDX dimensions (N, H, W), got shape {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{lbl_path}: expected 1 IDX dimension (N,), got shape {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{img_path} has {images.shape[0]} images but {lbl_path} has {labels.shape[0]} labels")
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{lbl_path}: label {int(labels.max())} out of range 0..9")
    gray = torch.from_numpy(images.copy()).unsqueeze(1)  # (N, 1, H, W)
    gray = resize_images(gray, image_size)
    rgb = gray.expand(-1, 3, -1, -1)
    return InMemoryDataset(rgb, torch.from_numpy(labels.astype(np.int64)), num_classes=10,
                           mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD, class_names=list(FASHION_MNIST_CLASSES))


# --------------------------------------------------------------------------------------------------------------------
# CIFAR (python pickles, read with a restricted unpickler)
# --------------------------------------------------------------------------------------------------------------------


def _numpy_attr(names: Sequence[str]) -> Any:
    """The first of ``module:attr`` names that exists (numpy 2 moved ``numpy.core`` to ``numpy._core``)."""
    import importlib

    for full in names:
        module, attr = full.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild numpy arrays, dtypes and scalars, plus the pickle protocol's plain containers.

    The one non-numpy global is ``_codecs.encode``, which turns a str back into bytes: it is how Python 3 writes bytes
    (e.g. an array's data) at pickle protocols 0-2.

    A pickle can call any importable callable through ``find_class`` (``os.system``, ``eval``, ...); here every global
    other than the numpy reconstructors below raises ``pickle.UnpicklingError``, so a user-provided file cannot run
    code. Both ``numpy.core`` (numpy 1 pickles, e.g. the official CIFAR files) and ``numpy._core`` (numpy 2) names are
    accepted; both resolve to the installed numpy's functions.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray:_reconstruct",
                                                     "numpy.core.multiarray:_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray:_reconstruct",
                                                      "numpy.core.multiarray:_reconstruct"),
        ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray:scalar", "numpy.core.multiarray:scalar"),
        ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray:scalar", "numpy.core.multiarray:scalar"),
        ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric:_frombuffer", "numpy.core.numeric:_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric:_frombuffer", "numpy.core.numeric:_frombuffer"),
        ("numpy", "ndarray"): ("numpy:ndarray",),
        # Python 3 pickles at protocol <= 2 store bytes (an array's data) as _codecs.encode(str, "latin1")
        ("_codecs", "encode"): ("_codecs:encode",),
        ("numpy", "dtype"): ("numpy:dtype",),
    }

    def find_class(self, module: str, name: str) -> Any:
        target = self._ALLOWED.get((module, name))
        obj = _numpy_attr(target) if target else None
        if obj is None:
            raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}' (only numpy arrays are allowed)")
        return obj


def safe_unpickle(path: Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (``encoding="bytes"``, as the Python 2 CIFAR files need)."""
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any failure of an untrusted file is the user's DataError
        raise DataError(f"cannot read {path}: {_one_line(exc)}") from None


def _get(d: dict, key: str) -> Any:
    """``d[b'key']`` (the official files) or ``d['key']`` (pickles written by Python 3 code)."""
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


_CIFAR = {
    # name: (folder, train files, test files, label key, meta file, names key, mean, std, classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels",
                "batches.meta", "label_names", CIFAR10_MEAN, CIFAR10_STD, 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", "meta", "fine_label_names", CIFAR100_MEAN,
                 CIFAR100_STD, 100),
}


def cifar_dir(root: str, name: str) -> Path:
    """The folder holding the CIFAR batches: ``root`` itself or ``root/cifar-10-batches-py`` (``cifar-100-python``)."""
    folder, train_files, test_files = _CIFAR[name][:3]
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"data.root {base} does not exist (expected the extracted {folder} folder or its parent)")
    for d in (base / folder, base):
        if all((d / f).is_file() for f in train_files + test_files):
            return d
    for d in (base / folder, base):  # a partial download: name what is missing
        present = [f for f in train_files + test_files if (d / f).is_file()]
        if present:
            missing = [f for f in train_files + test_files if not (d / f).is_file()]
            raise DataError(f"{name} in {d} is incomplete: missing {', '.join(missing)}")
    raise DataError(f"{name} not found in {base}: expected {folder}/ with {', '.join(train_files + test_files)} "
                    f"(the python version of the dataset, extracted)")


def load_cifar(root: str, name: str, split: str, image_size: int = 32, limit: Optional[int] = None) -> InMemoryDataset:
    """CIFAR-10 or CIFAR-100 (fine labels) from the python-pickle batches, read with :func:`safe_unpickle`.

    Batches are read in order until ``limit`` images are in hand. Class names come from ``batches.meta`` / ``meta`` when
    present.
    """
    folder, train_files, test_files, label_key, meta_file, names_key, mean, std, num_classes = _CIFAR[name]
    d = cifar_dir(root, name)
    images: List[np.ndarray] = []
    labels: List[np.ndarray] = []
    total = 0
    for fname in train_files if split == "train" else test_files:
        if limit is not None and total >= limit:
            break
        path = d / fname
        batch = safe_unpickle(path)
        if not isinstance(batch, dict):
            raise DataError(f"{path} is not a CIFAR batch (a {type(batch).__name__}, expected a dict)")
        data, lab = _get(batch, "data"), _get(batch, label_key)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DataError(f"{path}: 'data' must be a uint8 array (N, 3072), got {desc}")
        if lab is None:
            raise DataError(f"{path} has no '{label_key}'")
        lab = np.asarray(lab, dtype=np.int64).reshape(-1)
        if lab.shape[0] != data.shape[0]:
            raise DataError(f"{path} has {data.shape[0]} images but {lab.shape[0]} labels")
        if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
            raise DataError(f"{path}: labels must be in 0..{num_classes - 1}, got {lab.min()}..{lab.max()}")
        images.append(data)
        labels.append(lab)
        total += data.shape[0]
    data = np.concatenate(images)
    lab = np.concatenate(labels)
    if limit is not None:
        data, lab = data[:limit], lab[:limit]
    x = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32))
    x = resize_images(x, image_size) if image_size != 32 else x.clone()
    class_names = CIFAR10_CLASSES if name == "cifar10" else [str(i) for i in range(num_classes)]
    meta_path = d / meta_file
    if meta_path.is_file():
        meta = safe_unpickle(meta_path)
        names = _get(meta, names_key) if isinstance(meta, dict) else None
        if names is not None and len(names) == num_classes:
            class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return InMemoryDataset(x, torch.from_numpy(lab), num_classes=num_classes, mean=mean, std=std,
                           class_names=class_names)


# --------------------------------------------------------------------------------------------------------------------
# Folders of images
# --------------------------------------------------------------------------------------------------------------------


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


class _Scan:
    """The bounded walk of one folder tree (:func:`_iter_images`): regular image files only, every directory entered
    at most once (by device and inode, so a symlink to a parent, to itself or to a sibling cannot repeat or loop), and
    the directories in ``exclude`` (the test split inside a training root) never entered. ``ignored`` counts what was
    named like an image but is not a regular file (FIFO, socket, device or a link to one, a dangling link); ``repeats``
    the directories reached a second time through a link."""

    def __init__(self, exclude: Sequence[os.PathLike] = ()) -> None:
        self.seen: set = set()
        for d in exclude:
            key = _dir_key(Path(d))
            if key is not None:
                self.seen.add(key)
        self.ignored: List[str] = []
        self.repeats: List[str] = []

    def report(self, directory: Path) -> None:
        if self.ignored:
            log.warning("%s: ignoring %d entries named like images that are not regular files (FIFO, device, socket or "
                        "dangling link), e.g. %s", directory, len(self.ignored), self.ignored[0])
        if self.repeats:
            log.warning("%s: %d folders are reached a second time through a symlink (e.g. %s); each is read once",
                        directory, len(self.repeats), self.repeats[0])


def _dir_key(path: Path) -> Optional[Tuple[int, int]]:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _iter_images(directory: Path, scan: _Scan, recursive: bool = True):
    """Yield the image files under ``directory`` in sorted order (depth first, hidden entries skipped), lazily, so a
    caller that needs only the first one stops early. Never blocks on or reads anything: entries are classified by
    their directory-entry type (``stat`` for links) alone."""
    key = _dir_key(directory)
    if key is None or key in scan.seen:
        if key is not None:
            scan.repeats.append(str(directory))
        return
    scan.seen.add(key)
    subdirs = []
    for entry in _sorted_entries(directory):
        if entry.name.startswith("."):
            continue
        try:  # d_type answers without a system call, except for links (followed)
            is_dir = entry.is_dir()
            is_file = not is_dir and entry.is_file()  # a regular file: False for FIFO, socket, device
        except OSError:  # permission
            is_dir = is_file = False
        if is_dir:
            subdirs.append(Path(entry.path))
        elif _is_image(entry.name):
            if is_file:
                yield Path(entry.path)
            else:  # FIFO, socket, device, a link to one, or a dangling link
                scan.ignored.append(entry.path)
    if recursive:
        for sub in subdirs:
            yield from _iter_images(sub, scan, recursive)


def _sorted_entries(directory: Path) -> List[os.DirEntry]:
    try:
        return sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot list {directory}: {exc.strerror or _one_line(exc)}") from None


def _class_dirs(directory: Path, exclude: Sequence[os.PathLike] = ()) -> List[str]:
    """Sorted names of the sub-folders of ``directory`` that hold at least one image (the ImageFolder classes);
    ``exclude`` folders (and links to them) are not classes."""
    excluded = _Scan(exclude).seen
    # a class folder linking back to the root is not a way into other classes
    base = excluded | {_dir_key(directory)}
    names = []
    for entry in _sorted_entries(directory):
        path = Path(entry.path)
        key = _dir_key(path)
        if entry.name.startswith(".") or key is None or key in excluded:
            continue
        scan = _Scan()
        scan.seen = set(base)
        if next(_iter_images(path, scan), None) is not None:
            names.append(entry.name)
    return names


def find_test_dir(cfg: DataConfig, root: Path) -> Optional[Path]:
    """The test folder for ``data.root`` (``data.test_root``, else ``ROOT/val`` or ``ROOT/test``), or None."""
    if cfg.test_root:
        test = Path(cfg.test_root).expanduser()
        if not test.is_dir():
            raise DataError(f"data.test_root {test} does not exist or is not a directory")
        return test
    for sub in ("val", "test"):
        if (root / sub).is_dir():
            return root / sub
    return None


def _split_dir(cfg: DataConfig, split: str) -> Path:
    root = Path(cfg.root).expanduser()  # type: ignore[arg-type]
    if not root.is_dir():
        raise DataError(f"data.root {root} does not exist or is not a directory")
    if split == "train":
        return root / "train" if (root / "train").is_dir() else root
    test = find_test_dir(cfg, root)
    if test is None:
        raise DataError(f"no test images for data.root={root}: create {root}/val or {root}/test, or pass "
                        f"data.test_root=DIR")
    return test


def _train_exclude(cfg: DataConfig) -> List[Path]:
    """Folders the training split must not read: the test folder, wherever it is (``ROOT/val`` when the training
    images are ``ROOT`` itself, or a ``data.test_root`` inside the training tree). A test image is never trained on."""
    root = Path(cfg.root).expanduser()  # type: ignore[arg-type]
    test = find_test_dir(cfg, root) if root.is_dir() else None
    return [test] if test is not None else []


def folder_dataset(cfg: DataConfig, split: str, whole: bool = False) -> "FolderDataset":
    """The ``split`` of a folder dataset (see :class:`FolderDataset` for the layouts).

    Train: ``ROOT/train`` if present, else ``ROOT`` without its test folder. Test: ``data.test_root``, else
    ``ROOT/val`` or ``ROOT/test``. The test split takes its class indices from the train folder's classes, so labels
    agree between the splits.
    """
    if not cfg.root:
        raise ConfigError("data.root is required for data.dataset=folder")
    directory = _split_dir(cfg, split)
    exclude = _train_exclude(cfg)
    classes = None
    if split == "test":
        classes = _class_dirs(_split_dir(cfg, "train"), exclude) or None
        exclude = []
    return FolderDataset(directory, cfg.image_size, classes=classes, skip_corrupt=cfg.skip_corrupt, limit=cfg.limit,
                         exclude=exclude, max_pixels=cfg.max_pixels, whole=whole, max_aspect=cfg.max_aspect)


class FolderDataset(EncodedImageDataset):
    """Images on disk, decoded lazily: an ImageFolder layout (``DIR/<class>/.../*.jpg``) or a flat folder (unlabelled).

    * Layout: if sub-folders of ``directory`` hold images they are the classes (sorted names, label = position; files
      directly in ``directory`` are then ignored, with a warning); otherwise the images directly in ``directory`` are
      unlabelled (label ``-1``, ``num_classes`` None). ``classes`` fixes the class list (the train split's, for a test
      split); a folder class missing from it is a :class:`DataError`. ``exclude`` folders are never read (the test
      split, when it lies inside the training folder).
    * Files: extensions jpg, jpeg, png, bmp, gif, webp, tif, tiff (any case); regular files only (a FIFO, device or
      socket named like an image, or a link to one, is ignored with a warning); hidden files are skipped; every folder
      is read once however many links reach it (no cycles, no repeats); order is sorted, and ``limit`` keeps the
      first N.
    * Decoding: ``torchvision.io.decode_image`` (mode RGB: grayscale replicated, alpha dropped; first frame of an
      animated GIF) on the file's bytes; formats it does not read (BMP, TIFF) go through Pillow. An image above
      ``max_pixels`` is refused from its header, before it is decoded; 16-bit images are scaled to 8 bits. Then the
      short side is resized to ``image_size`` (antialiased) and the centre square cropped; with ``whole`` the image
      keeps its aspect instead (the long side cut, centred, to at most ``max_aspect`` short sides), so that
      pretraining's random-resized crops come from the whole image as torchvision's do (:func:`collate` pads a batch
      of such images into one canvas; :meth:`centre_square` gives the same files as centre squares).
    * Errors: an unreadable image raises a one-line ``DataError("cannot read image <path>: <reason>")``; with
      ``skip_corrupt`` the item is ``None`` instead, a warning names the file the first time it is skipped (logger
      ``selfsup.data``) and ``num_skipped`` counts it (per process: with DataLoader workers, :func:`collate`'s
      ``skipped`` is the reliable count, which the trainer sums).
    * Statistics: ImageNet's mean and std.
    """

    def __init__(self, directory: os.PathLike, image_size: int, *, classes: Optional[List[str]] = None,
                 skip_corrupt: bool = False, limit: Optional[int] = None, exclude: Sequence[os.PathLike] = (),
                 max_pixels: Optional[int] = DEFAULT_MAX_PIXELS, whole: bool = False, max_aspect: float = 3.0):
        directory = Path(directory)
        if not directory.is_dir():
            raise DataError(f"image folder {directory} does not exist or is not a directory")
        found = _class_dirs(directory, exclude)
        files: List[Path] = []
        labels: List[int] = []
        scan = _Scan(exclude)
        if found:
            class_list = list(classes) if classes else found
            index = {c: k for k, c in enumerate(class_list)}
            unknown = [c for c in found if c not in index]
            if unknown:
                raise DataError(f"{directory} has classes that the training folder does not: {', '.join(unknown[:5])}")
            # each class is walked on its own; the root and the other classes' folders count as seen, so a link into
            # another class (or back to the root) neither repeats images nor gives them a second label
            base = set(scan.seen) | {_dir_key(directory)}
            class_keys = {c: _dir_key(directory / c) for c in found}
            for c in found:
                scan.seen = base | {k for other, k in class_keys.items() if other != c}
                paths = list(_iter_images(directory / c, scan))
                files.extend(paths)
                labels.extend([index[c]] * len(paths))
            loose = list(_iter_images(directory, _Scan(), recursive=False))
            if loose:
                log.warning("%s: ignoring %d images outside the class folders", directory, len(loose))
            self.num_classes: Optional[int] = len(class_list)
            self.class_names: Optional[List[str]] = class_list
        else:
            files = list(_iter_images(directory, scan, recursive=False))
            labels = [-1] * len(files)
            self.num_classes = None
            self.class_names = None
        scan.report(directory)
        for d in exclude:
            if Path(d).is_dir():
                log.info("%s: %s is the test split and is not read for training", directory, d)
        if not files:
            raise DataError(f"no images in {directory} (looked for regular files named "
                            f"{', '.join('*' + e for e in IMAGE_EXTENSIONS)})")
        if limit is not None:
            files, labels = files[:limit], labels[:limit]
        self.directory = directory
        self.files = files
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self._label_list = labels
        self._setup(image_size, skip_corrupt, max_pixels, whole, max_aspect)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.has_masks = False

    def _read(self, i: int) -> Tuple[bytes, str]:
        return _read_regular_file(self.files[i]), str(self.files[i])
