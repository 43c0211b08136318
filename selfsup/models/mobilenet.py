"""MobileNetV2 (timm EfficientNet builder): ``mobilenetv2``.

timm's :class:`~timm.models.efficientnet.EfficientNet` with timm's MobileNetV2 block definition (Sandler et al. 2018;
SSLight's main backbone, method-details B 1.4): inverted residuals with ReLU6, the feature stack up to the 1x1 conv to
1280 channels, then global average pooling. ``model.width`` is the channel multiplier (channels rounded to multiples of
8; the last conv keeps 1280 for ``w <= 1``). Width 1: 2.22M parameters (SSLight Table 4: 2.2M), 1280 features. The
``small`` stem makes the stem conv **and** the first 24-channel stage stride 1 (total stride 8 instead of 32, a 4x4 map
at 32 px like the CIFAR ResNets; as kuangliu/pytorch-cifar's MobileNetV2), parameters unchanged. ``model.norm`` picks
the same layers as for the other CNNs; with ``none`` the last :class:`~selfsup.models.base.ChannelAffine` of each
residual branch is zero-initialised (SkipInit, as for the ResNets). ``model.drop_path_rate`` is timm's stochastic depth.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Optional, Tuple

import torch
import torch.nn as nn
from timm.models._efficientnet_blocks import InvertedResidual  # noqa: PLC2701 (timm has no public path)
from timm.models._efficientnet_builder import decode_arch_def, round_channels  # noqa: PLC2701 (timm has no public path)
from timm.models.efficientnet import EfficientNet

from selfsup.config import ModelConfig
from selfsup.models.base import Backbone, norm_act_layer, refuse_options, select_stem
from selfsup.models.registry import register_backbone

__all__ = ["MOBILENETV2_ARCH", "build_mobilenetv2"]

# timm's MobileNetV2 (``efficientnet._gen_mobilenet_v2``): stage strings are block type (ds: depthwise separable, ir:
# inverted residual), repeats r, kernel k, stride s, expansion e, output channels c.
MOBILENETV2_ARCH: Tuple[Tuple[str], ...] = (
    ("ds_r1_k3_s1_c16",),
    ("ir_r2_k3_s2_e6_c24",),
    ("ir_r3_k3_s2_e6_c32",),
    ("ir_r4_k3_s2_e6_c64",),
    ("ir_r3_k3_s1_e6_c96",),
    ("ir_r3_k3_s2_e6_c160",),
    ("ir_r1_k3_s1_e6_c320",),
)


@register_backbone("mobilenetv2")
def build_mobilenetv2(cfg: ModelConfig, *, image_size: int, in_chans: int = 3,
                      device: Optional[torch.device | str] = None) -> Backbone:
    """MobileNetV2 with channel multiplier ``cfg.width``; see the module docstring for the stems and the norms."""
    refuse_options(cfg, "mobilenetv2", "patch_size", "stage_units", "last_relu")
    stem = select_stem(cfg, image_size, family="mobilenetv2")
    arch = [list(stage) for stage in MOBILENETV2_ARCH]
    if stem == "small":
        arch[1] = [arch[1][0].replace("_s2_", "_s1_")]
    round_chs = partial(round_channels, multiplier=cfg.width)
    net = EfficientNet(
        block_args=decode_arch_def(arch), num_classes=0, num_features=max(1280, round_chs(1280)),
        in_chans=in_chans, stem_size=32, round_chs_fn=round_chs, act_layer=nn.ReLU6,
        norm_layer=norm_act_layer(cfg.norm, nn.ReLU6), drop_path_rate=cfg.drop_path_rate, device=device,
    )
    if stem == "small":
        # the 3x3 stem conv has padding 1 for stride 1 and 2 alike, so only the stride changes (init kept)
        net.conv_stem.stride = (1, 1)
    if cfg.norm == "none":
        for m in net.modules():
            if isinstance(m, InvertedResidual) and m.has_skip:
                nn.init.zeros_(m.bn3.norm.weight)  # SkipInit: residual branches start at zero
    body = nn.Sequential(OrderedDict(conv_stem=net.conv_stem, bn1=net.bn1, blocks=net.blocks, conv_head=net.conv_head,
                                     bn2=net.bn2))
    return Backbone(body, name="mobilenetv2", num_features=net.num_features, stem=stem, norm=cfg.norm,
                    reduction=32 if stem == "imagenet" else 8)
