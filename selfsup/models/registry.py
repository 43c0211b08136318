"""Backbone registry: the encoder f whose pooled output is the representation the probes evaluate, built by name.

As timm's ``create_model``: every family module registers its names with :func:`register_backbone` (one builder) or
:func:`register_family` (one builder for a table of names), and :func:`create_backbone` builds ``model.backbone`` from a
:class:`~selfsup.config.ModelConfig`. This module imports no family; :mod:`selfsup.models` (its ``__init__``) imports
every family module, so importing anything from ``selfsup.models`` registers them all.

Registered families (see each module's docstring)

* :mod:`selfsup.models.resnet`: ``resnet18/34/50/101/152/200`` and ``resnet50v1`` (timm's ResNet v1, widened by
  ``model.width``).
* :mod:`selfsup.models.convnet`: ``convnet_tiny`` / ``convnet_small``, plain conv3x3-norm-ReLU stacks for CPU runs.
* :mod:`selfsup.models.mobilenet`: ``mobilenetv2`` (timm's EfficientNet builder; SSLight's main backbone).
* :mod:`selfsup.models.vit`: ``vit_tiny_16``, ``vit_tiny_32``, ``vit_small_16`` (timm's VisionTransformer).
* :mod:`selfsup.models.revisiting`: ``resnet50v2``, ``revnet50``, ``vgg19bn`` (Kolesnikov et al. 2019).
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, cast

import torch

from selfsup.config import ModelConfig
from selfsup.errors import ConfigError
from selfsup.models.base import Backbone, did_you_mean

__all__ = ["BackboneBuilder", "FamilyBuilder", "register_backbone", "register_family", "list_backbones",
           "create_backbone"]

BackboneBuilder = Callable[..., Backbone]  # builder(cfg, *, image_size, in_chans, device)
FamilyBuilder = Callable[..., Backbone]  # build(name, cfg, *, image_size, in_chans, device)
_REGISTRY: Dict[str, BackboneBuilder] = {}


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator: register ``builder(cfg, *, image_size, in_chans, device) -> Backbone`` under ``name``."""

    def wrap(builder: BackboneBuilder) -> BackboneBuilder:
        if name in _REGISTRY and _REGISTRY[name] is not builder:
            raise ValueError(f"backbone '{name}' is already registered")
        _REGISTRY[name] = builder
        return builder

    return wrap


def register_family(names: Iterable[str], describe: Callable[[str], str]) -> Callable[[FamilyBuilder], FamilyBuilder]:
    """Decorator: register ``build(name, cfg, *, image_size, in_chans, device)`` under every name of a family (ResNets,
    ViTs, ...); ``build`` itself is returned unchanged.

    ``describe(name)`` becomes the registered builder's docstring.
    """

    def wrap(build: FamilyBuilder) -> FamilyBuilder:
        for name in names:
            register_backbone(name)(_named_builder(name, build, describe(name)))
        return build

    return wrap


def _named_builder(name: str, build: FamilyBuilder, doc: str) -> BackboneBuilder:
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
        raise ConfigError(f"unknown model.backbone '{cfg.backbone}'{did_you_mean(cfg.backbone, list(_REGISTRY))}; "
                          f"available: {', '.join(list_backbones())}")
    if image_size < 1:
        raise ConfigError(f"image size must be > 0 to build model.backbone={cfg.backbone}, got {image_size}")
    backbone = _REGISTRY[cfg.backbone](cfg, image_size=image_size, in_chans=in_chans, device=device)
    backbone.standard_layout = cfg.stage_units is None and cfg.last_relu and cfg.representation_dim is None
    if cfg.representation_dim is not None:
        backbone.set_representation_dim(cfg.representation_dim)
        if device is not None:
            cast(torch.nn.Module, backbone.rep_layer).to(device)  # set just above
    return backbone

