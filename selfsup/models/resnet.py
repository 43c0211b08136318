"""ResNets (timm): ``resnet18/34/50/101/152/200`` and ``resnet50v1``.

timm's :class:`timm.models.resnet.ResNet` (v1, the torchvision layout; BasicBlock for 18 and 34, Bottleneck from 50 on;
ResNet-200 has stages (3, 24, 36, 3)). ``model.width`` widens **every** stage and the stem,
``channels = (64w, 128w, 256w, 512w)``, ``stem width = 64w``, as in the wide ResNets of SimCLR/BYOL that RELICv2 reports
(Table 5: ResNet-50 1x/2x/4x with 24M/94M/375M parameters). timm's plain 7x7 stem is fixed at 64 channels, so for
``w != 1`` the stem and stage 1 are rebuilt here with timm's own ``make_blocks``.

``resnet50v1`` is Revisiting's name for ResNet-50 (the reference's v1 unit is the same: stride on the 3x3 conv,
projection shortcut with BN, ReLU after the addition); its other families are in :mod:`selfsup.models.revisiting`.
Stems, norms and refused options: :mod:`selfsup.models.base`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
from timm.models.resnet import BasicBlock, Bottleneck, ResNet, make_blocks

from selfsup.config import ModelConfig
from selfsup.models.base import StagedBackbone, norm_layer, refuse_options, scale_width, select_stem, stage_units
from selfsup.models.registry import register_family

__all__ = ["RESNET_SPECS", "ResNetBackbone", "build_resnet"]

# name: (block, stage depths)
RESNET_SPECS: Dict[str, Tuple[type, Tuple[int, ...]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet50v1": (Bottleneck, (3, 4, 6, 3)),  # Revisiting's name for the same network (the study's --archs)
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
    "resnet200": (Bottleneck, (3, 24, 36, 3)),
}


class ResNetBackbone(StagedBackbone):
    """A timm ResNet trunk (``body``) without classifier: root = conv1-bn1-act1-maxpool, stages = layer1..layer4."""

    def parts(self):
        b = self.body
        return (lambda x: b.maxpool(b.act1(b.bn1(b.conv1(x))))), (b.layer1, b.layer2, b.layer3, b.layer4), nn.Identity()


@register_family(RESNET_SPECS, lambda name: f"{name} (timm ResNet, {RESNET_SPECS[name][0].__name__}, "
                                         f"stages {RESNET_SPECS[name][1]}).")
def build_resnet(name: str, cfg: ModelConfig, *, image_size: int, in_chans: int = 3,
                 device: Optional[torch.device | str] = None) -> ResNetBackbone:
    """A width-``cfg.width`` ResNet (every stage and the stem widened) with the stem chosen by
    :func:`~selfsup.models.base.select_stem`.

    ``model.stage_units`` overrides the units per stage, ``model.last_relu=false`` removes the ReLU after the last
    unit's addition (Revisiting's "ResNet50 v1 (-)"), and ``model.stem=patch_task`` is Revisiting's override for 64 px
    patches: root conv stride 1 (max-pool kept) and stage 4 stride 1, a total stride of 8.
    """
    refuse_options(cfg, name, "patch_size", "drop_path_rate")
    block, layers = RESNET_SPECS[name]
    layers = stage_units(cfg, name, layers)
    stem = select_stem(cfg, image_size, family=name, patch_task=True)
    norm = norm_layer(cfg.norm)
    channels = tuple(scale_width(c, cfg.width) for c in (64, 128, 256, 512))
    stem_width = scale_width(64, cfg.width)
    # Any: timm adds the stages with add_module and types conv1 by its first stem branch, so the edits below are
    # dynamic; and timm annotates ``block`` as an instance where it takes the class
    net: Any = ResNet(block, layers, num_classes=0, in_chans=in_chans,  # type: ignore[arg-type]
                      global_pool="avg", channels=channels, norm_layer=norm, device=device)
    if stem != "imagenet" or stem_width != 64:
        # timm's plain stem is a 7x7/2 conv of fixed width 64: replace it, and rebuild stage 1 so that its first block
        # takes stem_width inputs (BasicBlock then needs no projection, as in the wide ResNets of SimCLR/BYOL).
        if stem == "small":
            net.conv1 = nn.Conv2d(in_chans, stem_width, 3, stride=1, padding=1, bias=False, device=device)
            net.maxpool = nn.Identity()
        else:
            net.conv1 = nn.Conv2d(in_chans, stem_width, 7, stride=1 if stem == "patch_task" else 2, padding=3,
                                  bias=False, device=device)
        net.bn1 = norm(stem_width, device=device)
        if stem_width != 64:
            # (two stages asked for, the first kept: timm's make_blocks divides by the block count minus one)
            stages, _ = make_blocks((block, block), channels[:2], (layers[0], 1), stem_width, act_layer=nn.ReLU,
                                    norm_layer=norm, device=device)
            net.layer1 = stages[0][1]
        net.feature_info[0]["num_chs"] = stem_width
        net.init_weights(zero_init_last=True)  # kaiming-normal (fan_out) convs, last norm of each branch zeroed
    if stem == "patch_task":
        first = net.layer4[0]
        (first.conv2 if block is Bottleneck else first.conv1).stride = (1, 1)
        if first.downsample is not None:
            first.downsample[0].stride = (1, 1)
    if not cfg.last_relu:
        last = net.layer4[-1]
        if block is Bottleneck:
            last.act3 = nn.Identity()
        else:
            last.act2 = nn.Identity()
    reduction = {"imagenet": 32, "small": 8, "patch_task": 8}[stem]
    return ResNetBackbone(net, name=name, num_features=net.num_features, stem=stem, norm=cfg.norm,
                          reduction=reduction)
