"""SSLight's low-compute backbones: MobileNetV2 and the ViTs (parameter counts from SSLight Table 4), input sizes,
stems, norms, options that a family does not use, channels_last, and a short CLI pretraining run with each new
family."""

import copy
import csv
import math

import pytest
import timm
import torch
import torch.nn as nn
from timm.layers import DropPath
from timm.models._efficientnet_blocks import InvertedResidual  # noqa: PLC2701 (timm has no public path)

from selfsup.cli.main import main
from selfsup.config import ModelConfig, load_config
from selfsup.engine.checkpoint import load_checkpoint
from selfsup.errors import ConfigError
from selfsup.models.base import ChannelAffine, GroupNorm2d
from selfsup.models.registry import create_backbone, list_backbones
from selfsup.models.vit import ViTBackbone
from tests.conftest import TINY, n_params

NEW = ["mobilenetv2", "vit_tiny_16", "vit_tiny_32", "vit_small_16"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry_and_unknown_name_list_the_new_backbones():
    assert set(NEW) <= set(list_backbones())
    with pytest.raises(ConfigError) as err:
        create_backbone(ModelConfig(backbone="mobilenet_v2"), 32)
    msg = str(err.value)
    assert "did you mean 'mobilenetv2'" in msg and "\n" not in msg
    for name in NEW:
        assert name in msg.split("available:")[1]


# SSLight Table 4 (#Par., backbone without classifier) and the representation sizes.
@pytest.mark.parametrize("name,millions,features", [
    ("mobilenetv2", 2.2, 1280),
    ("resnet18", 11.2, 512),
    ("resnet34", 21.3, 512),
    ("resnet50", 23.5, 2048),
    ("vit_tiny_16", 5.5, 192),
    ("vit_small_16", 21.7, 384),
])
def test_param_counts_match_the_sslight_table(name, millions, features):
    b = create_backbone(ModelConfig(backbone=name), 224, device="meta")
    assert abs(n_params(b) - millions * 1e6) < 0.05e6, n_params(b)
    assert b.num_features == features
    assert b(torch.empty(2, 3, 224, 224, device="meta")).shape == (2, features)


def test_vit_tiny_32_differs_from_tiny_16_by_patch_embedding_and_grid_only():
    # The paper lists 5.5M for ViT-Ti/32 too; the 32x32x3 patch projection is 4x larger and the 224 grid 7x7, not 14x14.
    t16 = n_params(create_backbone(ModelConfig(backbone="vit_tiny_16"), 224, device="meta"))
    t32 = n_params(create_backbone(ModelConfig(backbone="vit_tiny_32"), 224, device="meta"))
    assert t32 - t16 == (32 * 32 - 16 * 16) * 3 * 192 - (14 * 14 - 7 * 7) * 192


def test_mobilenetv2_equals_timm_mobilenetv2_100():
    torch.manual_seed(0)
    ours = create_backbone(ModelConfig(backbone="mobilenetv2", stem="imagenet"), 64).eval()
    ref = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=0).eval()
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert [v.shape for v in ours_sd.values()] == [v.shape for v in ref_sd.values()]
    ours.load_state_dict(dict(zip(ours_sd, ref_sd.values())))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-5)


@pytest.mark.parametrize("width,timm_name", [(0.5, "mobilenetv2_050"), (1.4, "mobilenetv2_140")])
def test_mobilenetv2_width_is_the_channel_multiplier(width, timm_name):
    b = create_backbone(ModelConfig(backbone="mobilenetv2", width=width), 224, device="meta")
    ref = timm.create_model(timm_name, pretrained=False, num_classes=0, device="meta")
    assert n_params(b) == n_params(ref)
    assert b.num_features == ref.num_features == max(1280, int(1280 * width))


def test_mobilenetv2_small_stem_on_32px():
    b = create_backbone(ModelConfig(backbone="mobilenetv2"), 32)
    assert b.stem == "small" and b.reduction == 8
    assert b.body.conv_stem.stride == (1, 1)
    assert b.body.blocks[1][0].conv_dw.stride == (1, 1)  # first 24-channel stage: stride 1 as well
    assert b.body.blocks[2][0].conv_dw.stride == (2, 2)
    x = torch.randn(2, 3, 32, 32)
    assert b.forward_features(x).shape == (2, 1280, 4, 4)  # a 4x4 map, like the CIFAR ResNets
    assert b(x).shape == (2, 1280)
    big = create_backbone(ModelConfig(backbone="mobilenetv2"), 96, device="meta")
    assert big.stem == "imagenet" and big.reduction == 32 and big.body.conv_stem.stride == (2, 2)
    assert big.body.blocks[1][0].conv_dw.stride == (2, 2)
    assert big.forward_features(torch.empty(1, 3, 96, 96, device="meta")).shape[-1] == 3
    assert n_params(big) == n_params(b)


