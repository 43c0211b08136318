"""``data.dataset=cifar10`` / ``cifar100``: CIFAR-10 and CIFAR-100 (fine labels) from the python-pickle batches, in
memory.

Files a user supplies are never trusted: the pickles are read with an unpickler that only builds numpy arrays
(:class:`RestrictedUnpickler`), so a malicious file cannot run code, and every batch's shapes, types and labels are
checked. ``data.root`` is required; it is checked when the dataset is built, so that a recipe whose data lives
elsewhere still loads.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np
import torch

from selfsup.config import DataConfig
from selfsup.data.base import InMemoryDataset, resize_images
from selfsup.data.images import _one_line
from selfsup.data.registry import register_dataset
from selfsup.errors import ConfigError, DataError

# Per-channel statistics in [0, 1] space, used to normalise the views.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)  # the per-pixel std over the training set (not the often-quoted 0.2023, ...)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


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


@register_dataset("cifar10")
@register_dataset("cifar100")
def build(cfg: DataConfig, split: str, *, whole: bool = False) -> InMemoryDataset:
    """The ``split`` of ``data.dataset`` (cifar10 or cifar100) from ``data.root``, resized to ``data.image_size``."""
    if not cfg.root:
        raise ConfigError(f"data.root is required for data.dataset={cfg.dataset}")
    return load_cifar(cfg.root, cfg.dataset, split, cfg.image_size, cfg.limit)
