"""The architecture families of "Revisiting Self-Supervised Visual Representation Learning" (Kolesnikov, Zhai, Beyer
2019), method-details B 2.1: ResNet50 v2 (pre-activation), RevNet50 and VGG19-BN, each with a widening factor.
ResNet50 v1 is :func:`selfsup.models.resnet.build_resnet` under the name ``resnet50v1`` (timm's ResNet-50; the
reference's v1 unit is the same: stride on the 3x3 conv, projection shortcut with BN, ReLU after the addition).

**Width.** The paper's widening factor k (k = 4 is the standard network, 2048-d pre-logits for the ResNets) is
``model.width = k / 4`` here, the multiplier every other selfsup backbone uses: root conv 16k = 64w channels, stage
outputs 64k..512k = 256w..2048w, bottleneck inner width output / 4; RevNet's root is 64k = 256w; VGG's first block has
8k = 32w channels (so VGG-19's usual 64 is k = 8) and fc6/fc7 have 512k = 2048w (4096 at k = 8).

**Depth.** ``model.stage_units`` overrides the unit counts ((3, 4, 6, 3) for the ResNets and RevNet, (2, 2, 4, 4, 4)
convs per block for VGG-19), so that the whole study grid fits a CPU; the tap names stay the same.

**Stems.** ``imagenet``: the reference's 7x7/2 root conv and 3x3/2 max-pool (VGG has no root: five max-pools).
``small`` (``auto`` below 64 px): a 3x3/1 root conv and no max-pool (VGG: no max-pool after block 1), the CIFAR
convention of the other selfsup CNNs. ``patch_task``: Revisiting's override for 64 px Jigsaw/RPL patches, root conv
stride 1 (max-pool kept) and stage strides (1, 2, 2, 1); for VGG, which the reference never trains on patches, it is
the ``small`` stem.

**Taps** (:meth:`~selfsup.models.base.Backbone.forward_taps`): ResNets and RevNet give ``after_root``,
``block1``..``block4`` and ``pre_logits``; VGG gives ``block1``..``block5``, ``fc6`` and ``pre_logits`` (fc7). Where the
network ends with a normalisation (v2, RevNet), ``block4`` is the raw stage output and ``pre_logits`` is pooled after
that final BN(+ReLU).

**"(-)" variants:** ``model.last_relu=false`` drops the final ReLU (v1: after the last addition; v2/RevNet: after
the final BN; VGG: after fc7's BN).

**VGG's fc6** is a valid convolution over the whole last map (7x7 at 224 px, as the reference). Its kernel is the map
size at the ``image_size`` the backbone is built for; any other input size is first average-pooled to that grid, so
every input size works.

**RevNet** units are exactly invertible (:meth:`RevUnit.inverse`, tested): ``y1 = x1 + F(x2)``, output
``concat[x2, y1]``, where F is a v2 bottleneck without shortcut on half the channels. We train them with ordinary
autograd (the activations are stored), so the invertibility is a property of the network, not a memory saving.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, List, Optional, Tuple, cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import create_conv2d
from timm.models.resnetv2 import ResNetV2

from selfsup.config import ModelConfig
from selfsup.errors import ConfigError
from selfsup.models.base import (
    Backbone,
    StagedBackbone,
    norm_act_layer,
    norm_layer,
    refuse_options,
    scale_width,
    select_stem,
    stage_units,
)
from selfsup.models.registry import register_backbone

__all__ = ["ResNetV2Backbone", "RevUnit", "RevNetBackbone", "VGGBackbone", "build_resnet50v2", "build_revnet50",
           "build_vgg19bn"]


def _family_setup(cfg: ModelConfig, name: str, default_units: Tuple[int, ...], image_size: int) -> Tuple[tuple, str]:
    """What every Revisiting family checks first: options it does not use refused, its units per stage
    (``model.stage_units`` or ``default_units``) and its stem (``patch_task`` allowed)."""
    refuse_options(cfg, name, "patch_size", "drop_path_rate")
    return stage_units(cfg, name, default_units), select_stem(cfg, image_size, family=name, patch_task=True)


# --------------------------------------------------------------------------------------------------------------------
# ResNet50 v2 (pre-activation), timm's ResNetV2
# --------------------------------------------------------------------------------------------------------------------


class ResNetV2Backbone(StagedBackbone):
    """timm's :class:`~timm.models.resnetv2.ResNetV2` (pre-activation bottlenecks, stride on the 3x3 conv, projection
    shortcut from the pre-activated input, conv only) ending with BN(+ReLU)."""

    def parts(self):
        return self.body.stem, self.body.stages, self.body.norm


@register_backbone("resnet50v2")
def build_resnet50v2(cfg: ModelConfig, *, image_size: int, in_chans: int = 3,
                     device: Optional[torch.device | str] = None) -> ResNetV2Backbone:
    """ResNet50 v2 at ``model.width`` = k / 4 (see the module docstring)."""
    name = "resnet50v2"
    units, stem = _family_setup(cfg, name, (3, 4, 6, 3), image_size)
    channels = tuple(scale_width(c, cfg.width) for c in (256, 512, 1024, 2048))
    root = scale_width(64, cfg.width)
    norm_act = norm_act_layer(cfg.norm, nn.ReLU)
    # Any: timm's stem and stages are Sequentials whose children torch types as Tensor | Module; edited dynamically
    net: Any = ResNetV2(list(units), channels=channels, num_classes=0, in_chans=in_chans, stem_chs=root,
                        stem_type="fixed", preact=True, conv_layer=create_conv2d, norm_layer=norm_act, device=device)
    if stem == "small":
        net.stem = nn.Sequential(OrderedDict(conv=nn.Conv2d(in_chans, root, 3, padding=1, bias=False, device=device)))
    elif stem == "patch_task":
        net.stem.conv.stride = (1, 1)
        first = net.stages[3].blocks[0]
        first.conv2.stride = (1, 1)
        if first.downsample is not None:
            first.downsample.conv.stride = (1, 1)
    if not cfg.last_relu:
        net.norm = norm_act(channels[-1], apply_act=False, device=device)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    reduction = {"imagenet": 32, "small": 8, "patch_task": 8}[stem]
    return ResNetV2Backbone(net, name=name, num_features=channels[-1], stem=stem, norm=cfg.norm, reduction=reduction)


# --------------------------------------------------------------------------------------------------------------------
# RevNet50
# --------------------------------------------------------------------------------------------------------------------


class PreActBranch(nn.Module):
    """F of a reversible unit: a v2 bottleneck without shortcut, ``BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1``, from and
    to ``channels`` with ``channels / 4`` inside."""

    def __init__(self, channels: int, norm: str, device=None) -> None:
        super().__init__()
        inner = max(1, channels // 4)
        na = norm_act_layer(norm, nn.ReLU)
        self.norm1 = na(channels, device=device)
        self.conv1 = nn.Conv2d(channels, inner, 1, bias=False, device=device)
        self.norm2 = na(inner, device=device)
        self.conv2 = nn.Conv2d(inner, inner, 3, padding=1, bias=False, device=device)
        self.norm3 = na(inner, device=device)
        self.conv3 = nn.Conv2d(inner, channels, 1, bias=False, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.norm3(self.conv2(self.norm2(self.conv1(self.norm1(x))))))


class RevUnit(nn.Module):
    """A reversible unit on ``channels`` (even): split into halves (x1, x2), ``y1 = x1 + F(x2)``, output
    ``concat[x2, y1]`` (the halves swap every unit)."""

    def __init__(self, channels: int, norm: str, device=None) -> None:
        super().__init__()
        if channels % 2:
            raise ConfigError(f"a RevNet unit needs an even channel count, got {channels} (change model.width)")
        self.f = PreActBranch(channels // 2, norm, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return torch.cat([x2, x1 + self.f(x2)], dim=1)

    @torch.no_grad()
    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """The input that :meth:`forward` maps to ``y``: ``x2 = y[:C/2]``, ``x1 = y[C/2:] - F(x2)``. Exact when F is
        deterministic (eval mode: BatchNorm uses its running statistics)."""
        x2, y1 = y.chunk(2, dim=1)
        return torch.cat([y1 - self.f(x2), x2], dim=1)


class RevStage(nn.Sequential):
    """Reversible units, preceded (``downsample``) by Revisiting's transition: average-pool with stride 2 (skipped when
    ``stride`` is 1) and zero-padding of C/2 channels on each side, which doubles the channels."""

    def __init__(self, cin: int, cout: int, units: int, stride: int, norm: str, device=None) -> None:
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride
        for i in range(units):
            self.add_module(f"unit{i}", RevUnit(cout, norm, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
        if self.cout != self.cin:
            pad = (self.cout - self.cin) // 2
            x = F.pad(x, (0, 0, 0, 0, pad, self.cout - self.cin - pad))
        return super().forward(x)

    @torch.no_grad()
    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Invert the units (the pooling transition is not invertible and is not undone)."""
        for unit in reversed(list(self.children())):
            y = cast(RevUnit, unit).inverse(y)  # __init__ adds RevUnits only
        return y


