"""Showing and scoring saliency masks (``selfsup saliency show | score``): the maps of every requested source (the
handcrafted methods, a fitted network, a mask cache) on the same images, the scikit-image photos as images, and the
F-beta / MAE / IoU scores against ground truth (:mod:`selfsup.saliency.scores`).

:func:`show_maps` and :func:`score_sources` are the two commands' work; the command line draws the grid
(:func:`selfsup.eval.plots.plot_saliency_grid`) and prints the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.config import Config
from selfsup.errors import ConfigError

__all__ = ["Sources", "method_list", "handcrafted_maps", "network_maps", "cache_maps", "photo_images",
           "ground_truth_maps", "score_maps", "source_maps", "show_maps", "score_sources"]


@dataclass(frozen=True)
class Sources:
    """What ``saliency show | score`` draws or scores on ``split``: the handcrafted ``methods`` (``--methods``, comma
    separated), a fitted network (``--net``, a ``saliency fit`` folder) and a mask cache (``--cache``)."""

    methods: Optional[str] = None
    net: Optional[str] = None
    cache: Optional[str] = None
    split: str = "test"

    def empty(self) -> bool:
        """Whether no source is asked for (nothing to show or score)."""
        return not (self.methods or self.net or self.cache)


def method_list(text: Optional[str]) -> List[str]:
    """``--methods``: comma-separated handcrafted methods, each checked (one ConfigError line naming the option)."""
    from selfsup.saliency.handcrafted import handcrafted

    names = [m.strip() for m in (text or "").split(",") if m.strip()]
    for m in names:
        try:
            handcrafted(m)
        except ValueError as exc:
            raise ConfigError(f"--methods: {exc}") from None
    return names


def handcrafted_maps(images: torch.Tensor, method: str, workers: Optional[int]) -> Tuple[torch.Tensor, float]:
    """``method``'s maps ``(N, S, S)`` in [0, 1] of uint8 ``images`` ``(N, 3, S, S)``, and its images per second."""
    from selfsup.saliency.handcrafted import saliency_maps

    maps, ips = saliency_maps(images.numpy(), method, workers=workers)
    return torch.from_numpy(maps).float() / 255.0, ips