@pytest.mark.parametrize("norm,cls", [("batch", nn.BatchNorm2d), ("group", GroupNorm2d), ("none", ChannelAffine)])
def test_mobilenetv2_norms(norm, cls):
    torch.manual_seed(0)
    b = create_backbone(ModelConfig(backbone="mobilenetv2", norm=norm), 16).train()
    norms = [m for m in b.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, ChannelAffine))]
    assert norms and all(type(m) is cls for m in norms)
    assert sum(isinstance(m, nn.ReLU6) for m in b.modules()) == 35  # stem, 1 + 16x2 in blocks, head
    x = torch.randn(4, 3, 16, 16)
    out = b(x)
    assert torch.isfinite(out).all() and out.std() > 0
    if norm != "batch":
        assert torch.allclose(out[:2], b(x[:2]), atol=1e-5)  # batch-independent
    if norm == "none":
        skips = [m for m in b.modules() if isinstance(m, InvertedResidual) and m.has_skip]
        assert len(skips) == 10 and all(torch.all(m.bn3.norm.weight == 0) for m in skips)


def test_mobilenetv2_sync_batchnorm_conversion_keeps_the_activations():
    # timm's BatchNormAct2d would lose its ReLU6 when DDP converts BatchNorm to SyncBatchNorm; ours keeps it.
    torch.manual_seed(0)
    b = create_backbone(ModelConfig(backbone="mobilenetv2"), 32).eval()
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(b)).eval()
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(b(x), synced(x), atol=1e-5)


def test_vit_one_module_takes_224_96_and_128():
    torch.manual_seed(0)
    b = create_backbone(ModelConfig(backbone="vit_tiny_16"), 224).eval()
    assert isinstance(b, ViTBackbone) and b.body.pos_embed.shape == (1, 1 + 14 * 14, 192)
    with torch.no_grad():
        for size in (224, 96, 128):
            x = torch.randn(2, 3, size, size)
            out = b(x)
            assert out.shape == (2, 192) and torch.isfinite(out).all()
            assert b.forward_features(x).shape == (2, 192, size // 16, size // 16)
            # the representation is the class token after the final LayerNorm, not a pooled patch map
            assert torch.allclose(out, b.body.forward_features(x)[:, 0], atol=1e-6)


def test_vit_patch_size_override_for_32px():
    b = create_backbone(ModelConfig(backbone="vit_tiny_16", patch_size=4), 32)
    assert b.reduction == 4 and b.body.patch_embed.proj.kernel_size == (4, 4)
    assert b.body.pos_embed.shape == (1, 1 + 8 * 8, 192)
    x = torch.randn(2, 3, 32, 32)
    assert b(x).shape == (2, 192)
    assert b.forward_features(x).shape == (2, 192, 8, 8)
    assert b(torch.randn(2, 3, 16, 16)).shape == (2, 192)  # local views: 4x4 grid, interpolated positions


def test_vit_sizes_must_be_multiples_of_the_patch():
    with pytest.raises(ConfigError, match="model.patch_size"):
        create_backbone(ModelConfig(backbone="vit_tiny_16"), 28)
    b = create_backbone(ModelConfig(backbone="vit_tiny_16", patch_size=4), 16)
    with pytest.raises(ConfigError, match="multiples of the patch size 4"):
        b(torch.randn(1, 3, 18, 18))


def test_vit_uses_layernorm_whatever_model_norm_and_stem_say():
    b = create_backbone(ModelConfig(backbone="vit_tiny_16", patch_size=4, norm="group", stem="small"), 16).train()
    assert b.norm == "layer" and b.stem == "patch"
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, ChannelAffine)) for m in b.modules())
    assert sum(isinstance(m, nn.LayerNorm) for m in b.modules()) == 2 * 12 + 1
    x = torch.randn(4, 3, 16, 16)
    assert torch.allclose(b(x)[:2], b(x[:2]), atol=1e-5)  # LayerNorm: batch-independent


@pytest.mark.parametrize("name,cfg,option", [
    ("resnet18", dict(patch_size=4), "model.patch_size"),
    ("convnet_tiny", dict(patch_size=4), "model.patch_size"),
    ("mobilenetv2", dict(patch_size=4), "model.patch_size"),
    ("resnet18", dict(drop_path_rate=0.1), "model.drop_path_rate"),
    ("convnet_tiny", dict(drop_path_rate=0.1), "model.drop_path_rate"),
    ("vit_tiny_16", dict(width=2.0), "model.width"),
])
def test_options_a_family_does_not_use_are_refused(name, cfg, option):
    with pytest.raises(ConfigError, match=option) as err:
        create_backbone(ModelConfig(backbone=name, **cfg), 32, device="meta")
    assert "\n" not in str(err.value)