class RevNetBackbone(StagedBackbone):
    """RevNet50: root conv (no BN), four :class:`RevStage`, final BN(+ReLU)."""

    def parts(self):
        return self.body.root, self.body.stages, self.body.final


@register_backbone("revnet50")
def build_revnet50(cfg: ModelConfig, *, image_size: int, in_chans: int = 3,
                   device: Optional[torch.device | str] = None) -> RevNetBackbone:
    """RevNet50 at ``model.width`` = k / 4: root to 256w channels, stages 256w..2048w (see the module docstring)."""
    name = "revnet50"
    units, stem = _family_setup(cfg, name, (3, 4, 6, 3), image_size)
    channels = [2 * scale_width(128, cfg.width) * m for m in (1, 2, 4, 8)]  # even, doubling
    if stem == "small":
        root = nn.Sequential(OrderedDict(conv=nn.Conv2d(in_chans, channels[0], 3, padding=1, bias=False,
                                                        device=device)))
    else:
        root = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_chans, channels[0], 7, stride=1 if stem == "patch_task" else 2, padding=3, bias=False,
                           device=device),
            pool=nn.MaxPool2d(3, stride=2, padding=1)))
    strides = (1, 2, 2, 1) if stem == "patch_task" else (1, 2, 2, 2)
    stages = nn.Sequential(*[RevStage(channels[max(i - 1, 0)], channels[i], units[i], strides[i], cfg.norm,
                                      device=device) for i in range(4)])
    final = norm_act_layer(cfg.norm, nn.ReLU)(channels[-1], apply_act=cfg.last_relu, device=device)
    body = nn.Sequential(OrderedDict(root=root, stages=stages, final=final))
    for m in body.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    reduction = {"imagenet": 32, "small": 8, "patch_task": 8}[stem]
    return RevNetBackbone(body, name=name, num_features=channels[-1], stem=stem, norm=cfg.norm, reduction=reduction)


