"""Backbone registry: the encoder f whose pooled output is the representation the probes evaluate.

Every backbone is a :class:`Backbone`: ``forward(x)`` returns the globally average-pooled pre-logits representation
``(B, num_features)`` (ViTs: the class token), ``forward_features(x)`` the last feature map ``(B, num_features, h, w)``
(ViTs: the patch tokens as a grid). Names come from a registry
(:func:`register_backbone`, :func:`list_backbones`, :func:`create_backbone`).

Registered families

* ``resnet18/34/50/101/152/200``: timm's :class:`timm.models.resnet.ResNet` (v1, the torchvision layout; BasicBlock for 18
  and 34, Bottleneck from 50 on; ResNet-200 has stages (3, 24, 36, 3)). ``model.width`` widens **every** stage and the stem,
  ``channels = (64w, 128w, 256w, 512w)``, ``stem width = 64w``, as in the wide ResNets of SimCLR/BYOL that RELICv2 reports
  (Table 5: ResNet-50 1x/2x/4x with 24M/94M/375M parameters). timm's plain 7x7 stem is fixed at 64 channels, so for
  ``w != 1`` the stem and stage 1 are rebuilt here with timm's own ``make_blocks``.
* ``convnet_tiny`` / ``convnet_small``: plain conv3x3-norm-ReLU stacks for CPU runs on 28-32 px images (see
  :data:`CONVNET_SPECS` for the layers and the measured training throughput).
* ``mobilenetv2``: timm's :class:`~timm.models.efficientnet.EfficientNet` with timm's MobileNetV2 block definition
  (Sandler et al. 2018; SSLight's main backbone, method-details B 1.4): inverted residuals with ReLU6, the feature stack
  up to the 1x1 conv to 1280 channels, then global average pooling. ``model.width`` is the channel multiplier
  (channels rounded to multiples of 8; the last conv keeps 1280 for ``w <= 1``). Width 1: 2.22M parameters (SSLight
  Table 4: 2.2M), 1280 features. The ``small`` stem makes the stem conv **and** the first 24-channel stage stride 1
  (total stride 8 instead of 32, a 4x4 map at 32 px like the CIFAR ResNets; as kuangliu/pytorch-cifar's MobileNetV2),
  parameters unchanged. ``model.norm`` picks the same layers as for the other CNNs; with ``none`` the last
  :class:`ChannelAffine` of each residual branch is zero-initialised (SkipInit, as for the ResNets).
  ``model.drop_path_rate`` is timm's stochastic depth.
* ``vit_tiny_16``, ``vit_tiny_32``, ``vit_small_16``: timm's :class:`~timm.models.vision_transformer.VisionTransformer`
  (ViT-Ti/16: embed 192, depth 12, 3 heads, 5.5M parameters; ViT-Ti/32; ViT-S/16: 384, 12, 6, 21.7M), see
  :class:`ViTBackbone`. The representation is the class token after the final LayerNorm (pre-logits).
  ``model.patch_size`` overrides the name's patch size (4 for 32 px CPU runs) and ``model.drop_path_rate`` sets
  stochastic depth. ``model.stem`` and ``model.norm`` do not apply (a patch embedding, and LayerNorm, which is per
  sample and so batch-independent like ``group``/``none``); ``model.width`` must stay 1 (the name sets the size).
  Never pretrained: nothing is downloaded.

Options a family does not use (``model.patch_size`` for CNNs, ``model.drop_path_rate`` for the ResNets and convnets,
``model.width`` for ViTs) raise a :class:`~selfsup.errors.ConfigError` when set, rather than being silently ignored.

Stem (``model.stem``) is chosen from the **input size**, never from the dataset name: ``imagenet`` is the 7x7/2 conv plus
3x3/2 max-pool (total reduction 4 before stage 1), ``small`` is a 3x3 stride-1 conv without max-pool (the usual CIFAR stem),
``auto`` takes ``small`` when ``image_size <= model.small_stem_max_size`` and ``imagenet`` otherwise. The convnets follow the
same rule: their ``imagenet`` stem makes the first conv stride 2 and adds the 3x3/2 max-pool.

Normalisation (``model.norm``):

* ``batch``: :class:`torch.nn.BatchNorm2d`.
* ``group``: :class:`GroupNorm2d`, with :func:`group_count` groups: the largest divisor of C that is at most
  ``min(32, C // 2)`` (Wu & He 2018 use 32 groups; the cap keeps at least 2 channels per group for narrow layers, and taking
  a divisor makes every width valid).
* ``none``: :class:`ChannelAffine`, a per-channel scale and bias with no statistics at all. It plays the role of the conv
  bias, and because it has a ``weight`` the last one of each residual branch is zero-initialised by timm's
  ``zero_init_last``, so deep no-norm ResNets start as identity maps and train (SkipInit, De & Smith 2020).

``group`` and ``none`` make a training step independent of how a batch is split over processes (BatchNorm statistics are
per process), which the DDP equivalence test relies on.

All backbones accept channels_last inputs and any input size (the pooling is global; 8 px and up is tested), except that
ViT inputs must be multiples of the patch size.
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from dataclasses import dataclass, fields
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from timm.models._efficientnet_blocks import InvertedResidual
from timm.models._efficientnet_builder import decode_arch_def, round_channels
from timm.models.efficientnet import EfficientNet
from timm.models.resnet import BasicBlock, Bottleneck, ResNet, make_blocks
from timm.models.vision_transformer import VisionTransformer

from selfsup.config import ModelConfig
from selfsup.errors import ConfigError

__all__ = [
    "Backbone",
    "ResNetBackbone",
    "StagedBackbone",
    "ConvNetSpec",
    "build_resnet",
    "build_convnet",
    "register_family",
    "NORMS",
    "ChannelAffine",
    "GroupNorm2d",
    "group_count",
    "norm_layer",
    "norm_act_layer",
    "select_stem",
    "scale_width",
    "register_backbone",
    "list_backbones",
    "create_backbone",
    "CONVNET_SPECS",
    "RESNET_SPECS",
    "build_mobilenetv2",
    "MOBILENETV2_ARCH",
    "ViTSpec",
    "ViTBackbone",
    "build_vit",
    "VIT_SPECS",
    "LastBlocksTokens",
]

# --------------------------------------------------------------------------------------------------------------------
# Normalisation layers
# --------------------------------------------------------------------------------------------------------------------


def group_count(channels: int, max_groups: int = 32) -> int:
    """Number of GroupNorm groups for ``channels``: the largest divisor of C not above ``min(max_groups, C // 2)`` (>= 1)."""
    target = max(1, min(max_groups, channels // 2))
    for g in range(target, 0, -1):
        if channels % g == 0:
            return g
    return 1


class GroupNorm2d(nn.GroupNorm):
    """GroupNorm with the group count taken from :func:`group_count`, constructible as ``norm(num_channels)`` like BN."""

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True, device=None, dtype=None) -> None:
        super().__init__(group_count(num_channels), num_channels, eps=eps, affine=affine, device=device, dtype=dtype)


class ChannelAffine(nn.Module):
    """``model.norm=none``: ``y = x * weight[c] + bias[c]``, no normalisation, no statistics, no batch dependence.

    ``weight`` starts at 1 and ``bias`` at 0. Being 1-D, both land in the no-decay / LARS-excluded parameter group, like
    BatchNorm's affine parameters.
    """

    def __init__(self, num_channels: int, device=None, dtype=None) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.weight = nn.Parameter(torch.ones(num_channels, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(num_channels, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.weight.view(shape) + self.bias.view(shape)

    def extra_repr(self) -> str:
        return str(self.num_channels)


NORMS = ("batch", "group", "none")


def norm_layer(kind: str) -> Callable[..., nn.Module]:
    """The 2-D normalisation constructor for ``model.norm``: called as ``norm(num_channels, device=..., dtype=...)``."""
    if kind == "batch":
        return nn.BatchNorm2d
    if kind == "group":
        return GroupNorm2d
    if kind == "none":
        return ChannelAffine
    raise ConfigError(f"model.norm must be one of {', '.join(NORMS)}; got '{kind}'{_did_you_mean(kind, NORMS)}")


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------


def select_stem(cfg: ModelConfig, image_size: int, *, family: str = "", patch_task: bool = False) -> str:
    """``imagenet``, ``small`` or ``patch_task``: ``auto`` decides by the input size (small when ``image_size <=
    small_stem_max_size``). ``patch_task`` (Revisiting's stride override for Jigsaw/RPL patches) only where the family
    has it (``patch_task=True``); elsewhere it is a :class:`~selfsup.errors.ConfigError` naming ``family``."""
    if cfg.stem == "auto":
        return "small" if image_size <= cfg.small_stem_max_size else "imagenet"
    stems = ("imagenet", "small", "patch_task") if patch_task else ("imagenet", "small")
    if cfg.stem not in stems:
        where = f" for model.backbone={family}" if family else ""
        raise ConfigError(f"model.stem must be one of auto, {', '.join(stems)}{where}; got '{cfg.stem}'"
                          f"{_did_you_mean(str(cfg.stem), ('auto', *stems))}")
    return cfg.stem


def scale_width(channels: int, width: float) -> int:
    """``round(channels * width)``, at least 1: the channel count of a stage under ``model.width``."""
    return max(1, int(round(channels * width)))


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _refuse_options(cfg: ModelConfig, name: str, *options: str) -> None:
    """ConfigError if one of ``options`` (ModelConfig fields) is set away from its default: ``name`` does not use it."""
    defaults = {f.name: f.default for f in fields(ModelConfig)}
    for option in options:
        if getattr(cfg, option) != defaults[option]:
            raise ConfigError(f"model.{option} does not apply to model.backbone={name} "
                              f"(leave it at {defaults[option]}); got {getattr(cfg, option)}")


# --------------------------------------------------------------------------------------------------------------------
# Base class and registry
# --------------------------------------------------------------------------------------------------------------------


class Backbone(nn.Module):
    """An encoder: ``body`` maps images to a feature map; ``forward`` global-average-pools it to ``(B, num_features)``.

    Attributes: ``name`` (registry name), ``num_features`` (representation size), ``stem`` (``imagenet`` | ``small``;
    ``patch`` for ViTs), ``norm`` (``batch`` | ``group`` | ``none``; ``layer`` for ViTs), ``reduction`` (total stride of
    the feature map; the patch size for ViTs).
    """

    def __init__(self, body: nn.Module, *, name: str, num_features: int, stem: str, norm: str, reduction: int) -> None:
        super().__init__()
        self.body = body
        self.name = name
        self.num_features = num_features
        self.stem = stem
        self.norm = norm
        self.reduction = reduction
        self.rep_layer: Optional[nn.Module] = None
        self.standard_layout = True  # the name's own depth and final ReLU (what a timm/torchvision export needs)

    def set_representation_dim(self, dim: int) -> None:
        """Add Revisiting's extra linear layer after the pooling (``model.representation_dim``): the representation
        becomes ``Linear(num_features, dim)`` of the pooled features, whatever the width."""
        self.rep_layer = nn.Linear(self.num_features, dim)
        self.num_features = dim

    def pre_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """The representation from the pooled features: through the extra linear layer when there is one."""
        return pooled if self.rep_layer is None else self.rep_layer(pooled)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map ``(B, num_features, h, w)``."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled pre-logits representation ``(B, num_features)``."""
        return self.pre_logits(self.forward_features(x).mean(dim=(2, 3)))

    #: Names of :meth:`forward_taps`'s outputs, input side first (Revisiting's evaluation at every depth).
    tap_names: Tuple[str, ...] = ("pre_logits",)

    def forward_taps(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """Intermediate representations by name (:attr:`tap_names`): feature maps ``(B, C, h, w)``, and ``pre_logits``
        ``(B, num_features)`` (equal to ``forward(x)``). Families without intermediate taps give ``pre_logits`` only."""
        return OrderedDict(pre_logits=self(x))

    def forward_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Feature maps ``(B, C, h, w)`` from the input side to the output, the last one of each resolution (a dense
        decoder's inputs, e.g. the saliency network's). A ``Sequential`` body gives every layer's output; families with
        taps give their 4-D taps; others (ViTs: the patch-token grid) their last feature map only."""
        if isinstance(self.body, nn.Sequential) and type(self).forward_features is Backbone.forward_features:
            maps = []
            for layer in self.body:
                x = layer(x)
                maps.append(x)
        elif len(self.tap_names) > 1:
            maps = [t for t in self.forward_taps(x).values() if t.dim() == 4]
        else:
            maps = []
        if not maps:
            maps = [self.forward_features(x)]
        out: List[torch.Tensor] = []
        for m in maps:
            if out and out[-1].shape[-2:] == m.shape[-2:]:
                out[-1] = m
            else:
                out.append(m)
        return out

    def extra_repr(self) -> str:
        return f"name={self.name}, num_features={self.num_features}, stem={self.stem}, norm={self.norm}"


BackboneBuilder = Callable[..., Backbone]
_REGISTRY: Dict[str, BackboneBuilder] = {}


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator: register ``builder(cfg, *, image_size, in_chans, device) -> Backbone`` under ``name``."""

    def wrap(builder: BackboneBuilder) -> BackboneBuilder:
        if name in _REGISTRY and _REGISTRY[name] is not builder:
            raise ValueError(f"backbone '{name}' is already registered")
        _REGISTRY[name] = builder
        return builder

    return wrap


def register_family(names, build: Callable[..., Backbone], describe: Callable[[str], str]) -> None:
    """Register ``build(name, cfg, *, image_size, in_chans, device)`` under every name of a family (ResNets, ViTs, ...).

    ``describe(name)`` becomes the registered builder's docstring.
    """
    for name in names:
        register_backbone(name)(_named_builder(name, build, describe(name)))


def _named_builder(name: str, build: Callable[..., Backbone], doc: str) -> BackboneBuilder:
    def _build(cfg: ModelConfig, *, image_size: int, in_chans: int = 3, device=None) -> Backbone:
        return build(name, cfg, image_size=image_size, in_chans=in_chans, device=device)

    _build.__name__ = f"build_{name}"
    _build.__doc__ = doc
    return _build


def list_backbones() -> List[str]:
    """The registered backbone names, sorted."""
    return sorted(_REGISTRY)


def create_backbone(cfg: ModelConfig, image_size: int, in_chans: int = 3, *,
                    device: Optional[torch.device | str] = None) -> Backbone:
    """Build ``cfg.backbone`` for inputs of ``image_size`` pixels (which picks the stem under ``model.stem=auto``).

    ``device="meta"`` builds the module without allocating memory (parameter counting, shape checks).
    Raises :class:`~selfsup.errors.ConfigError` for an unknown name (with a did-you-mean and the list) or a bad option.
    """
    cfg.validate()
    if cfg.backbone not in _REGISTRY:
        raise ConfigError(f"unknown model.backbone '{cfg.backbone}'{_did_you_mean(cfg.backbone, list(_REGISTRY))}; "
                          f"available: {', '.join(list_backbones())}")
    if image_size < 1:
        raise ConfigError(f"image size must be > 0 to build model.backbone={cfg.backbone}, got {image_size}")
    backbone = _REGISTRY[cfg.backbone](cfg, image_size=image_size, in_chans=in_chans, device=device)
    backbone.standard_layout = cfg.stage_units is None and cfg.last_relu and cfg.representation_dim is None
    if cfg.representation_dim is not None:
        backbone.set_representation_dim(cfg.representation_dim)
        if device is not None:
            backbone.rep_layer.to(device)
    return backbone


# --------------------------------------------------------------------------------------------------------------------
# ResNets (timm)
# --------------------------------------------------------------------------------------------------------------------

# name: (block, stage depths)
RESNET_SPECS: Dict[str, Tuple[type, Tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet50v1": (Bottleneck, (3, 4, 6, 3)),  # Revisiting's name for the same network (the study's --archs)
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
    "resnet200": (Bottleneck, (3, 24, 36, 3)),
}


class StagedBackbone(Backbone):
    """The ResNet layout: ``root -> stages -> final`` (``final`` a norm, or nothing), with the Revisiting taps
    ``after_root``, ``block1``..``block4`` (stage outputs) and ``pre_logits`` (pooled after ``final``). Subclasses say
    where the parts are (:meth:`parts`)."""

    tap_names = ("after_root", "block1", "block2", "block3", "block4", "pre_logits")

    def parts(self) -> Tuple[Callable[[torch.Tensor], torch.Tensor], Sequence[nn.Module],
                             Callable[[torch.Tensor], torch.Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        root, stages, final = self.parts()
        x = root(x)
        for stage in stages:
            x = stage(x)
        return final(x)

    def forward_taps(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        root, stages, final = self.parts()
        taps: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        x = taps["after_root"] = root(x)
        for i, stage in enumerate(stages):
            x = taps[f"block{i + 1}"] = stage(x)
        taps["pre_logits"] = self.pre_logits(final(x).mean(dim=(2, 3)))
        return taps


class ResNetBackbone(StagedBackbone):
    """A timm ResNet trunk (``body``) without classifier: root = conv1-bn1-act1-maxpool, stages = layer1..layer4."""

    def parts(self):
        b = self.body
        return (lambda x: b.maxpool(b.act1(b.bn1(b.conv1(x))))), (b.layer1, b.layer2, b.layer3, b.layer4), nn.Identity()


def _stage_units(cfg: ModelConfig, name: str, default: Sequence[int]) -> Tuple[int, ...]:
    """``model.stage_units`` when set (checked to have as many stages as ``default``), else the name's ``default``."""
    if cfg.stage_units is None:
        return tuple(default)
    if len(cfg.stage_units) != len(default):
        raise ConfigError(f"model.stage_units for model.backbone={name} needs {len(default)} values "
                          f"(the name's are {list(default)}), got {list(cfg.stage_units)}")
    return tuple(int(u) for u in cfg.stage_units)


def build_resnet(name: str, cfg: ModelConfig, *, image_size: int, in_chans: int = 3,
                 device: Optional[torch.device | str] = None) -> ResNetBackbone:
    """A width-``cfg.width`` ResNet (every stage and the stem widened) with the stem chosen by :func:`select_stem`.

    ``model.stage_units`` overrides the units per stage, ``model.last_relu=false`` removes the ReLU after the last
    unit's addition (Revisiting's "ResNet50 v1 (-)"), and ``model.stem=patch_task`` is Revisiting's override for 64 px
    patches: root conv stride 1 (max-pool kept) and stage 4 stride 1, a total stride of 8.
    """
    _refuse_options(cfg, name, "patch_size", "drop_path_rate")
    block, layers = RESNET_SPECS[name]
    layers = _stage_units(cfg, name, layers)
    stem = select_stem(cfg, image_size, family=name, patch_task=True)
    norm = norm_layer(cfg.norm)
    channels = tuple(scale_width(c, cfg.width) for c in (64, 128, 256, 512))
    stem_width = scale_width(64, cfg.width)
    net = ResNet(block, layers, num_classes=0, in_chans=in_chans, global_pool="avg", channels=channels,
                 norm_layer=norm, device=device)
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


register_family(RESNET_SPECS, build_resnet,
                lambda name: f"{name} (timm ResNet, {RESNET_SPECS[name][0].__name__}, stages {RESNET_SPECS[name][1]}).")


# --------------------------------------------------------------------------------------------------------------------
# Small CPU convnets
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvNetSpec:
    """Conv3x3-norm-ReLU layers of ``widths`` (scaled by ``model.width``) and ``strides``, then global average pooling."""

    widths: Tuple[int, ...]
    strides: Tuple[int, ...]


# Training step (forward + backward + SGD momentum) on this project's 2-core CPU, torch.set_num_threads(2),
# channels_last, batch 256, 32x32 RGB, BatchNorm, median of 7 steps, machine otherwise idle (other processes on the
# two cores cut these 2-5x):
#   convnet_tiny  (32,64,128,256) strides (1,2,2,2):  ~1400 img/s (28 px: ~1900; GroupNorm ~1400),
#                 0.39M parameters, 256 features.
#   convnet_small (32,64,64,128,128,256,256) strides (1,2,1,2,1,2,1): ~700 img/s, 1.16M parameters, 256 features.
# Alternatives measured: 64-128-256-512 s1222 ~460 img/s; 32-64-128-256 s2122 ~2100 img/s (8x8 at the end, coarser);
# for reference ResNet-18 with the small stem runs ~35 img/s.
CONVNET_SPECS: Dict[str, ConvNetSpec] = {
    "convnet_tiny": ConvNetSpec(widths=(32, 64, 128, 256), strides=(1, 2, 2, 2)),
    "convnet_small": ConvNetSpec(widths=(32, 64, 64, 128, 128, 256, 256), strides=(1, 2, 1, 2, 1, 2, 1)),
}


def _conv_norm_act(cin: int, cout: int, stride: int, norm: Callable[..., nn.Module], device) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False, device=device),
        norm(cout, device=device),
        nn.ReLU(inplace=True),
    )


def build_convnet(name: str, cfg: ModelConfig, *, image_size: int, in_chans: int = 3,
                  device: Optional[torch.device | str] = None) -> Backbone:
    """A :class:`ConvNetSpec` stack. The ``imagenet`` stem makes the first conv stride 2 and adds a 3x3/2 max-pool.

    Convs are kaiming-normal (fan_in, ReLU gain: He et al. 2015, keeps activations O(1) also without normalisation);
    norm weights 1, biases 0.
    """
    _refuse_options(cfg, name, "patch_size", "drop_path_rate", "stage_units", "last_relu")
    spec = CONVNET_SPECS[name]
    stem = select_stem(cfg, image_size, family=name)
    norm = norm_layer(cfg.norm)
    widths = [scale_width(c, cfg.width) for c in spec.widths]
    layers: List[Tuple[str, nn.Module]] = []
    cin = in_chans
    reduction = 1
    for i, (cout, stride) in enumerate(zip(widths, spec.strides)):
        if i == 0 and stem == "imagenet":
            stride = 2
        layers.append((f"conv{i}", _conv_norm_act(cin, cout, stride, norm, device)))
        reduction *= stride
        if i == 0 and stem == "imagenet":
            layers.append(("maxpool", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)))
            reduction *= 2
        cin = cout
    body = nn.Sequential(OrderedDict(layers))
    for m in body.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    return Backbone(body, name=name, num_features=widths[-1], stem=stem, norm=cfg.norm, reduction=reduction)


register_family(CONVNET_SPECS, build_convnet,
                lambda name: f"{name}: conv3x3-norm-ReLU, widths {CONVNET_SPECS[name].widths}, "
                             f"strides {CONVNET_SPECS[name].strides}.")


# --------------------------------------------------------------------------------------------------------------------
# MobileNetV2 (timm EfficientNet builder)
# --------------------------------------------------------------------------------------------------------------------

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


def norm_act_layer(kind: str, act: Callable[..., nn.Module] = nn.ReLU) -> Callable[..., nn.Module]:
    """timm's norm+act slot for ``model.norm``: ``Sequential(norm=norm_layer(kind)(C), act=act())``, act left out when
    timm asks for ``apply_act=False`` (MobileNetV2's linear bottlenecks, a ResNet-v2's final norm without ReLU).

    timm's own ``BatchNormAct2d`` is not used: it subclasses BatchNorm2d, so ``nn.SyncBatchNorm.convert_sync_batchnorm``
    (multi-GPU DDP) would replace it by a SyncBatchNorm that never calls the activation. Keeping the norm a child module
    makes the conversion swap the norm only. (timm passes plain functions through ``get_norm_act_layer`` unchanged.)
    """
    norm = norm_layer(kind)

    def norm_act(num_channels: int, apply_act: bool = True, inplace: bool = True, device=None,
                 dtype=None, **_: object) -> nn.Sequential:
        layers: List[Tuple[str, nn.Module]] = [("norm", norm(num_channels, device=device, dtype=dtype))]
        if apply_act:
            layers.append(("act", act(inplace=inplace)))
        return nn.Sequential(OrderedDict(layers))

    return norm_act


def build_mobilenetv2(cfg: ModelConfig, *, image_size: int, in_chans: int = 3,
                      device: Optional[torch.device | str] = None) -> Backbone:
    """MobileNetV2 with channel multiplier ``cfg.width``; see the module docstring for the stems and the norms."""
    _refuse_options(cfg, "mobilenetv2", "patch_size", "stage_units", "last_relu")
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


register_backbone("mobilenetv2")(build_mobilenetv2)


# --------------------------------------------------------------------------------------------------------------------
# Vision transformers (timm)
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViTSpec:
    """A ViT size: patch side, embedding width, number of blocks and attention heads (MLP ratio 4, qkv bias)."""

    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int


VIT_SPECS: Dict[str, ViTSpec] = {
    "vit_tiny_16": ViTSpec(patch_size=16, embed_dim=192, depth=12, num_heads=3),
    "vit_tiny_32": ViTSpec(patch_size=32, embed_dim=192, depth=12, num_heads=3),
    "vit_small_16": ViTSpec(patch_size=16, embed_dim=384, depth=12, num_heads=6),
}


class ViTBackbone(Backbone):
    """A timm ViT without classifier. ``forward`` is the class token after the final LayerNorm (pre-logits), **not** the
    mean of the feature map; ``forward_features`` is the map of patch tokens ``(B, embed_dim, H/p, W/p)``.

    ``dynamic_img_size`` is on: the learned position embedding (a grid for the ``image_size`` the backbone was built
    for) is resampled bicubically to the grid of each input, so global and local views of different sizes share one
    module. Input sides must be multiples of the patch size, else a :class:`~selfsup.errors.ConfigError` names them. We do
    not use timm's ``dynamic_img_pad``: its partly zero border patches are unlike any patch of the other view sizes, and
    every size SSLight uses (224, 96, 128 with patches 16 and 32) divides anyway.
    """

    body: VisionTransformer

    def _check_size(self, x: torch.Tensor) -> None:
        p = self.reduction
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ConfigError(f"model.backbone={self.name} needs inputs whose sides are multiples of the patch size "
                              f"{p}, got {x.shape[-2]}x{x.shape[-1]} (change the view sizes or model.patch_size)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_size(x)
        tokens = self.body.forward_features(x)[:, self.body.num_prefix_tokens:]
        h, w = x.shape[-2] // self.reduction, x.shape[-1] // self.reduction
        return tokens.transpose(1, 2).reshape(x.shape[0], self.num_features, h, w)

    def forward_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [self.forward_features(x)]  # one resolution: the patch-token grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_size(x)
        return self.pre_logits(self.body(x))

    @property
    def tap_names(self) -> Tuple[str, ...]:  # type: ignore[override]
        return tuple(f"block{i + 1}" for i in range(len(self.body.blocks))) + ("pre_logits",)

    def forward_taps(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """The class token after every block, each through the final LayerNorm (DINO's ``get_intermediate_layers``),
        and ``pre_logits`` (equal to ``forward(x)``)."""
        self._check_size(x)
        b = self.body
        x = b.norm_pre(b.patch_drop(b._pos_embed(b.patch_embed(x))))
        taps: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        for i, block in enumerate(b.blocks):
            x = block(x)
            taps[f"block{i + 1}"] = b.norm(x)[:, 0]
        taps["pre_logits"] = self.pre_logits(b.forward_head(b.norm(x), pre_logits=True))
        return taps


class LastBlocksTokens(nn.Module):
    """``eval.vit_last_blocks = n``: a ViT's representation as the class tokens of its last ``n`` blocks (each through
    the final LayerNorm), concatenated in block order, ``n * embed_dim`` features (DINO's and SSLight's linear
    evaluation of ViT-Ti/S uses n = 4)."""

    def __init__(self, backbone: ViTBackbone, n: int) -> None:
        super().__init__()
        depth = len(backbone.body.blocks)
        if not 1 <= n <= depth:
            raise ConfigError(f"eval.vit_last_blocks={n}: model.backbone={backbone.name} has {depth} blocks")
        self.backbone, self.n = backbone, n
        self.names = [f"block{i + 1}" for i in range(depth - n, depth)]
        self.num_features = n * backbone.body.embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = self.backbone.forward_taps(x)
        return torch.cat([taps[name] for name in self.names], dim=1)


def build_vit(name: str, cfg: ModelConfig, *, image_size: int, in_chans: int = 3,
              device: Optional[torch.device | str] = None) -> ViTBackbone:
    """A :data:`VIT_SPECS` ViT whose position embedding has the grid of ``image_size`` (see :class:`ViTBackbone`)."""
    _refuse_options(cfg, name, "width", "stage_units", "last_relu")
    spec = VIT_SPECS[name]
    patch = cfg.patch_size if cfg.patch_size is not None else spec.patch_size
    if image_size % patch:
        raise ConfigError(f"image size {image_size} is not a multiple of the patch size {patch} of "
                          f"model.backbone={name}; set model.patch_size to a divisor of {image_size}")
    net = VisionTransformer(img_size=image_size, patch_size=patch, in_chans=in_chans, num_classes=0,
                            global_pool="token", embed_dim=spec.embed_dim, depth=spec.depth, num_heads=spec.num_heads,
                            dynamic_img_size=True, drop_path_rate=cfg.drop_path_rate, device=device)
    return ViTBackbone(net, name=name, num_features=spec.embed_dim, stem="patch", norm="layer", reduction=patch)


register_family(VIT_SPECS, build_vit, lambda name: f"{name}: timm VisionTransformer, {VIT_SPECS[name]}.")


# Revisiting's families (ResNet50 v2, RevNet50, VGG19-BN) register themselves on import.
from selfsup.models import revisiting as _revisiting  # noqa: E402,F401  (imports this module's names)
