"""Revisiting's architecture families: widths (k = 4 w), stems, taps, the "(-)" variants, and RevNet invertibility."""

import pytest
import torch
import torch.nn as nn

from selfsup.config import ModelConfig
from selfsup.errors import ConfigError
from selfsup.models.registry import create_backbone, list_backbones
from selfsup.models.revisiting import RevNetBackbone, RevStage, RevUnit
from tests.conftest import n_params

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = ["resnet50v1", "resnet50v2", "revnet50", "vgg19bn"]
SMALL = [1, 1, 1, 1]


def small(name: str, **kw) -> ModelConfig:
    units = [1, 1, 1, 1, 1] if name == "vgg19bn" else SMALL
    return ModelConfig(backbone=name, stage_units=units, **kw)


def test_registered():
    assert set(FAMILIES) <= set(list_backbones())


@pytest.mark.parametrize("name", ["resnet50v1", "resnet50v2"])
def test_standard_resnets_at_k4(name):
    """k = 4 (width 1) is the standard ResNet-50: 23.5M parameters without the classifier, 2048-d pre-logits."""
    m = create_backbone(ModelConfig(backbone=name, stem="imagenet"), 224, device="meta")
    assert m.num_features == 2048
    assert abs(n_params(m) / 1e6 - 23.5) < 0.05