# --------------------------------------------------------------------------------------------------------------------
# VGG19-BN
# --------------------------------------------------------------------------------------------------------------------

VGG_TAPS = ("block1", "block2", "block3", "block4", "block5", "fc6", "pre_logits")


class VGGBackbone(Backbone):
    """Five blocks of conv3x3-BN-ReLU, each followed by a 2x2 max-pool (not block 1's under the ``small`` stem), then
    fc6 (a valid conv over the whole map) and fc7 (1x1), both BN-ReLU, no dropout. ``fc6_grid`` is the map side fc6
    was built for; other inputs are average-pooled to it first."""

    tap_names = VGG_TAPS
    body: Any  # a Sequential of blocks, fc6 and fc7, read by name (torch types a child as Tensor | Module)

    def __init__(self, body: nn.Module, *, fc6_grid: int, **kw) -> None:
        super().__init__(body, **kw)
        self.fc6_grid = fc6_grid

    def _fc(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-1] != self.fc6_grid or x.shape[-2] != self.fc6_grid:
            x = F.adaptive_avg_pool2d(x, self.fc6_grid)
        fc6 = self.body.fc6(x)
        return fc6, self.body.fc7(fc6)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.body.blocks(x))[1]

    def forward_taps(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        taps: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        for i, block in enumerate(self.body.blocks):
            x = taps[f"block{i + 1}"] = block(x)
        taps["fc6"], fc7 = self._fc(x)
        taps["pre_logits"] = self.pre_logits(fc7.mean(dim=(2, 3)))
        return taps


def _pooled_size(size: int, pools: int) -> int:
    for _ in range(pools):
        size = (size + 1) // 2  # MaxPool2d(2, 2, ceil_mode=True)
    return size


@register_backbone("vgg19bn")
def build_vgg19bn(cfg: ModelConfig, *, image_size: int, in_chans: int = 3,
                  device: Optional[torch.device | str] = None) -> VGGBackbone:
    """VGG19-BN at ``model.width`` = k / 4 (first block 32w channels, fc 2048w); see the module docstring."""
    name = "vgg19bn"
    units, stem = _family_setup(cfg, name, (2, 2, 4, 4, 4), image_size)
    norm = norm_layer(cfg.norm)
    base = scale_width(32, cfg.width)
    widths = (base, 2 * base, 4 * base, 8 * base, 8 * base)
    fc = scale_width(2048, cfg.width)
    blocks: List[nn.Module] = []
    cin = in_chans
    pools = 0
    for i, (n, w) in enumerate(zip(units, widths)):
        layers: List[nn.Module] = []
        for _ in range(n):
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False, device=device), norm(w, device=device),
                       nn.ReLU(inplace=True)]
            cin = w
        if not (i == 0 and stem != "imagenet"):
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            pools += 1
        blocks.append(nn.Sequential(*layers))
    grid = _pooled_size(image_size, pools)
    fc7: List[nn.Module] = [nn.Conv2d(fc, fc, 1, bias=False, device=device), norm(fc, device=device)]
    if cfg.last_relu:
        fc7.append(nn.ReLU(inplace=True))
    body = nn.Sequential(OrderedDict(
        blocks=nn.Sequential(*blocks),
        fc6=nn.Sequential(nn.Conv2d(cin, fc, grid, bias=False, device=device), norm(fc, device=device),
                          nn.ReLU(inplace=True)),
        fc7=nn.Sequential(*fc7)))
    for m in body.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    return VGGBackbone(body, fc6_grid=grid, name=name, num_features=fc, stem=stem, norm=cfg.norm,
                       reduction=2 ** pools)
