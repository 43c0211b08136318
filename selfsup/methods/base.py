"""What every method is: its views, its networks, and a loss over view pairs.

A method is an ``nn.Module`` built from a :class:`~selfsup.config.Config`. It declares

* which views it wants (``cfg.views``; the engine samples them and hands over a :class:`~selfsup.data.views.Views`);
* its networks (``self.backbone`` is the online encoder that the probes evaluate; EMA targets, heads, prototypes...);
* ``forward(views, ctx) -> StepOutput``: the training step, returning the loss, values to log and the detached backbone
  features of the large views (for the engine's online classifier). It is ``forward`` so that DDP's gradient hooks run
  when the engine calls the wrapped module;
* ``ema_pairs()`` and ``ema``: which target networks follow which online networks, and on what momentum schedule. The
  engine applies the update after each optimiser step (the method only declares it);
* ``on_after_backward(ctx)``: edit gradients before the optimiser step (SwAV's prototypes and DINO's last layer are
  frozen during the first epoch by dropping their gradients);
* ``after_optimizer_step(ctx)``: other updates outside the gradient (queues), returning values to log.

The engine owns everything else (optimiser, schedules, devices, checkpoints), so a method file reads top to bottom.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type, TypeVar

import torch
from torch import Tensor, nn

from selfsup.config import Config
from selfsup.errors import ConfigError
from selfsup.method_args import register_method_args
from selfsup.models.base import Backbone


@dataclass
class StepContext:
    """Where the run is: the optimiser step being computed (0-based), the schedule length, and the method's randomness.

    ``generator`` is a CPU generator seeded from (seed, step); every DDP rank holds the same one, so random choices over
    the global batch (e.g. RELICv2's negatives) are identical on all ranks and after a resume.
    """

    step: int
    total_steps: int
    epoch: int
    generator: torch.Generator
    steps_per_epoch: int = 1

    @property
    def epoch_float(self) -> float:
        """Fractional epoch ``step / steps_per_epoch`` (for per-iteration schedules written in epochs)."""
        return self.step / max(self.steps_per_epoch, 1)


@dataclass
class EMASpec:
    """A target network's momentum schedule: "cosine" goes from ``base`` to 1 (BYOL/RELICv2, A2); "constant" stays."""

    base: float
    schedule: str = "cosine"


@dataclass
class StepOutput:
    """The step's loss, values to log, and ``features``: the online backbone's pooled features of this process's large
    views, detached, concatenated view after view ``(L * B, F)``, for the engine's online classifier (None: no
    monitoring)."""

    loss: Tensor
    logs: Dict[str, float] = field(default_factory=dict)
    features: Optional[Tensor] = None


class Method(nn.Module):
    """Base class: holds the config and the online backbone; subclasses add heads, targets and the loss."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.args = cfg.method

    ema: EMASpec | None = None
    backbone: Backbone  # the online encoder, built by each subclass (what the probes evaluate)

    @classmethod
    def input_size(cls, cfg: Config) -> int:
        """The image size the backbone is built for (it picks the stem under ``model.stem=auto``): the large views'."""
        return cfg.views.large.size

    @classmethod
    def wrap_representation(cls, cfg: Config, backbone: Backbone) -> nn.Module:
        """The module whose output the probes evaluate, around a (trained) backbone: the backbone itself, except for
        methods whose representation is not one forward pass of the image (Jigsaw/RPL average over 9 patches)."""
        return backbone

    def representation(self) -> nn.Module:
        """:meth:`wrap_representation` of this method's online backbone (what the engine's kNN monitor embeds with)."""
        return type(self).wrap_representation(self.cfg, self.backbone)

    def forward(self, views, ctx: StepContext) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def ema_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        """(online, target) module pairs that the engine moves by EMA after each optimiser step."""
        return []

    def on_after_backward(self, ctx: StepContext) -> None:
        """Called between ``backward`` and the optimiser step (gradients are already averaged over processes)."""

    @torch.no_grad()
    def after_optimizer_step(self, ctx: StepContext) -> Dict[str, float]:
        return {}


def require_large_views_only(cfg: Config, method: str) -> None:
    """Config check of the pretext tasks, which take their inputs from the large views only (small views would be
    sampled and silently wasted)."""
    if cfg.views.small.count:
        raise ConfigError(f"method {method} uses the large views only; set views.small.count=0 "
                          f"(got {cfg.views.small.count})")


def drop_gradients(module: nn.Module) -> None:
    """Set every gradient of ``module`` to None, so the optimiser leaves it (and its momentum) untouched this step."""
    for p in module.parameters():
        p.grad = None


def frozen_copy(module: nn.Module) -> nn.Module:
    """A target network: a deep copy that takes no gradient (it moves only by EMA)."""
    import copy

    return copy.deepcopy(module).requires_grad_(False)


def forward_by_resolution(net: Callable[[Tensor], Tensor], views: Sequence[Tensor]) -> List[Tensor]:
    """Run ``net`` once on all views of the same resolution (DINO's MultiCropWrapper idea) and split the result.

    Views of one group share a size, so one batched forward replaces one forward per crop; BatchNorm then normalises
    over all those views together, as in DINO and SSLight.
    """
    if not views:
        return []
    out = net(torch.cat(list(views), dim=0))
    return list(out.chunk(len(views), dim=0))


def detached_features(features: Sequence[Tensor]) -> Optional[Tensor]:
    """The large views' backbone features, one ``(B, F)`` tensor per view, as :attr:`StepOutput.features`."""
    return torch.cat([f.detach() for f in features], dim=0) if features else None


#: method name -> its :class:`Method` class (its arguments dataclass is in :data:`selfsup.method_args.METHOD_ARGS`)
METHODS: Dict[str, Type[Method]] = {}

_M = TypeVar("_M", bound=Method)


def register_method(name: str, *, args: type):
    """Class decorator: make a method selectable with ``method.name=<name>``, with ``args`` (its arguments dataclass,
    defined in the method's file) as the schema of its ``method.*`` keys
    (:func:`~selfsup.method_args.register_method_args`). One name, one decorator, both registries."""

    def wrap(cls: Type[_M]) -> Type[_M]:
        register_method_args(name, args)
        METHODS[name] = cls
        return cls

    return wrap


def _method_class(cfg: Config) -> Type[Method]:
    # every method is registered: importing this module ran ``selfsup/methods/__init__.py``, which imports them all
    return METHODS.get(getattr(cfg.method, "name", None) or "", Method)


def representation_of(cfg: Config, backbone: Backbone) -> nn.Module:
    """``cfg.method``'s :meth:`Method.wrap_representation` of ``backbone`` (eval code that loads a bare backbone)."""
    return _method_class(cfg).wrap_representation(cfg, backbone)


def backbone_input_size(cfg: Config) -> int:
    """``cfg.method``'s :meth:`Method.input_size`: the image size its backbone is built for."""
    return _method_class(cfg).input_size(cfg)


def build_method(cfg: Config) -> Method:
    name = cfg.method.name
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'; available: {', '.join(sorted(METHODS))}")
    return METHODS[name](cfg)
