"""The saliency network: a selfsup-pretrained encoder with a light decoder (RELICv2 Appendix B.2.1), and its file.

DeepUSPS uses a DRN segmentation network (a 1x1 conv to two classes on the last map, then x8 bilinear upsampling);
RELICv2 replaces its supervised Cityscapes weights with a self-supervised encoder. Our small encoders reduce 8-16x, so a
single-map 1x1 head gives blobby masks; the decoder here is the lightest multi-scale one: a 1x1 lateral conv per
resolution of :meth:`~selfsup.models.base.Backbone.forward_maps`, all upsampled (bilinear) to the finest and
summed, one conv3x3-BN-ReLU, a 1x1 conv to one logit, and bilinear upsampling to the input. One sigmoid logit is the
two-class softmax of DeepUSPS with the background logit fixed at 0 (the same family of maps).

A fitted network is stored as ``saliency_net.safetensors`` (:data:`NET_FILE`): the state dict, and in the metadata
the format (:data:`NET_FORMAT`), the image side, the mean and std of the images it was fitted on, and the fit's config
(which rebuilds the encoder when the network is loaded).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import selfsup.methods  # noqa: F401  (registers the methods: load_config knows their arguments)
from selfsup.config import Config, load_config, to_dict
from selfsup.engine.checkpoint import atomic_save_safetensors, load_backbone_weights
from selfsup.errors import CheckpointError, ConfigError
from selfsup.models.base import Backbone
from selfsup.models.registry import create_backbone

__all__ = ["SaliencyNet", "build_saliency_net", "save_saliency_net", "load_saliency_net", "NET_FILE", "NET_FORMAT"]

NET_FILE = "saliency_net.safetensors"
NET_FORMAT = "selfsup-saliency-1"


class SaliencyNet(nn.Module):
    """``forward(x (B, 3, H, W) normalised) -> logits (B, H, W)``; ``encoder`` is a selfsup backbone (CNN or ViT)."""

    def __init__(self, encoder: Backbone, image_size: int, channels: int = 64):
        super().__init__()
        self.encoder = encoder
        was_training = encoder.training
        encoder.eval()
        with torch.no_grad():
            dims: List[int] = [m.shape[1] for m in encoder.forward_maps(torch.zeros(1, 3, image_size, image_size))]
        encoder.train(was_training)
        self.laterals = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in dims)
        self.fuse = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True), nn.Conv2d(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.encoder.forward_maps(x)
        size = maps[0].shape[-2:]
        y = sum(F.interpolate(lat(m), size=size, mode="bilinear", align_corners=False) if m.shape[-2:] != size
                else lat(m) for lat, m in zip(self.laterals, maps))
        logits = self.fuse(y)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def build_saliency_net(cfg: Config, image_size: int, seed: int) -> SaliencyNet:
    """A fresh saliency network: ``model.*`` encoder with the ``saliency.encoder`` weights, and a new decoder."""
    torch.manual_seed(seed)
    backbone = create_backbone(cfg.model, image_size=image_size)
    if cfg.saliency.encoder:
        load_backbone_weights(backbone, cfg.saliency.encoder, f"saliency.encoder={cfg.saliency.encoder}", cfg.model)
    return SaliencyNet(backbone, image_size, cfg.saliency.decoder_channels)


def save_saliency_net(path: Path, net: SaliencyNet, image_size: int, mean: Sequence[float], std: Sequence[float],
                      cfg: Config) -> None:
    """Write ``net`` (on the CPU) atomically to ``path``, with the metadata :func:`load_saliency_net` reads back."""
    atomic_save_safetensors(path, {k: v.contiguous() for k, v in net.state_dict().items()},
                            {"format": NET_FORMAT, "image_size": str(image_size), "mean": json.dumps(list(mean)),
                             "std": json.dumps(list(std)), "config": json.dumps(to_dict(cfg))})


def _net_metadata(p: Path, cfg: Config) -> Tuple[int, List[float], List[float], Config]:
    """The image side, mean, std and fit config stored in a saliency network's safetensors metadata, each checked; one
    :class:`CheckpointError` line naming the file and the field otherwise."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{p}: not a readable safetensors file ({reason})") from None
    if meta.get("format") != NET_FORMAT:
        raise CheckpointError(f"{p} is not a selfsup saliency network")

    def field(key: str):
        if key not in meta:
            raise CheckpointError(f"{p}: metadata field {key} is missing")
        try:
            return json.loads(meta[key], parse_constant=lambda c: float("nan"))
        except (ValueError, RecursionError):
            raise CheckpointError(f"{p}: metadata field {key} is not valid JSON") from None

    size = field("image_size")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 65536:
        raise CheckpointError(f"{p}: metadata field image_size must be a positive integer, "
                              f"not {meta['image_size'][:40]!r}")
    stats = []
    for key in ("mean", "std"):
        v = field(key)
        if (not isinstance(v, list) or len(v) != 3
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not np.isfinite(x) for x in v)
                or (key == "std" and any(x <= 0 for x in v))):
            raise CheckpointError(f"{p}: metadata field {key} must be a list of 3 finite numbers"
                                  f"{' above 0' if key == 'std' else ''}, not {meta[key][:60]!r}")
        stats.append([float(x) for x in v])
    fit_cfg = cfg
    if meta.get("config"):
        base = field("config")
        if not isinstance(base, dict):
            raise CheckpointError(f"{p}: metadata field config must be a mapping of options, "
                                  f"not {meta['config'][:40]!r}")
        try:
            fit_cfg = load_config(None, [], base=base)
        except (ConfigError, ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{p}: metadata field config is not a valid selfsup config ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - OmegaConf's own errors on a malformed stored mapping
            if type(exc).__module__.split(".")[0] != "omegaconf":
                raise
            raise CheckpointError(f"{p}: metadata field config is not a valid selfsup config "
                                  f"({str(exc).splitlines()[0][:160]})") from None
    return size, stats[0], stats[1], fit_cfg


def load_saliency_net(path: Union[str, os.PathLike], cfg: Config) -> Tuple[SaliencyNet, dict]:
    """The fused network of a fit folder (or its ``.safetensors``) and its metadata (image size, mean, std)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if p.is_dir():
        p = p / NET_FILE
    if not p.is_file():
        raise CheckpointError(f"no saliency network at {path} (run `selfsup saliency fit` first)")
    size, mean, std, fit_cfg = _net_metadata(p, cfg)
    torch.manual_seed(0)
    net = SaliencyNet(create_backbone(fit_cfg.model, image_size=size), size, fit_cfg.saliency.decoder_channels)
    try:
        net.load_state_dict(load_file(str(p)))
    except (RuntimeError, SafetensorError, OSError) as exc:
        raise CheckpointError(f"{p} does not fit its own config: {str(exc).splitlines()[0][:200]}") from None
    net.eval()
    return net, {"image_size": size, "mean": mean, "std": std}
