"""The dataset base classes every selfsup dataset builds on: :class:`ImageDataset`, :class:`InMemoryDataset`,
:func:`resize_images` and :func:`collate` (see :mod:`selfsup.data.datasets` for the item format, and
:mod:`selfsup.data.sources` for the concrete datasets). They live apart from the loaders so that every dataset module
can import them without importing the others."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from selfsup.errors import ConfigError

__all__ = ["ImageDataset", "InMemoryDataset", "collate", "pad_stack", "resize_images", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _triple(values: Sequence[float]) -> Tuple[float, float, float]:
    v = tuple(float(x) for x in values)
    if len(v) != 3:
        raise ConfigError(f"mean/std need 3 values (R, G, B), got {list(values)}")
    return v


class ImageDataset(Dataset):
    """Base class of every dataset: items are dicts (see the module docstring) of square uint8 RGB images.

    Attributes:
        num_classes: number of classes, or ``None`` when the images are unlabelled.
        class_names: a name per class, or ``None``.
        mean, std: per-channel normalisation statistics (3-tuples of floats in [0, 1] space).
        has_masks: whether items carry a ``mask``.
        image_size: the side ``S`` of every image.
        labels: int64 tensor ``(N,)`` of every label (``-1`` when unlabelled), known without decoding any image.
    """

    num_classes: Optional[int] = None
    class_names: Optional[List[str]] = None
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    has_masks: bool = False
    image_size: int = 0
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> Optional[Dict[str, Any]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitems__(self, indices: Sequence[int]) -> Sequence[Optional[Dict[str, Any]]]:
        """Batched fetch used by ``DataLoader`` (one call per batch); subclasses make it faster where they can."""
        return [self[int(i)] for i in indices]

    def _check_index(self, index: int) -> int:
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        return i

    def __repr__(self) -> str:
        classes = "unlabelled" if self.num_classes is None else f"{self.num_classes} classes"
        masks = ", masks" if self.has_masks else ""
        return f"{type(self).__name__}({len(self)} images, {self.image_size} px, {classes}{masks})"


class InMemoryDataset(ImageDataset):
    """A dataset held as one uint8 tensor ``images (N, 3, S, S)``, ``labels (N,)`` and optional ``masks (N, 1, S, S)``.

    Grayscale sources may pass an expanded view (``gray.expand(N, 3, S, S)``) so the three channels share memory; items
    and batches are still ordinary ``(3, S, S)`` images (stacking copies them).
    """

    def __init__(self, images: Tensor, labels: Tensor, *, num_classes: Optional[int], mean: Sequence[float],
                 std: Sequence[float], masks: Optional[Tensor] = None, class_names: Optional[List[str]] = None):
        if (images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3
                or images.shape[2] != images.shape[3]):
            raise ValueError(f"images must be uint8 (N, 3, S, S), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if masks is not None and (masks.dtype != torch.uint8 or masks.shape != (images.shape[0], 1, *images.shape[2:])):
            raise ValueError(f"masks must be uint8 (N, 1, S, S), got {masks.dtype} {tuple(masks.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.masks = masks
        self.has_masks = masks is not None
        self.num_classes = num_classes
        self.class_names = class_names
        self.mean = _triple(mean)
        self.std = _triple(std)
        self.image_size = int(images.shape[-1])
        self._label_list: List[int] = self.labels.tolist()  # python ints: no tensor op per item

    def __getitem__(self, index: int) -> Dict[str, Any]:
        i = self._check_index(index)
        item = {"image": self.images[i], "label": self._label_list[i], "index": i}
        if self.masks is not None:
            item["mask"] = self.masks[i]
        return item

    def __getitems__(self, indices: Sequence[int]) -> List[Dict[str, Any]]:
        """One gather for the whole batch (``index_select``), then cheap per-item views of it."""
        n = len(self)
        idx = torch.as_tensor(list(indices), dtype=torch.int64)
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(f"indices out of range for a dataset of {n} images")
        idx = torch.where(idx < 0, idx + n, idx)
        images = self.images.index_select(0, idx).unbind(0)
        masks = self.masks.index_select(0, idx).unbind(0) if self.masks is not None else None
        items = []
        for k, i in enumerate(idx.tolist()):
            item = {"image": images[k], "label": self._label_list[i], "index": i}
            if masks is not None:
                item["mask"] = masks[k]
            items.append(item)
        return items


def resize_images(images: Tensor, size: int, chunk: int = 4096) -> Tensor:
    """Resize a uint8 batch ``(N, C, H, W)`` to ``(N, C, size, size)`` with antialiasing, in chunks (bounded memory)."""
    from torchvision.transforms.v2 import functional as TF

    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty(images.shape[0], images.shape[1], size, size, dtype=torch.uint8)
    for a in range(0, images.shape[0], chunk):
        out[a:a + chunk] = TF.resize(images[a:a + chunk], [size, size], antialias=True)
    return out


def collate(items: Sequence[Optional[Dict[str, Any]]]) -> Dict[str, Any]:
    """Stack dataset items into a batch; ``None`` items (skipped corrupt images) are dropped and counted.

    Returns ``image (B, 3, H, W) uint8``, ``size (B, 2) int64`` (each image's own h, w), ``label (B,) int64``,
    ``index (B,) int64``, ``mask (B, 1, H, W) uint8`` or ``None`` when the items have no mask, and ``skipped`` (int).
    Images of one size are stacked; differently shaped ones (whole-image folder data) go top-left into a canvas of
    the largest h and w, whose padding repeats each image's last row and column (so that bilinear sampling up to the
    image's edge, as :func:`selfsup.data.augment.crop_resize` does, never blends in padding) and is otherwise zero.
    If every item was skipped the batch is empty (``image`` has shape ``(0, 3, 0, 0)``).
    """
    kept = [it for it in items if it is not None]
    skipped = len(items) - len(kept)
    if any("encoded" in it for it in kept):  # still-encoded JPEGs: the device decodes them (decode_on_device)
        return {"items": kept, "label": torch.tensor([int(it["label"]) for it in kept], dtype=torch.int64),
                "index": torch.tensor([int(it["index"]) for it in kept], dtype=torch.int64), "mask": None,
                "skipped": skipped}
    if not kept:
        return {"image": torch.empty(0, 3, 0, 0, dtype=torch.uint8), "size": torch.empty(0, 2, dtype=torch.int64),
                "label": torch.empty(0, dtype=torch.int64), "index": torch.empty(0, dtype=torch.int64), "mask": None,
                "skipped": skipped}
    has_mask = all(it.get("mask") is not None for it in kept)
    images = [it["image"] for it in kept]
    sizes = torch.tensor([tuple(im.shape[-2:]) for im in images], dtype=torch.int64)
    return {
        "image": pad_stack(images),
        "size": sizes,
        "label": torch.tensor([int(it["label"]) for it in kept], dtype=torch.int64),
        "index": torch.tensor([int(it["index"]) for it in kept], dtype=torch.int64),
        "mask": pad_stack([it["mask"] for it in kept]) if has_mask else None,
        "skipped": skipped,
    }


def pad_stack(images: Sequence[Tensor]) -> Tensor:
    """``(B, C, H, W)`` of ``(C, h_i, w_i)`` tensors: ``torch.stack`` when they share a size, else top-left in a canvas
    of the largest sides with one repeated edge row and column (see :func:`collate`)."""
    first = images[0].shape
    if all(im.shape == first for im in images):
        return torch.stack(list(images))
    H = max(im.shape[-2] for im in images)
    W = max(im.shape[-1] for im in images)
    out = images[0].new_zeros((len(images), first[0], H, W))
    for i, im in enumerate(images):
        h, w = im.shape[-2:]
        out[i, :, :h, :w] = im
        if w < W:
            out[i, :, :h, w] = im[:, :, -1]
        if h < H:
            out[i, :, h, :min(w + 1, W)] = out[i, :, h - 1, :min(w + 1, W)]
    return out
