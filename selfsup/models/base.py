"""What every backbone family shares: the :class:`Backbone` contract, the ResNet-layout :class:`StagedBackbone`, the
normalisation layers of ``model.norm``, and the option helpers (stems, widths, refused options, units per stage).

Every backbone is a :class:`Backbone`: ``forward(x)`` returns the globally average-pooled pre-logits representation
``(B, num_features)`` (ViTs: the class token), ``forward_features(x)`` the last feature map ``(B, num_features, h, w)``
(ViTs: the patch tokens as a grid). The families live one per module (:mod:`selfsup.models.resnet`,
:mod:`~selfsup.models.convnet`, :mod:`~selfsup.models.mobilenet`, :mod:`~selfsup.models.vit`,
:mod:`~selfsup.models.revisiting`) and register their names in :mod:`selfsup.models.registry`.

Options a family does not use (``model.patch_size`` for CNNs, ``model.drop_path_rate`` for the ResNets and convnets,
``model.width`` for ViTs) raise a :class:`~selfsup.errors.ConfigError` when set, rather than being silently ignored
(:func:`refuse_options`).

Stem (``model.stem``) is chosen from the **input size**, never from the dataset name: ``imagenet`` is the 7x7/2 conv
plus 3x3/2 max-pool (total reduction 4 before stage 1), ``small`` is a 3x3 stride-1 conv without max-pool (the usual
CIFAR stem), ``auto`` takes ``small`` when ``image_size <= model.small_stem_max_size`` and ``imagenet`` otherwise. The
convnets follow the same rule: their ``imagenet`` stem makes the first conv stride 2 and adds the 3x3/2 max-pool.

Normalisation (``model.norm``):

* ``batch``: :class:`torch.nn.BatchNorm2d`.
* ``group``: :class:`GroupNorm2d`, with :func:`group_count` groups: the largest divisor of C that is at most
  ``min(32, C // 2)`` (Wu & He 2018 use 32 groups; the cap keeps at least 2 channels per group for narrow layers, and
  taking a divisor makes every width valid).
* ``none``: :class:`ChannelAffine`, a per-channel scale and bias with no statistics at all. It plays the role of the
  conv bias, and because it has a ``weight`` the last one of each residual branch is zero-initialised by timm's
  ``zero_init_last``, so deep no-norm ResNets start as identity maps and train (SkipInit, De & Smith 2020).

``group`` and ``none`` make a training step independent of how a batch is split over processes (BatchNorm statistics are
per process), which the DDP equivalence test relies on.

All backbones accept channels_last inputs and any input size (the pooling is global; 8 px and up is tested), except that
ViT inputs must be multiples of the patch size.
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from dataclasses import fields
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from selfsup.config import ModelConfig
from selfsup.errors import ConfigError

__all__ = [
    "Backbone",
    "StagedBackbone",
    "NORMS",
    "ChannelAffine",
    "GroupNorm2d",
    "group_count",
    "norm_layer",
    "norm_act_layer",
    "select_stem",
    "scale_width",
    "did_you_mean",
    "refuse_options",
    "stage_units",
]

# --------------------------------------------------------------------------------------------------------------------
# Normalisation layers
# --------------------------------------------------------------------------------------------------------------------


def group_count(channels: int, max_groups: int = 32) -> int:
    """Number of GroupNorm groups for ``channels``: the largest divisor of C not above
    ``min(max_groups, C // 2)`` (>= 1)."""
    target = max(1, min(max_groups, channels // 2))
    for g in range(target, 0, -1):
        if channels % g == 0:
            return g
    return 1


class GroupNorm2d(nn.GroupNorm):
    """GroupNorm with the group count taken from :func:`group_count`, constructible as ``norm(num_channels)``
    like BN."""

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
    raise ConfigError(f"model.norm must be one of {', '.join(NORMS)}; got '{kind}'{did_you_mean(kind, NORMS)}")


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


# --------------------------------------------------------------------------------------------------------------------
# Option helpers
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
                          f"{did_you_mean(str(cfg.stem), ('auto', *stems))}")
    return cfg.stem


def scale_width(channels: int, width: float) -> int:
    """``round(channels * width)``, at least 1: the channel count of a stage under ``model.width``."""
    return max(1, int(round(channels * width)))


def did_you_mean(word: str, options: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options`` to ``word``, or an empty string."""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def refuse_options(cfg: ModelConfig, name: str, *options: str) -> None:
    """ConfigError if one of ``options`` (ModelConfig fields) is set away from its default: ``name`` does not use it."""
    defaults = {f.name: f.default for f in fields(ModelConfig)}
    for option in options:
        if getattr(cfg, option) != defaults[option]:
            raise ConfigError(f"model.{option} does not apply to model.backbone={name} "
                              f"(leave it at {defaults[option]}); got {getattr(cfg, option)}")


def stage_units(cfg: ModelConfig, name: str, default: Sequence[int]) -> Tuple[int, ...]:
    """``model.stage_units`` when set (checked to have as many stages as ``default``), else the name's ``default``."""
    if cfg.stage_units is None:
        return tuple(default)
    if len(cfg.stage_units) != len(default):
        raise ConfigError(f"model.stage_units for model.backbone={name} needs {len(default)} values "
                          f"(the name's are {list(default)}), got {list(cfg.stage_units)}")
    return tuple(int(u) for u in cfg.stage_units)


# --------------------------------------------------------------------------------------------------------------------
# Base classes
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
