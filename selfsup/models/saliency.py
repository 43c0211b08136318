"""The saliency network: a selfsup-pretrained encoder with a light decoder (RELICv2 Appendix B.2.1).

DeepUSPS uses a DRN segmentation network (a 1x1 conv to two classes on the last map, then x8 bilinear upsampling);
RELICv2 replaces its supervised Cityscapes weights with a self-supervised encoder. Our small encoders reduce 8-16x, so a
single-map 1x1 head gives blobby masks; the decoder here is the lightest multi-scale one: a 1x1 lateral conv per
resolution of :meth:`~selfsup.models.backbones.Backbone.forward_maps`, all upsampled (bilinear) to the finest and
summed, one conv3x3-BN-ReLU, a 1x1 conv to one logit, and bilinear upsampling to the input. One sigmoid logit is the
two-class softmax of DeepUSPS with the background logit fixed at 0 (the same family of maps).
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from selfsup.models.backbones import Backbone

__all__ = ["SaliencyNet"]


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
