"""``data.dataset=fashion_mnist``: Fashion-MNIST (Xiao et al. 2017) from its four IDX files, in memory.

Files a user supplies are never trusted: IDX headers and sizes are checked (:func:`read_idx`), so a truncated or
mislabelled file is a one-line :class:`~selfsup.errors.DataError` naming it. ``data.root`` overrides where the files are
looked for (:func:`fashion_mnist_dir`).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from selfsup.config import DataConfig
from selfsup.data.base import InMemoryDataset, resize_images
from selfsup.data.images import _one_line
from selfsup.data.registry import register_dataset
from selfsup.errors import DataError

# Per-channel statistics in [0, 1] space, used to normalise the views.
FASHION_MNIST_MEAN = (0.2860, 0.2860, 0.2860)
FASHION_MNIST_STD = (0.3530, 0.3530, 0.3530)

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]

FASHION_MNIST_ENV = "SELFSUP_FASHION_MNIST"
FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist/"  # Debian package dataset-fashion-mnist
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


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
                raise DataError(
                    f"{path}: unsupported IDX element type 0x{header[2]:02x} (expected 0x08, unsigned byte)")
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


@register_dataset("fashion_mnist")
def build(cfg: DataConfig, split: str, *, whole: bool = False) -> InMemoryDataset:
    """The ``split`` of Fashion-MNIST from ``data.root`` (else the default folders), resized to ``data.image_size``."""
    return load_fashion_mnist(cfg.root, split, cfg.image_size, cfg.limit)