def network_maps(net_path: str, cfg: Config, images: torch.Tensor, progress: bool) -> torch.Tensor:
    """A fitted saliency network's maps of ``images``, predicted at its own input size and resized back."""
    from selfsup.saliency.network import load_saliency_net
    from selfsup.saliency.predict import predict_saliency

    net, meta = load_saliency_net(net_path, cfg)
    x = images
    side = meta["image_size"]
    if x.shape[-1] != side:
        x = F.interpolate(x.float(), size=(side, side), mode="bilinear", antialias=True,
                          align_corners=False).round().clamp(0, 255).to(torch.uint8)
    p = predict_saliency(net, x, meta["mean"], meta["std"], progress=progress)
    if p.shape[-1] != images.shape[-1]:
        p = F.interpolate(p.unsqueeze(1), size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return p


def cache_maps(cache_dir: str, split: str, cfg: Config, dataset, indices: np.ndarray, size: int) -> torch.Tensor:
    """The masks a cache (``saliency predict``) holds for ``indices`` of ``dataset``, checked to be made for it."""
    from selfsup.data.masks import MaskCache, dataset_fingerprint

    if dataset is None:
        raise ConfigError("--cache needs the dataset it was made for, not --photos")
    cache = MaskCache.open(cache_dir, split, dataset_fingerprint(dataset, cfg.data.dataset, split))
    return cache.get(torch.as_tensor(indices), size, torch.device("cpu"))[:, 0].float() / 255


def photo_images(count: int, size: int) -> torch.Tensor:
    """The first ``count`` scikit-image photos bundled with the built-in data, centre-cropped square and resized to
    ``size``: uint8 ``(N, 3, size, size)``."""
    from selfsup.data.shapes import PHOTO_NAMES, _photo_arrays

    photos = []
    for name, a in zip(PHOTO_NAMES, _photo_arrays()):
        t = torch.from_numpy(a).permute(2, 0, 1).float().unsqueeze(0)
        side = min(t.shape[-2:])
        top, left = (t.shape[-2] - side) // 2, (t.shape[-1] - side) // 2
        t = t[..., top:top + side, left:left + side]
        photos.append(F.interpolate(t, size=(size, size), mode="bilinear", antialias=True,
                                    align_corners=False).round().clamp(0, 255).to(torch.uint8)[0])
    return torch.stack(photos[:count])


def ground_truth_maps(dataset, indices: np.ndarray) -> torch.Tensor:
    """The dataset's ground-truth masks of ``indices`` as maps in [0, 1]."""
    from selfsup.saliency.images import dataset_images_masks

    return torch.from_numpy(dataset_images_masks(dataset, indices, dataset.image_size)).float() / 255.0


def score_maps(maps: Dict[str, torch.Tensor], dataset, indices: np.ndarray) -> Dict[str, Dict[str, float]]:
    """Each source's F-beta (beta^2 = 0.3), max F-beta, MAE and IoU against the ground-truth masks."""
    from selfsup.saliency.images import dataset_images_masks
    from selfsup.saliency.scores import saliency_scores

    gt = dataset_images_masks(dataset, indices, dataset.image_size)
    return {name: saliency_scores((m.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), gt)
            for name, m in maps.items()}


def source_maps(sources: Sources, cfg: Config, dataset, indices: np.ndarray, images: torch.Tensor, progress: bool,
                log_fn: Callable[[str], None] = print) -> Dict[str, torch.Tensor]:
    """Every requested source's maps ``(N, S, S)`` in [0, 1] for ``images`` (uint8 ``(N, 3, S, S)``; ``dataset`` is
    None for the photos, which no cache was made for)."""
    out: Dict[str, torch.Tensor] = {}
    for m in method_list(sources.methods):
        out[m], ips = handcrafted_maps(images, m, cfg.saliency.workers)
        log_fn(f"{m}: {len(images)} maps at {ips:.1f} images/s")
    if sources.net:
        out["network"] = network_maps(sources.net, cfg, images, progress=progress)
    if sources.cache:
        out["cache"] = cache_maps(sources.cache, sources.split, cfg, dataset, indices, images.shape[-1])
    return out


def _dataset_images(cfg: Config, split: str, count: int, option: str):
    """The dataset of ``split`` and its first ``count`` images (``option`` names the count in the error)."""
    from selfsup.data.datasets import build_dataset
    from selfsup.saliency.images import dataset_images

    dataset = build_dataset(cfg.data, split)
    if count < 1:
        raise ConfigError(f"--{option} must be >= 1, got {count}")
    indices = np.arange(min(count, len(dataset)))
    return dataset, indices, dataset_images(dataset, indices, dataset.image_size)


def show_maps(sources: Sources, cfg: Config, count: int, photos: bool = False, size: int = 128, progress: bool = True,
              log_fn: Callable[[str], None] = print) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], str]:
    """``saliency show``: the first ``count`` images of ``sources.split`` (or of the scikit-image photos at side
    ``size``), every source's maps of them (the ground truth first, when the data has it) and the grid's title."""
    if photos:
        images = photo_images(count, size)
        maps = source_maps(sources, cfg, None, np.arange(len(images)), images, progress, log_fn)
        return images, maps, "saliency on the scikit-image photos"
    dataset, indices, images = _dataset_images(cfg, sources.split, count, "images")
    maps = source_maps(sources, cfg, dataset, indices, images, progress, log_fn)
    if getattr(dataset, "has_masks", False):
        maps = {"ground truth": ground_truth_maps(dataset, indices), **maps}
    return images, maps, f"saliency on {cfg.data.dataset} ({sources.split})"


def score_sources(sources: Sources, cfg: Config, limit: int, progress: bool = True,
                  log_fn: Callable[[str], None] = print) -> Dict:
    """``saliency score``: every source's scores (:func:`score_maps`) on the first ``limit`` images of
    ``sources.split``, as ``{"images", "split", "scores"}`` (what ``--out`` writes)."""
    dataset, indices, images = _dataset_images(cfg, sources.split, limit, "limit")
    maps = source_maps(sources, cfg, dataset, indices, images, progress, log_fn)
    if not getattr(dataset, "has_masks", False):
        raise ConfigError(f"saliency score needs ground-truth masks; data.dataset={cfg.data.dataset} has none")
    return {"images": int(len(indices)), "split": sources.split, "scores": score_maps(maps, dataset, indices)}