def test_vgg19bn_at_k8_is_vgg19():
    """k = 8 (width 2): 64..512 conv channels, fc6 a 7x7 valid conv to 4096 at 224 px (VGG-19's 139.6M parameters
    without the classifier, less the conv biases and plus BN)."""
    m = create_backbone(ModelConfig(backbone="vgg19bn", width=2, stem="imagenet"), 224, device="meta")
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    assert [c.out_channels for c in convs[:16]] == [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8
    assert len(convs) == 18 and convs[16].kernel_size == (7, 7) and convs[16].out_channels == 4096
    assert m.num_features == 4096
    assert abs(n_params(m) / 1e6 - 139.6) < 0.2


@pytest.mark.parametrize("name", FAMILIES)
def test_width_scales_channels(name):
    """Doubling k doubles every channel count: pre-logits 2048w, and the parameter count grows ~4x."""
    a = create_backbone(small(name, width=0.25), 32, device="meta")
    b = create_backbone(small(name, width=0.5), 32, device="meta")
    assert b.num_features == 2 * a.num_features == 1024
    assert 3.5 < n_params(b) / n_params(a) < 4.1


@pytest.mark.parametrize("name", FAMILIES)
def test_taps_shapes_and_prelogits(name):
    m = create_backbone(small(name, width=0.25), 32).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        taps = m.forward_taps(x)
        out = m(x)
    assert tuple(taps) == m.tap_names and m.tap_names[-1] == "pre_logits"
    assert torch.allclose(taps["pre_logits"], out, atol=1e-5)
    for key, value in list(taps.items())[:-1]:
        assert value.ndim == 4 and value.shape[0] == 3, key
    sides = [v.shape[-1] for v in list(taps.values())[:-1]]
    assert sides == sorted(sides, reverse=True)  # resolution never grows with depth


@pytest.mark.parametrize("name", FAMILIES)
def test_stems(name):
    """imagenet: total stride 32 (7x7 at 224); small: 4x4 at 32 px; patch_task: 8x8 on a 64 px patch."""
    for stem, size, side in (("imagenet", 224, 7), ("small", 32, 4 if name != "vgg19bn" else 2),
                             ("patch_task", 64, 8 if name != "vgg19bn" else 4)):
        m = create_backbone(small(name, width=0.25, stem=stem), size).eval()
        with torch.no_grad():
            taps = m.forward_taps(torch.randn(1, 3, size, size))
        last_map = taps["block4"] if name != "vgg19bn" else taps["block5"]
        assert last_map.shape[-1] == side, (stem, last_map.shape)


@pytest.mark.parametrize("name", FAMILIES)
def test_last_relu_variant(name):
    """The "(-)" variant lets pre-logits go negative; the standard one is a ReLU output (>= 0)."""
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    plus = create_backbone(small(name, width=0.25), 32).train()
    minus = create_backbone(small(name, width=0.25, last_relu=False), 32).train()
    with torch.no_grad():
        assert plus(x).min() >= 0
        assert minus(x).min() < 0


def test_vgg_any_input_size():
    m = create_backbone(small("vgg19bn", width=0.25), 32).eval()
    with torch.no_grad():
        for s in (16, 28, 48):
            assert m(torch.randn(2, 3, s, s)).shape == (2, 512)


def test_revnet_unit_inverts_exactly():
    torch.manual_seed(0)
    unit = RevUnit(16, "batch").double()
    unit.train()
    unit(torch.randn(32, 16, 8, 8, dtype=torch.float64))  # move the running statistics away from their init
    unit.eval()
    x = torch.randn(4, 16, 8, 8, dtype=torch.float64)
    y = unit(x)
    assert not torch.allclose(y, x)
    assert torch.allclose(unit.inverse(y), x, atol=1e-12, rtol=0)


def test_revnet_stage_inverts_and_backbone_is_reversible():
    torch.manual_seed(0)
    net = create_backbone(ModelConfig(backbone="revnet50", width=0.25, stage_units=[2, 2, 2, 2]), 32)
    assert isinstance(net, RevNetBackbone)
    net = net.double().eval()
    stage: RevStage = net.body.stages[2]
    x = torch.randn(2, stage.cout, 8, 8, dtype=torch.float64)
    y = nn.Sequential(*stage.children())(x)  # the units only (the transition pads and pools)
    assert torch.allclose(stage.inverse(y), x, atol=1e-12, rtol=0)


def test_revnet_transition_zero_pads_channels():
    stage = RevStage(8, 16, 1, 2, "batch")
    x = torch.randn(1, 8, 4, 4)
    for unit in stage.children():
        unit.f.conv3.weight.data.zero_()  # F = 0: the units only swap halves
    y = stage(x)
    pooled = nn.functional.avg_pool2d(x, 2)
    padded = torch.cat([torch.zeros(1, 4, 2, 2), pooled, torch.zeros(1, 4, 2, 2)], dim=1)
    assert torch.allclose(y, torch.cat([padded[:, 8:], padded[:, :8]], dim=1))


def test_errors_are_one_line():
    with pytest.raises(ConfigError, match="stage_units for model.backbone=resnet50v2 needs 4 values"):
        create_backbone(ModelConfig(backbone="resnet50v2", stage_units=[1, 1]), 32)
    with pytest.raises(ConfigError, match="model.stage_units does not apply to model.backbone=convnet_tiny"):
        create_backbone(ModelConfig(backbone="convnet_tiny", stage_units=[1, 1, 1, 1]), 32)
    with pytest.raises(ConfigError, match="model.last_relu does not apply"):
        create_backbone(ModelConfig(backbone="mobilenetv2", last_relu=False), 32)
    with pytest.raises(ConfigError, match="model.stem must be one of auto, imagenet, small for model.backbone=convnet"):
        create_backbone(ModelConfig(backbone="convnet_tiny", stem="patch_task"), 32)
    with pytest.raises(ConfigError, match="model.stage_units must be positive"):
        ModelConfig(stage_units=[0]).validate()


def test_trains_one_step_every_family():
    """A gradient step reaches every parameter of every family (no dead branch)."""
    for name in FAMILIES:
        m = create_backbone(small(name, width=0.25), 32).train()
        m(torch.randn(4, 3, 32, 32)).square().mean().backward()
        missing = [n for n, p in m.named_parameters() if p.grad is None]
        assert not missing, (name, missing[:3])


@pytest.mark.parametrize("name", FAMILIES + ["convnet_tiny"])
def test_representation_dim_sets_prelogits_size_independently_of_width(name):
    """Revisiting Sec. 4.6: an extra linear layer after the pooling; its output is the representation at any width."""
    extra = {} if name == "convnet_tiny" else {"stage_units": [1] * (5 if name == "vgg19bn" else 4)}
    for width in (0.125, 0.25):
        m = create_backbone(ModelConfig(backbone=name, width=width, representation_dim=48, **extra), 16).eval()
        assert m.num_features == 48
        x = torch.randn(2, 3, 16, 16)
        with torch.no_grad():
            out = m(x)
            taps = m.forward_taps(x)
        assert out.shape == (2, 48) and torch.allclose(taps["pre_logits"], out, atol=1e-5)
        pooled = m.forward_features(x).mean(dim=(2, 3))
        assert torch.allclose(out, m.rep_layer(pooled), atol=1e-5)


def test_export_of_revisiting_families():
    from selfsup.models.export import build_target, export_state

    v1 = create_backbone(ModelConfig(backbone="resnet50v1", stem="imagenet"), 224)
    tensors, meta = export_state(v1, "timm")
    assert meta["timm_model"] == "resnet50"
    build_target(meta).load_state_dict(tensors, strict=True)
    for cfg, msg in ((ModelConfig(backbone="resnet50v2", width=0.25, stage_units=None), "no timm or torchvision"),
                     (ModelConfig(backbone="resnet50v1", stem="imagenet", stage_units=[1, 1, 1, 1]), "own layout"),
                     (ModelConfig(backbone="resnet50v1", stem="imagenet", representation_dim=8), "own layout")):
        with pytest.raises(ConfigError, match=msg):
            export_state(create_backbone(cfg, 32), "timm")
