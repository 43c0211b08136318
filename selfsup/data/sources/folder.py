"""``data.dataset=folder``: images on disk, an ImageFolder layout (one sub-folder per class) or a flat folder of
unlabelled images, decoded lazily in ``__getitem__`` (:class:`FolderDataset`).

The short side is resized to ``data.image_size`` and the centre square kept; the views' dataset of pretraining keeps
each image whole instead with ``data.crop_from=whole``. A corrupt image is a one-line
:class:`~selfsup.errors.DataError` naming the file, or, with ``data.skip_corrupt=true``, an item of ``None`` that
:func:`~selfsup.data.base.collate` drops and counts. The folder's own settings: ``data.root`` (required, checked when
the dataset is built, so that a recipe whose data lives elsewhere still loads) and ``data.test_root``.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

from selfsup.config import DataConfig
from selfsup.data.base import IMAGENET_MEAN, IMAGENET_STD
from selfsup.data.images import DEFAULT_MAX_PIXELS, EncodedImageDataset, _one_line, _read_regular_file
from selfsup.data.registry import register_dataset
from selfsup.errors import ConfigError, DataError

log = logging.getLogger("selfsup.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


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


@register_dataset("folder")
def build(cfg: DataConfig, split: str, *, whole: bool = False) -> FolderDataset:
    """:func:`folder_dataset`; ``whole`` keeps each image whole (the views' dataset with ``data.crop_from=whole``)."""
    return folder_dataset(cfg, split, whole=whole)
