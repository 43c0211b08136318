"""Foreground masks for RELICv2's background masking (method-details A4): where they come from and how they are stored.

**Sources** (``views.mask_source``; :class:`MaskProvider` gives the masks of a batch):

* ``dataset``: the dataset's own masks (the built-in data's ground truth);
* ``cache``: a saliency mask cache written by ``selfsup saliency predict`` (:class:`MaskCache`), read by the batch's
  dataset indices, so it works for every dataset selfsup reads;
* the random ablations of RELICv2 Table 16, drawn afresh for every step from a seeded generator, each covering
  ``views.mask_area`` (a_p) of the image: ``random_pixels`` (each pixel foreground with probability a_p),
  ``random_rect`` (a rectangle of area a_p, aspect log-uniform in [3/4, 4/3], uniformly placed inside the image) and
  ``center_rect`` (the same rectangle, centred).

**Corruptions** (``views.mask_edit``; Table 17 and the bounding-box ablation) of dataset or cache masks: ``add_center``
and ``remove_center`` add or cut a centred square whose area is ``views.mask_edit_fraction`` (m_p) of the mask's own
area; ``bbox`` replaces the mask by its bounding box (pixels >= 0.5).

**Cache.** ``<dir>/<split>.json`` (the file a reader looks up first) holds the dataset's fingerprint
(:func:`dataset_fingerprint`: dataset kind, split, size, image side, a hash of its labels and of 16 evenly spaced
images), the stored mask side and the name of the array file, ``<split>.<token>.npy``: uint8 masks ``(N, s, s)``
(255 = foreground) as a NumPy file opened memory-mapped, so pretraining reads only the rows of its batch. (A cache of
an older selfsup, whose JSON names no array, uses ``<split>.npy``.) Opening a cache against a dataset whose fingerprint
differs is an error, never silently wrong masks; a fingerprint of the wrong shape or with a field of the wrong type is
one line naming the file and the field. Masks are stored at ``s`` (at most the image side) and resized bilinearly to the
image side on the device.

This module reads a cache; :mod:`selfsup.saliency.cache` writes one (and replaces an old one kill-safely).

**Whole-image crops** (folder data with ``data.crop_from=whole``: differently shaped images in a padded canvas). A
cache's mask was computed on the image's centre square (``saliency predict`` reads centre squares, as evaluation does),
so it is placed there, and the rest of the image counts as background (our choice: the salient object of a photo is
rarely outside its centre square, and an unknown region shown as gray is the safe side of the ablation). The random
ablations are drawn on a square and stretched (nearest) over each whole image, so they keep their area fraction and
centring. :func:`place_masks` does either for the whole batch in one ``grid_sample``.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import ConfigError, DataError

__all__ = ["random_masks", "edit_masks", "resize_masks", "place_masks", "dataset_fingerprint", "MaskCache",
           "MaskProvider", "FORMAT"]

_FINGERPRINT_IMAGES = 16


def _rect_masks(n: int, size: int, area: float, centred: bool, g: torch.Generator) -> Tensor:
    log_r = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)
    ratio = torch.exp(log_r)
    w = torch.sqrt(area * ratio).clamp(max=1.0) * size
    h = torch.sqrt(area / ratio).clamp(max=1.0) * size
    if centred:
        x0, y0 = (size - w) / 2, (size - h) / 2
    else:
        x0 = torch.rand(n, generator=g) * (size - w)
        y0 = torch.rand(n, generator=g) * (size - h)
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    inside_x = (coords[None] >= x0[:, None]) & (coords[None] < (x0 + w)[:, None])
    inside_y = (coords[None] >= y0[:, None]) & (coords[None] < (y0 + h)[:, None])
    return (inside_y[:, :, None] & inside_x[:, None, :]).unsqueeze(1)


def random_masks(kind: str, n: int, size: int, area: float, generator: torch.Generator) -> Tensor:
    """``n`` masks ``uint8 (n, 1, size, size)`` (0 or 255) of the Table-16 ablation ``kind`` covering ``area``."""
    if kind == "random_pixels":
        m = torch.rand(n, 1, size, size, generator=generator) < area
    elif kind in ("random_rect", "center_rect"):
        m = _rect_masks(n, size, area, kind == "center_rect", generator)
    else:
        raise ValueError(f"unknown random mask kind {kind!r}")
    return m.to(torch.uint8) * 255


def resize_masks(masks: Tensor, size: int) -> Tensor:
    """uint8 masks ``(B, 1, h, w)`` resized to ``size x size`` bilinearly (no antialiasing: a mask's edge stays an
    edge), rounded back to uint8; returned as they are when they already have the size."""
    if tuple(masks.shape[-2:]) == (size, size):
        return masks
    m = F.interpolate(masks.float(), size=(size, size), mode="bilinear", align_corners=False)
    return m.round_().clamp_(0, 255).to(torch.uint8)


def place_masks(masks: Tensor, sizes: Tensor, canvas: Tuple[int, int], region: str, mode: str = "bilinear") -> Tensor:
    """Square masks ``(B, 1, s, s)`` (uint8) placed into a ``canvas`` = (H, W) of images whose own sizes are ``sizes``
    ``(B, 2)`` = (h, w), top-left as :func:`selfsup.data.base.collate` puts them: ``region`` "centre" puts each mask
    on its image's centre square (side ``min(h, w)``), "whole" stretches it over the whole image. Zero elsewhere;
    uint8 ``(B, 1, H, W)`` on the masks' device."""
    B = masks.shape[0]
    H, W = canvas
    sz = sizes.to(torch.float32)
    h, w = sz[:, 0], sz[:, 1]
    if region == "centre":
        side = torch.minimum(h, w)
        rh, rw, oy, ox = side, side, (h - side) / 2, (w - side) / 2
    elif region == "whole":
        rh, rw, oy, ox = h, w, torch.zeros_like(h), torch.zeros_like(w)
    else:
        raise ValueError(f"region must be 'centre' or 'whole', got {region!r}")
    # canvas coordinate X (normalised over W, align_corners=False) -> mask coordinate (normalised over the region)
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = W / rw, (W - 2 * ox) / rw - 1
    theta[:, 1, 1], theta[:, 1, 2] = H / rh, (H - 2 * oy) / rh - 1
    grid = F.affine_grid(theta.to(masks.device), [B, 1, H, W], align_corners=False)
    out = F.grid_sample(masks.float(), grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def edit_masks(masks: Tensor, kind: str, fraction: float) -> Tensor:
    """Table 17's corruptions and the bounding box, on uint8 masks ``(B, 1, H, W)``; returns uint8."""
    if kind == "none":
        return masks
    fg = masks >= 128
    b, _, h, w = masks.shape
    if kind == "bbox":
        rows = fg.any(dim=3).squeeze(1)  # (B, H)
        cols = fg.any(dim=2).squeeze(1)  # (B, W)
        r = torch.arange(h, device=masks.device)
        c = torch.arange(w, device=masks.device)
        big = torch.iinfo(torch.int64).max
        r0 = torch.where(rows, r, big).min(1).values
        r1 = torch.where(rows, r, -1).max(1).values
        c0 = torch.where(cols, c, big).min(1).values
        c1 = torch.where(cols, c, -1).max(1).values
        in_r = (r[None] >= r0[:, None]) & (r[None] <= r1[:, None])
        in_c = (c[None] >= c0[:, None]) & (c[None] <= c1[:, None])
        return ((in_r[:, :, None] & in_c[:, None, :]).unsqueeze(1)).to(torch.uint8) * 255
    if kind not in ("add_center", "remove_center"):
        raise ValueError(f"unknown mask edit {kind!r}")
    side = torch.sqrt(fg.flatten(1).sum(1).float() * fraction)  # (B,) the square's side in pixels
    y = torch.arange(h, device=masks.device, dtype=torch.float32) + 0.5 - h / 2
    x = torch.arange(w, device=masks.device, dtype=torch.float32) + 0.5 - w / 2
    square = ((y.abs()[None, :, None] < side[:, None, None] / 2) & (x.abs()[None, None, :] < side[:, None, None] / 2))
    square = square.unsqueeze(1)
    out = masks.clone()
    if kind == "add_center":
        out[square] = 255
    else:
        out[square] = 0
    return out


def _hash_tensor(h: "hashlib._Hash", t: Tensor) -> None:
    h.update(str(tuple(t.shape)).encode())
    h.update(t.contiguous().numpy().tobytes())


def dataset_fingerprint(dataset: Any, kind: str, split: str) -> Dict[str, Any]:
    """What identifies a dataset's images for a mask cache: kind, split, size, side, and a SHA-256 of the labels and of
    16 evenly spaced images (decoded as the dataset returns them)."""
    if hasattr(dataset, "centre_square"):  # whole-image folder data: masks belong to the centre squares
        dataset = dataset.centre_square()
    n = len(dataset)
    h = hashlib.sha256()
    _hash_tensor(h, dataset.labels.cpu())
    for i in sorted(set(np.linspace(0, n - 1, min(n, _FINGERPRINT_IMAGES)).round().astype(int).tolist())) if n else []:
        item = dataset[i]
        if item is not None:
            _hash_tensor(h, item["image"].cpu())
    return {"dataset": kind, "split": split, "size": n, "image_size": int(dataset.image_size), "sha256": h.hexdigest()}


FORMAT = "selfsup-mask-cache-1"
_ARRAY_NAME = re.compile(r"^(?P<split>[A-Za-z0-9_-]+)(\.[0-9a-f]{8,64})?\.npy$")


def _array_name_ok(name: str, split: str) -> bool:
    """Whether ``name`` is a plain file name of an array a cache writer makes for ``split`` (no folder part)."""
    m = _ARRAY_NAME.match(name)
    return m is not None and m.group("split") == split


class MaskCache:
    """A memory-mapped uint8 mask array ``(N, s, s)`` for one split of one dataset (see the module docstring)."""

    def __init__(self, masks: np.ndarray, fingerprint: Dict[str, Any], path: Path):
        self.masks = masks
        self.fingerprint = fingerprint
        self.path = path

    @staticmethod
    def paths(directory: str | os.PathLike, split: str):
        """``(legacy array, metadata)``: ``<split>.npy`` (the array of an older cache whose JSON names none) and
        ``<split>.json``, the file a reader looks up first."""
        d = Path(directory)
        return d / f"{split}.npy", d / f"{split}.json"

    @staticmethod
    def read_record(meta: Path, split: str) -> Tuple[Dict[str, Any], Path]:
        """The fingerprint stored in ``meta`` (checked field by field) and the array file it names; one
        :class:`DataError` line naming the file and the field otherwise."""
        from selfsup.metafiles import Fields, read_json

        record = read_json(meta, "mask cache fingerprint")
        f = Fields(record, meta, "mask cache fingerprint")
        if f.has("format") and f.string("format") != FORMAT:
            raise f.error("format", f"is {record['format']!r}, not {FORMAT!r}: not a selfsup mask cache")
        f.string("dataset")
        f.string("split")
        f.integer("size", lo=0)
        f.integer("image_size", lo=1)
        f.string("sha256")
        f.integer("mask_size", None, lo=1)
        name = f.string("array", f"{split}.npy")
        if not _array_name_ok(name, split):
            raise f.error("array", f"must name a {split}.<token>.npy file in the cache's own folder, not {name!r}")
        return record, meta.parent / name

    @classmethod
    def open(cls, directory: str | os.PathLike, split: str, expect: Optional[Dict[str, Any]] = None) -> "MaskCache":
        """Open ``<directory>/<split>``; with ``expect`` (a :func:`dataset_fingerprint`) a mismatch is a DataError."""
        _, meta = cls.paths(directory, split)
        if not meta.is_file():
            raise DataError(f"no mask cache for split '{split}' in {directory} (expected {meta.name}; "
                            "write it with `selfsup saliency predict`)")
        for attempt in (0, 1):
            record, npy = cls.read_record(meta, split)
            if npy.is_file() or attempt:
                break  # else a writer may have just replaced the cache: read its new JSON once more
        if not npy.is_file():
            raise DataError(f"mask cache {meta}: its array {npy.name} is missing (rerun `selfsup saliency predict`)")
        try:
            masks = np.load(npy, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise DataError(f"unreadable mask cache {npy}: {reason}") from None
        side = record.get("mask_size")
        if (not isinstance(masks, np.ndarray) or masks.dtype != np.uint8 or masks.ndim != 3
                or masks.shape[0] != record["size"] or masks.shape[1] != masks.shape[2]
                or (side is not None and masks.shape[1] != side)):
            raise DataError(f"mask cache {npy} holds {getattr(masks, 'dtype', '?')} {getattr(masks, 'shape', '?')}, "
                            f"not uint8 masks of side {side if side is not None else 's'} for {record['size']} images "
                            f"as {meta.name} says")
        if expect is not None:
            diff = [k for k in ("dataset", "split", "size", "image_size", "sha256") if record.get(k) != expect.get(k)]
            if diff:
                detail = ", ".join(f"{k}: cache {record.get(k)!r} vs data {expect.get(k)!r}"
                                   for k in diff if k != "sha256")
                raise DataError(f"stale mask cache {npy}: it was made for other images "
                                f"({detail or 'image content differs'}); rerun `selfsup saliency predict` on this data")
        return cls(masks, record, npy)

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def get(self, index: Tensor, size: int, device: torch.device) -> Tensor:
        """The masks of dataset indices ``index`` as uint8 ``(B, 1, size, size)`` on ``device``."""
        idx = index.cpu().numpy()
        m = torch.from_numpy(np.ascontiguousarray(self.masks[idx])).unsqueeze(1).to(device, non_blocking=True)
        return resize_masks(m, size)


class MaskProvider:
    """The masks a training step uses (``views.mask_source`` and ``views.mask_edit``; see the module docstring).

    ``provider(batch, images, generator, global_batch, rows)`` returns uint8 ``(B, 1, S, S)`` on the images' device, or
    None when no maskable view can be masked (``views.mask_p`` = 0 or no maskable view group), which costs nothing.
    Random masks are drawn for the whole ``global_batch`` of the step and ``rows`` (this process's slice) kept, so a
    DDP run draws the same masks as one process.
    """

    def __init__(self, views_cfg: Any, dataset: Any, data_kind: str, split: str = "train"):
        v = views_cfg
        self.cfg = v
        maskable = (v.large.maskable and v.large.count > 0) or (v.small.maskable and v.small.count > 0)
        self.active = v.mask_p > 0 and maskable
        self.cache: Optional[MaskCache] = None
        self.image_size = int(getattr(dataset, "image_size", 0))
        if not self.active:
            return
        if v.mask_source == "dataset" and not getattr(dataset, "has_masks", False):
            raise ConfigError(f"views.mask_p={v.mask_p} asks for background masking, but data.dataset={data_kind} "
                              "has no foreground masks: set views.mask_p=0 (no masking), compute saliency masks "
                              "(`selfsup saliency fit`, then `selfsup saliency predict`) and set "
                              "views.mask_source=cache views.mask_cache=DIR, or use a random ablation "
                              "(views.mask_source=random_rect)")
        if v.mask_source == "cache":
            if not v.mask_cache:
                raise ConfigError(f"views.mask_p={v.mask_p} with views.mask_source=cache needs views.mask_cache=DIR, "
                                  "a cache written by `selfsup saliency predict` (or views.mask_p=0: no masking)")
            self.cache = MaskCache.open(v.mask_cache, split, dataset_fingerprint(dataset, data_kind, split))

    def __call__(self, batch: Dict[str, Any], images: Tensor, generator: torch.Generator,
                 global_batch: Optional[int] = None, rows: Optional[slice] = None) -> Optional[Tensor]:
        if not self.active:
            return None
        v = self.cfg
        b, H, W = images.shape[0], images.shape[-2], images.shape[-1]
        sizes = batch.get("size")
        square = sizes is None or (H == W and bool((sizes == torch.tensor([H, W])).all()))  # every image S x S
        side = H if square else int(self.image_size)
        if v.mask_source == "dataset":
            masks = edit_masks(batch["mask"].to(images.device, non_blocking=True), v.mask_edit, v.mask_edit_fraction)
        elif v.mask_source == "cache":
            assert self.cache is not None
            masks = edit_masks(self.cache.get(batch["index"], side, images.device), v.mask_edit, v.mask_edit_fraction)
            if not square:
                assert sizes is not None  # square otherwise
                masks = place_masks(masks, sizes, (H, W), "centre")
        else:
            drawn = random_masks(v.mask_source, global_batch or b, side, v.mask_area, generator)
            masks = drawn[rows if rows is not None else slice(0, b)].to(images.device)
            if not square:
                assert sizes is not None  # square otherwise
                masks = place_masks(masks, sizes, (H, W), "whole", mode="nearest")
        return masks
