"""Export a selfsup backbone for downstream code: its own safetensors, or the state dict of the timm or torchvision
model of the same architecture (for detection or segmentation frameworks built on those).

Formats (all safetensors; the metadata names the target model and how to build it):

``selfsup``
    The backbone's own state dict, as ``backbone.safetensors`` of a run (loads with ``selfsup eval --checkpoint``).
``timm``
    Keys of ``timm.create_model(metadata["timm_model"], num_classes=0, **json.loads(metadata["timm_kwargs"]))``,
    loadable with ``strict=True``. ResNets and MobileNetV2 need the ImageNet stem (``model.stem=imagenet``),
    ``model.width=1`` and BatchNorm, as timm's named models; ViTs carry their patch size and image size in the kwargs.
``torchvision``
    Keys of ``torchvision.models.<metadata["torchvision_model"]>()`` without its classifier (``fc``): load with
    ``strict=False``, which then reports exactly ``fc.weight`` and ``fc.bias`` missing. ResNets only, under the same
    conditions (torchvision's MobileNetV2 and ViT lay out their weights differently).

The selfsup CPU convnets (``convnet_*``) have no timm or torchvision counterpart: they export as ``selfsup`` only.
Every refusal is one :class:`~selfsup.errors.ConfigError` line saying why.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Tuple, cast

import torch
from torch import nn

from selfsup.errors import ConfigError
from selfsup.fileio import atomic_replace

FORMATS = ("selfsup", "timm", "torchvision")
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
TIMM_VIT_NAMES = {"vit_tiny_16": "vit_tiny_patch16_224", "vit_tiny_32": "vit_tiny_patch16_224",
                  "vit_small_16": "vit_small_patch16_224"}


def _standard(backbone: nn.Module, fmt: str, width: float) -> None:
    name = backbone.name
    if backbone.stem != "imagenet" or width != 1 or backbone.norm != "batch":
        raise ConfigError(f"{fmt} export of {name} needs the ImageNet stem, width 1 and BatchNorm, as {fmt}'s "
                          f"{name}; this backbone has stem={backbone.stem}, width={width:g}, norm={backbone.norm} "
                          "(export it as --format selfsup)")


def export_state(backbone: nn.Module, fmt: str, *, width: float = 1.0, image_size: int = 224
                 ) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """``(tensors, metadata)`` of ``backbone`` in format ``fmt`` (see the module docstring)."""
    if fmt not in FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(FORMATS)}; got '{fmt}'")
    name = getattr(backbone, "name", type(backbone).__name__)
    if fmt == "selfsup":
        return {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}, {"format": "selfsup"}
    if not getattr(backbone, "standard_layout", True):
        raise ConfigError(f"{fmt} export of {name} needs the network's own layout (no model.stage_units, "
                          "model.last_relu=true, no model.representation_dim); export it as --format selfsup")
    name = {"resnet50v1": "resnet50"}.get(name, name)  # Revisiting's name for the same network
    body = cast(nn.Module, backbone.body).state_dict()  # a Backbone's trunk
    tensors = {k: v.detach().contiguous().cpu() for k, v in body.items()}
    if name in TORCHVISION_RESNETS or name in ("resnet200",):
        _standard(backbone, fmt, width)
        if fmt == "torchvision" and name not in TORCHVISION_RESNETS:
            raise ConfigError(f"torchvision has no {name}; export it as --format timm or selfsup")
        meta = {"format": fmt, f"{fmt}_model": name}
        if fmt == "timm":
            meta["timm_kwargs"] = "{}"
        return tensors, meta
    if fmt == "torchvision":
        raise ConfigError(f"torchvision export covers the ResNets only; export {name} as --format timm or selfsup")
    if name == "mobilenetv2":
        _standard(backbone, fmt, width)
        # selfsup keeps each norm as Sequential(norm=..., act=...) (see base.norm_act_layer); timm's
        # BatchNormAct2d holds the BatchNorm parameters directly
        tensors = {re.sub(r"(bn\d)\.norm\.", r"\1.", k): v for k, v in tensors.items()}
        return tensors, {"format": "timm", "timm_model": "mobilenetv2_100", "timm_kwargs": "{}"}
    if name in TIMM_VIT_NAMES:
        body_net: Any = backbone.body  # a timm VisionTransformer (torch types it as Tensor | Module)
        patch = body_net.patch_embed.patch_size[0]
        kwargs = {"img_size": image_size, "patch_size": patch, "global_pool": "token", "dynamic_img_size": True}
        return tensors, {"format": "timm", "timm_model": TIMM_VIT_NAMES[name], "timm_kwargs": json.dumps(kwargs)}
    raise ConfigError(f"{name} has no timm or torchvision counterpart; export it as --format selfsup")


def save_export(path: Path, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str], option: str = "--out") -> None:
    """Write the export atomically (a temporary file beside ``path``, then renamed over it); a place that cannot be
    written is one :class:`ConfigError` line naming ``option``, and nothing partial is left behind (the temporary file
    is removed by the atomic write)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    meta = {k: str(v) for k, v in metadata.items()}
    try:
        atomic_replace(Path(path), lambda tmp: save_file(tensors, tmp, metadata=meta))
    except OSError as exc:
        raise ConfigError(f"{option} {path} cannot be written: {exc.strerror or exc}") from None
    except SafetensorError as exc:  # the library's own I/O errors (a full disk while writing)
        if "IoError" not in str(exc):
            raise
        raise ConfigError(f"{option} {path} cannot be written: {str(exc).splitlines()[0][:160]}") from None


def build_target(metadata: Dict[str, str]) -> nn.Module:
    """The timm or torchvision model an export's metadata names, randomly initialised, without classifier (timm) or
    with torchvision's own ``fc``: what a user builds before loading the exported weights."""
    fmt = metadata.get("format")
    if fmt == "timm":
        import timm

        return timm.create_model(metadata["timm_model"], pretrained=False, num_classes=0,
                                 **json.loads(metadata.get("timm_kwargs", "{}")))
    if fmt == "torchvision":
        import torchvision

        return getattr(torchvision.models, metadata["torchvision_model"])(weights=None)
    raise ConfigError(f"metadata format {fmt!r} names no timm or torchvision model")