# timm: the rate grows linearly over the blocks from 0 (no DropPath in the first block); MobileNetV2 has 17 blocks and
# one DropPath each, the ViT 12 blocks with two each (after attention and after the MLP).
@pytest.mark.parametrize("name,count,top", [("mobilenetv2", 16, 0.2 * 16 / 17), ("vit_tiny_16", 22, 0.2)])
def test_drop_path_rate(name, count, top):
    b = create_backbone(ModelConfig(backbone=name, drop_path_rate=0.2), 32, device="meta")
    rates = [m.drop_prob for m in b.modules() if isinstance(m, DropPath)]
    assert len(rates) == count and max(rates) == pytest.approx(top)
    assert not any(isinstance(m, DropPath) for m in create_backbone(ModelConfig(backbone=name), 32,
                                                                     device="meta").modules())


def test_config_checks_the_new_options(tmp_path):
    for bad, option in ((dict(patch_size=0), "model.patch_size"), (dict(drop_path_rate=1.0), "model.drop_path_rate"),
                        (dict(drop_path_rate=-0.1), "model.drop_path_rate")):
        with pytest.raises(ConfigError, match=option):
            ModelConfig(**bad).validate()
    cfg = load_config(None, ["model.backbone=vit_tiny_16", "model.patch_size=4", "model.drop_path_rate=0.1"])
    assert cfg.model.patch_size == 4 and cfg.model.drop_path_rate == 0.1


@pytest.mark.parametrize("name,overrides", [("mobilenetv2", []), ("vit_tiny_16", ["model.patch_size=4"])])
def test_channels_last_matches_contiguous(name, overrides):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=name, patch_size=4 if overrides else None)
    b = create_backbone(cfg, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = b(x)
        out = b.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-4, rtol=1e-4)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("extra", [
    ["model.backbone=mobilenetv2", "optim.depthwise_no_decay=true"],
    ["model.backbone=vit_tiny_16", "model.patch_size=4", "optim.name=adamw", "optim.base_lr=1e-3",
     "optim.clip_grad=3.0"],
])
def test_cli_pretrains_relicv2_with_the_new_backbones(tmp_path, extra):
    out = tmp_path / "run"
    tiny = [o for o in TINY if not o.startswith("train.steps")]
    assert main(["pretrain", "--quiet", *tiny, "train.steps=2", *extra, f"out={out}"]) == 0
    losses = [float(r["loss"]) for r in _rows(out / "train_log.csv")]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert (out / "backbone.safetensors").is_file()
    groups = {g["name"]: g for g in load_checkpoint(out / "last.ckpt")["optimizer"]["param_groups"]}
    if "optim.depthwise_no_decay=true" in extra:
        assert groups["depthwise"]["weight_decay"] == 0.0 and not groups["depthwise"]["lars_exclude"]
    else:
        assert "depthwise" not in groups


def test_vit_taps_and_last_blocks_representation():
    """ViT taps: the class token after each block through the final LayerNorm; eval.vit_last_blocks=4 concatenates
    the last four (DINO's / SSLight's ViT linear evaluation)."""
    from selfsup.config import load_config
    from selfsup.errors import ConfigError
    from selfsup.eval.run import load_backbone
    from selfsup.models.vit import LastBlocksTokens

    cfg = load_config(None, ["model.backbone=vit_tiny_16", "model.patch_size=8", "views.large.size=16",
                             "eval.vit_last_blocks=4"])
    rep = load_backbone(cfg, None).eval()
    assert isinstance(rep, LastBlocksTokens) and rep.num_features == 4 * 192
    vit = rep.backbone
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        taps = vit.forward_taps(x)
        manual = vit.body.norm_pre(vit.body.patch_drop(vit.body._pos_embed(vit.body.patch_embed(x))))
        tokens = []
        for block in vit.body.blocks:
            manual = block(manual)
            tokens.append(vit.body.norm(manual)[:, 0])
        assert list(taps) == [f"block{i}" for i in range(1, 13)] + ["pre_logits"]
        assert torch.allclose(taps["pre_logits"], vit(x), atol=1e-5)
        assert torch.allclose(rep(x), torch.cat(tokens[-4:], dim=1), atol=1e-5)
    with pytest.raises(ConfigError, match="eval.vit_last_blocks=2 is for ViTs"):
        load_backbone(load_config(None, ["eval.vit_last_blocks=2"]), None)
