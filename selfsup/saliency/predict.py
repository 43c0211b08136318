"""Mask prediction with a fitted saliency network: maps of images in memory (:func:`predict_saliency`), and
``selfsup saliency predict`` (:func:`predict_cache`), which masks a whole dataset split into a mask cache that
pretraining reads (``views.mask_source=cache``)."""

from __future__ import annotations

import os
import time
from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from selfsup.config import Config
from selfsup.data.augment import normalize
from selfsup.data.datasets import build_dataset
from selfsup.engine.devices import device_for
from selfsup.saliency.cache import check_writable, create_cache
from selfsup.saliency.network import SaliencyNet, load_saliency_net

__all__ = ["predict_saliency", "predict_cache"]


@torch.no_grad()
def predict_saliency(net: SaliencyNet, images: Tensor, mean, std, batch_size: int = 256,
                     progress: bool = False, desc: str = "predict") -> Tensor:
    """Saliency probabilities ``(N, S, S)`` float of uint8 images ``(N, 3, S, S)`` (the network's own side)."""
    device = next(net.parameters()).device
    net.eval()
    out = []
    for i in tqdm(range(0, images.shape[0], batch_size), desc=desc, unit="batch", disable=not progress,
                  dynamic_ncols=True, leave=False):
        x = images[i:i + batch_size].float().div_(255.0).to(device)
        out.append(torch.sigmoid(net(normalize(x, mean, std))).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, *images.shape[-2:])


def predict_cache(cfg: Config, net_path: os.PathLike, out_dir: os.PathLike, split: str = "train",
                  progress: bool = True) -> Dict:
    """``selfsup saliency predict``: the fused network over every image of ``cfg.data``'s ``split``, binarised at
    ``saliency.threshold`` and stored at ``saliency.cache_size`` (default: the image side, at most 64) in a
    :class:`~selfsup.data.masks.MaskCache` under ``out_dir``. Unreadable images (``data.skip_corrupt``) get an empty
    mask, which is never applied (under 5 % foreground). Returns counts, images/s and the share of usable masks."""
    from torch.utils.data import DataLoader

    from selfsup.data.base import collate
    from selfsup.data.masks import dataset_fingerprint

    out_dir = check_writable(out_dir, split, "--out")  # before any work: a folder selfsup may write
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = device_for(cfg)
    net, meta = load_saliency_net(net_path, cfg)
    net.to(device)
    dataset = build_dataset(cfg.data, split)
    fingerprint = dataset_fingerprint(dataset, cfg.data.dataset, split)
    size = cfg.saliency.cache_size or min(dataset.image_size, 64)
    arr, finish = create_cache(out_dir, split, fingerprint, size)
    loader = DataLoader(dataset, batch_size=cfg.eval.batch_size, shuffle=False, num_workers=cfg.data.workers,
                        collate_fn=collate)
    t0 = time.perf_counter()
    try:
        done, skipped, usable = _predict_into(arr, loader, net, meta, size, cfg, device, split, progress)
    except BaseException:
        finish.abort()  # the new file goes; the current cache (if any) stays as it was
        raise
    cache = finish()
    seconds = time.perf_counter() - t0
    return {"images": done, "skipped": skipped, "images_per_s": done / max(seconds, 1e-9), "mask_size": size,
            "usable_fraction": usable / max(done, 1), "path": str(cache.path)}


def _predict_into(arr: np.ndarray, loader, net: SaliencyNet, meta: dict, size: int, cfg: Config,
                  device: torch.device, split: str, progress: bool) -> Tuple[int, int, int]:
    """Fill the cache array ``arr`` with the binarised predictions of every batch; returns the counts of images
    done, skipped (unreadable) and usable (enough foreground)."""
    side = meta["image_size"]
    done = skipped = usable = 0
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"saliency predict ({split})", unit="batch", disable=not progress,
                          dynamic_ncols=True):
            skipped += int(batch.get("skipped", 0))
            if batch["image"].shape[0] == 0:
                continue
            x = batch["image"].to(device).float().div_(255.0)
            if x.shape[-1] != side:
                x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
            p = torch.sigmoid(net(normalize(x, meta["mean"], meta["std"]))).unsqueeze(1)
            if p.shape[-1] != size:
                p = F.interpolate(p, size=(size, size), mode="bilinear", align_corners=False)
            m = (p[:, 0] >= cfg.saliency.threshold)
            usable += int((m.float().mean(dim=(1, 2)) >= cfg.views.mask_min_fraction).sum())
            arr[batch["index"].numpy()] = (m.to(torch.uint8) * 255).cpu().numpy()
            done += int(x.shape[0])
    return done, skipped, usable
