"""Export: the timm and torchvision layouts load into those libraries' models and give the same features; refusals
are one line."""

import json

import pytest
import torch
from safetensors.torch import load_file

from selfsup.config import ModelConfig
from selfsup.errors import ConfigError
from selfsup.models.export import build_target, export_state
from selfsup.models.registry import create_backbone
from tests.conftest import TINY, run_cli


def _backbone(name, size=64, **kw):
    torch.manual_seed(0)
    return create_backbone(ModelConfig(backbone=name, stem="imagenet", **kw), image_size=size).eval()


def test_resnet18_loads_into_torchvision_and_timm_with_equal_features():
    bb = _backbone("resnet18")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = bb(x)
        for fmt in ("torchvision", "timm"):
            tensors, meta = export_state(bb, fmt)
            target = build_target(meta).eval()
            if fmt == "torchvision":
                missing, unexpected = target.load_state_dict(tensors, strict=False)
                assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
                target.fc = torch.nn.Identity()
            else:
                target.load_state_dict(tensors, strict=True)
            assert torch.allclose(target(x), ours, atol=1e-5), fmt


def test_mobilenetv2_and_vit_load_into_timm():
    x = torch.randn(2, 3, 64, 64)
    for name, kw in (("mobilenetv2", {}), ("vit_tiny_16", {})):
        bb = _backbone(name, **kw)
        tensors, meta = export_state(bb, "timm", image_size=64)
        target = build_target(meta).eval()
        target.load_state_dict(tensors, strict=True)
        with torch.no_grad():
            assert torch.allclose(target(x), bb(x), atol=1e-5), name
    assert json.loads(meta["timm_kwargs"])["img_size"] == 64


def test_refusals_name_the_reason():
    small = create_backbone(ModelConfig(backbone="resnet18", stem="small"), image_size=32)
    with pytest.raises(ConfigError, match="needs the ImageNet stem.*stem=small"):
        export_state(small, "timm")
    with pytest.raises(ConfigError, match="torchvision export covers the ResNets only"):
        export_state(_backbone("mobilenetv2"), "torchvision")
    tiny = create_backbone(ModelConfig(backbone="convnet_tiny"), image_size=32)
    with pytest.raises(ConfigError, match="no timm or torchvision counterpart"):
        export_state(tiny, "timm")
    assert set(export_state(tiny, "selfsup")[0]) == set(tiny.state_dict())


@pytest.mark.slow
def test_cli_export(tmp_path):
    run = tmp_path / "run"
    over = [o for o in TINY if not o.startswith("model.")] + ["model.backbone=resnet18", "model.stem=imagenet",
                                                               "train.steps=1"]
    r = run_cli("pretrain", *over, f"out={run}")
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "r18_tv.safetensors"
    r = run_cli("export", "-c", str(run), "--format", "torchvision", "--out", str(out))
    assert r.returncode == 0 and "torchvision.models.resnet18" in r.stdout, r.stderr[-2000:]
    import torchvision

    m = torchvision.models.resnet18(weights=None)
    missing, _ = m.load_state_dict(load_file(str(out)), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"]
    r = run_cli("export", "-c", str(run), "--format", "timm", "--out", str(tmp_path / "x.pt"))
    assert r.returncode == 2 and "is a .safetensors file" in r.stderr
