"""Backbone registry: shapes, stems, width multiplier parameter counts, norms, channels_last, errors."""

import pytest
import torch
import torch.nn as nn

from selfsup.config import ModelConfig
from selfsup.errors import ConfigError
from selfsup.models.base import Backbone, ChannelAffine, GroupNorm2d, group_count
from selfsup.models.registry import create_backbone, list_backbones, register_backbone
from tests.conftest import n_params

pytestmark = pytest.mark.usefixtures("one_thread")


def has_maxpool(m: nn.Module) -> bool:
    return any(isinstance(x, nn.MaxPool2d) for x in m.modules())


def test_registry_lists_all():
    names = list_backbones()
    for name in ["convnet_tiny", "convnet_small", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                 "resnet200"]:
        assert name in names
    assert names == sorted(names)


def test_unknown_name_has_hint_and_list():
    with pytest.raises(ConfigError) as err:
        create_backbone(ModelConfig(backbone="resnt50"), 32)
    msg = str(err.value)
    assert "did you mean 'resnet50'" in msg and "available:" in msg and "convnet_tiny" in msg
    assert "\n" not in msg


def test_bad_norm_is_config_error():
    with pytest.raises(ConfigError, match="model.norm"):
        create_backbone(ModelConfig(norm="layer"), 32)


def test_register_duplicate_name_refused():
    with pytest.raises(ValueError):
        register_backbone("resnet18")(lambda cfg, **kw: None)


@pytest.mark.parametrize("size", [8, 28, 32])
@pytest.mark.parametrize("name", ["convnet_tiny", "convnet_small", "resnet18"])
def test_small_input_shapes(name, size):
    b = create_backbone(ModelConfig(backbone=name), size)
    assert isinstance(b, Backbone) and b.name == name
    x = torch.randn(2, 3, size, size)
    fmap = b.forward_features(x)
    assert fmap.shape[:2] == (2, b.num_features)
    out = b(x)
    assert out.shape == (2, b.num_features)
    assert torch.allclose(out, fmap.mean((2, 3)), atol=1e-5)


def test_convnet_tiny_features_and_width():
    b = create_backbone(ModelConfig(), 32)
    assert b.num_features >= 128
    b2 = create_backbone(ModelConfig(width=2.0), 32)
    assert b2.num_features == 2 * b.num_features


@pytest.mark.parametrize("name", ["convnet_tiny", "resnet18"])
def test_224_input_real(name):
    b = create_backbone(ModelConfig(backbone=name), 224).eval()
    assert b.stem == "imagenet" and has_maxpool(b)
    with torch.no_grad():
        assert b(torch.randn(1, 3, 224, 224)).shape == (1, b.num_features)
    assert b.forward_features(torch.randn(1, 3, 224, 224)).shape[-1] == 224 // b.reduction


@pytest.mark.parametrize("name,features", [("resnet50", 2048), ("resnet200", 2048)])
def test_big_resnets_on_meta(name, features):
    b = create_backbone(ModelConfig(backbone=name), 224, device="meta")
    out = b(torch.empty(2, 3, 224, 224, device="meta"))
    assert out.shape == (2, features) and b.num_features == features


@pytest.mark.parametrize("size,stem", [(28, "small"), (32, "small"), (64, "small"), (65, "imagenet"), (96, "imagenet")])
def test_auto_stem_by_size(size, stem):
    for name in ("resnet18", "convnet_tiny"):
        b = create_backbone(ModelConfig(backbone=name, stem="auto"), size, device="meta")
        assert b.stem == stem
        assert has_maxpool(b) == (stem == "imagenet")


def test_auto_stem_threshold_and_forced():
    cfg = ModelConfig(backbone="resnet18", small_stem_max_size=100)
    assert create_backbone(cfg, 96, device="meta").stem == "small"
    b = create_backbone(ModelConfig(backbone="resnet18", stem="imagenet"), 32, device="meta")
    assert b.stem == "imagenet" and b.body.conv1.kernel_size == (7, 7) and b.body.conv1.stride == (2, 2)
    b = create_backbone(ModelConfig(backbone="resnet18", stem="small"), 224, device="meta")
    assert b.body.conv1.kernel_size == (3, 3) and b.body.conv1.stride == (1, 1)
    assert isinstance(b.body.maxpool, nn.Identity)


