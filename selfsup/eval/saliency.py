"""Showing and scoring saliency masks (``selfsup saliency show | score``): the maps of every requested source (the
handcrafted methods, a fitted network, a mask cache) on the same images, the scikit-image photos as images, and the
F-beta / MAE / IoU scores against ground truth (:mod:`selfsup.metrics.saliency`)."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.config import Config
from selfsup.errors import ConfigError

def method_list(text: Optional[str]) -> List[str]:
    """``--methods``: comma-separated handcrafted methods, each checked (one ConfigError line naming the option)."""
    from selfsup.data.saliency import handcrafted

    names = [m.strip() for m in (text or "").split(",") if m.strip()]
    for m in names:
        try:
            handcrafted(m)
        except ValueError as exc:
            raise ConfigError(f"--methods: {exc}") from None
    return names


def handcrafted_maps(images: torch.Tensor, method: str, workers: int) -> Tuple[torch.Tensor, float]:
    """``method``'s maps ``(N, S, S)`` in [0, 1] of uint8 ``images`` ``(N, 3, S, S)``, and its images per second."""
    from selfsup.data.saliency import saliency_maps

    maps, ips = saliency_maps(images.numpy(), method, workers=workers)
    return torch.from_numpy(maps).float() / 255.0, ips


def network_maps(net_path: str, cfg: Config, images: torch.Tensor, progress: bool) -> torch.Tensor:
    """A fitted saliency network's maps of ``images``, predicted at its own input size and resized back."""
    from selfsup.engine.saliency import load_saliency_net, predict_saliency

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
    from selfsup.engine.saliency import dataset_images_masks

    return torch.from_numpy(dataset_images_masks(dataset, indices, dataset.image_size)).float() / 255.0


def score_maps(maps: Dict[str, torch.Tensor], dataset, indices: np.ndarray) -> Dict[str, Dict[str, float]]:
    """Each source's F-beta (beta^2 = 0.3), max F-beta, MAE and IoU against the ground-truth masks."""
    from selfsup.engine.saliency import dataset_images_masks
    from selfsup.metrics.saliency import saliency_scores

    gt = dataset_images_masks(dataset, indices, dataset.image_size)
    return {name: saliency_scores((m.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), gt)
            for name, m in maps.items()}
