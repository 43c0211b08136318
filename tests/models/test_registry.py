"""The backbone registry (timm's pattern): builders register themselves by decorator, ``create_backbone`` builds a
``ModelConfig`` by name, importing any part of ``selfsup.models`` registers every family, and there is no import circle
(registry and base import no family)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
import torch
import torch.nn as nn

import selfsup.models
from selfsup.config import ModelConfig
from selfsup.errors import ConfigError
from selfsup.models.base import Backbone, norm_layer, refuse_options, scale_width, select_stem
from selfsup.models.registry import create_backbone, list_backbones, register_backbone, register_family

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = Path(selfsup.models.__file__).parent
FAMILIES = ("convnet", "mobilenet", "resnet", "revisiting", "vit")


@register_backbone("toy_test_conv")
def build_toy(cfg: ModelConfig, *, image_size: int, in_chans: int = 3,
              device: Optional[torch.device | str] = None) -> Backbone:
    """A backbone defined outside selfsup: one conv3x3-norm-ReLU of 8w channels."""
    refuse_options(cfg, "toy_test_conv", "patch_size", "drop_path_rate", "stage_units", "last_relu")
    width = scale_width(8, cfg.width)
    body = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1, bias=False, device=device),
                         norm_layer(cfg.norm)(width, device=device), nn.ReLU())
    return Backbone(body, name="toy_test_conv", num_features=width, stem=select_stem(cfg, image_size), norm=cfg.norm,
                    reduction=1)


TOY_SIZES = {"toy_test_family_a": 4, "toy_test_family_b": 6}


@register_family(TOY_SIZES, lambda name: f"{name}: {TOY_SIZES[name]} channels.")
def build_toy_family(name: str, cfg: ModelConfig, *, image_size: int, in_chans: int = 3,
                     device: Optional[torch.device | str] = None) -> Backbone:
    body = nn.Conv2d(in_chans, TOY_SIZES[name], 1, device=device)
    return Backbone(body, name=name, num_features=TOY_SIZES[name], stem="small", norm=cfg.norm, reduction=1)


def test_a_backbone_registered_in_a_test_module_builds_through_model_config():
    assert "toy_test_conv" in list_backbones()
    b = create_backbone(ModelConfig(backbone="toy_test_conv", width=2.0, norm="group", representation_dim=5), 16)
    assert isinstance(b, Backbone) and b.name == "toy_test_conv" and b.stem == "small"
    assert isinstance(b.body[1], nn.GroupNorm) and b.body[0].out_channels == 16
    assert b(torch.randn(3, 3, 16, 16)).shape == (3, 5)  # the registry adds representation_dim's linear layer
    assert b.standard_layout is False
    with pytest.raises(ConfigError, match="model.patch_size does not apply to model.backbone=toy_test_conv"):
        create_backbone(ModelConfig(backbone="toy_test_conv", patch_size=4), 16)
    with pytest.raises(ConfigError, match="did you mean 'toy_test_conv'"):
        create_backbone(ModelConfig(backbone="toy_test_cnv"), 16)


def test_register_family_registers_every_name_and_returns_the_builder():
    assert build_toy_family.__name__ == "build_toy_family"  # the decorator hands the function back unchanged
    for name, channels in TOY_SIZES.items():
        b = create_backbone(ModelConfig(backbone=name), 8)
        assert b.name == name and b(torch.randn(2, 3, 8, 8)).shape == (2, channels)
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("toy_test_conv")(lambda cfg, **kw: None)


def _module_imports(path: Path):
    """(module-level statement index, imported module) for every ``import``/``from`` at module level."""
    tree = ast.parse(path.read_text())
    for i, node in enumerate(tree.body):
        if isinstance(node, ast.Import):
            yield from ((i, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield from ((i, f"{node.module}.{a.name}") for a in node.names)


def test_no_import_circle_registry_and_base_import_no_family():
    for low in ("registry.py", "base.py"):
        for _, name in _module_imports(MODELS / low):
            assert not any(name.startswith(f"selfsup.models.{f}") for f in FAMILIES), f"{low} imports {name}"
    for family in FAMILIES:
        for _, name in _module_imports(MODELS / f"{family}.py"):
            others = [f for f in FAMILIES if f != family]
            assert not any(name.startswith(f"selfsup.models.{f}") for f in others), f"{family}.py imports {name}"


def test_imports_come_first_in_every_models_module():
    """No module imports at its bottom: every module-level import precedes the first other statement."""
    for path in MODELS.glob("*.py"):
        tree = ast.parse(path.read_text())
        body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        kinds = [isinstance(n, (ast.Import, ast.ImportFrom)) for n in body]
        first_other = kinds.index(False) if False in kinds else len(kinds)
        assert all(kinds[:first_other]) and not any(kinds[first_other:]), f"{path.name} imports below its code"


def test_importing_the_registry_alone_registers_every_family():
    code = "import selfsup.models.registry as r; print(','.join(r.list_backbones()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=MODELS.parent.parent, env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout.strip().split(",")
    assert out == ["convnet_small", "convnet_tiny", "mobilenetv2", "resnet101", "resnet152", "resnet18", "resnet200",
                   "resnet34", "resnet50", "resnet50v1", "resnet50v2", "revnet50", "vgg19bn", "vit_small_16",
                   "vit_tiny_16", "vit_tiny_32"]