@pytest.mark.parametrize("name,width,expected,tol", [
    ("resnet18", 1.0, 11.2e6, 0.2e6),
    ("resnet50", 1.0, 23.5e6, 0.1e6),  # RELICv2 Table 5: 24M
    ("resnet50", 2.0, 94e6, 0.5e6),  # 94M
    ("resnet50", 4.0, 375e6, 1e6),  # 375M
])
def test_width_multiplier_param_counts(name, width, expected, tol):
    b = create_backbone(ModelConfig(backbone=name, width=width), 224, device="meta")
    assert abs(n_params(b) - expected) < tol
    assert b.num_features == int((512 if name == "resnet18" else 2048) * width)


def test_width_widens_stem_and_every_stage():
    b = create_backbone(ModelConfig(backbone="resnet50", width=2.0), 224, device="meta")
    assert b.body.conv1.out_channels == 128
    assert [b.body.layer1[0].conv1.in_channels, b.body.layer1[0].conv2.out_channels] == [128, 128]
    assert [getattr(b.body, f"layer{i}")[-1].conv3.out_channels for i in (1, 2, 3, 4)] == [512, 1024, 2048, 4096]
    r18 = create_backbone(ModelConfig(backbone="resnet18", width=2.0), 32, device="meta")
    assert r18.body.conv1.out_channels == 128 and r18.body.layer1[0].downsample is None
    assert n_params(create_backbone(ModelConfig(backbone="resnet200"), 224, device="meta")) > 60e6


def test_group_count_rule():
    assert group_count(64) == 32 and group_count(256) == 32 and group_count(16) == 8
    assert group_count(48) == 24 and group_count(80) == 20 and group_count(3) == 1 and group_count(1) == 1
    for c in range(1, 300):
        assert c % group_count(c) == 0


@pytest.mark.parametrize("norm,cls", [("batch", nn.BatchNorm2d), ("group", GroupNorm2d), ("none", ChannelAffine)])
@pytest.mark.parametrize("name", ["convnet_tiny", "resnet18"])
def test_norm_options(name, norm, cls):
    b = create_backbone(ModelConfig(backbone=name, norm=norm), 16)
    assert any(isinstance(m, cls) for m in b.modules())
    others = {nn.BatchNorm2d, GroupNorm2d, ChannelAffine} - {cls}
    assert not any(type(m) in others for m in b.modules())
    if norm != "batch":
        # batch-independent: the output of a sample does not depend on the rest of the batch, in train mode
        x = torch.randn(4, 3, 16, 16)
        b.train()
        assert torch.allclose(b(x)[:2], b(x[:2]), atol=1e-5)


@pytest.mark.parametrize("norm", ["group", "none"])
def test_no_batchnorm_convnet_trains(norm):
    torch.manual_seed(0)
    b = create_backbone(ModelConfig(norm=norm, width=0.5), 8)
    head = nn.Linear(b.num_features, 4)
    x = torch.randn(32, 3, 8, 8)
    y = torch.arange(32) % 4
    x = x + y[:, None, None, None].float()  # learnable signal
    opt = torch.optim.SGD([*b.parameters(), *head.parameters()], lr=0.05, momentum=0.9)
    losses = []
    for _ in range(10):
        loss = nn.functional.cross_entropy(head(b(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0]


def test_resnet_none_norm_zero_inits_last_branch_scale():
    b = create_backbone(ModelConfig(backbone="resnet18", norm="none"), 16)
    assert torch.all(b.body.layer1[0].bn2.weight == 0)  # SkipInit-style: residual branches start at zero
    out = b(torch.randn(2, 3, 16, 16))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["convnet_tiny", "resnet18"])
def test_channels_last_matches_contiguous(name):
    torch.manual_seed(0)
    b = create_backbone(ModelConfig(backbone=name), 32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = b(x)
        b_cl = b.to(memory_format=torch.channels_last)
        out = b_cl(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-4, rtol=1e-4)


def test_in_chans_and_kaiming_init():
    b = create_backbone(ModelConfig(backbone="convnet_tiny"), 28, in_chans=1)
    assert b(torch.randn(2, 1, 28, 28)).shape == (2, b.num_features)
    w = b.body.conv1[0].weight
    fan_in = w.shape[1] * w.shape[2] * w.shape[3]
    assert abs(w.std().item() - (2.0 / fan_in) ** 0.5) < 0.2 * (2.0 / fan_in) ** 0.5
