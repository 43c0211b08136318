"""Revisiting's pretext tasks: labels and head inputs against direct computations, gradients, and representations."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from selfsup.config import load_config
from selfsup.data.pretext import RPL_NEIGHBOURS, grid_patches, standardize
from selfsup.errors import ConfigError
from selfsup.eval.run import load_backbone
from selfsup.methods.base import StepContext, build_method
from selfsup.methods.patch_tasks import PatchAverage

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = ["views.small.count=0", "views.large.size=16", "model.backbone=convnet_tiny", "data.image_size=16"]
PATCH = ["views.large.count=1", "views.large.size=24", "method.patch_size=6", "method.embedding_dim=8",
         "method.head_hidden=16"]


def make(name, *extra):
    cfg = load_config(None, [f"method.name={name}", *BASE, *extra])
    return cfg, build_method(cfg)


def views_for(cfg, b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = cfg.views.large.size
    return SimpleNamespace(large=[torch.randn(b, 3, s, s, generator=g) for _ in range(cfg.views.large.count)],
                           small=[])


def ctx(seed=0):
    return StepContext(step=0, total_steps=10, epoch=0, generator=torch.Generator().manual_seed(seed))


def test_rotation_loss_is_4way_ce_on_all_rotations():
    cfg, m = make("rotation", "views.large.count=1")
    m.eval()  # BatchNorm from running statistics: the direct computation can run image by image
    v = views_for(cfg)
    out = m(v, ctx())
    x = v.large[0]
    direct = []
    for k in range(4):
        logits = m.logits(m.backbone(torch.rot90(x, k, dims=(2, 3))))
        direct.append(F.cross_entropy(logits, torch.full((4,), k), reduction="none"))
    assert torch.allclose(out.loss, torch.cat(direct).mean(), atol=1e-5)
    assert torch.allclose(out.features, m.backbone(x), atol=1e-5)


def test_jigsaw_head_input_holds_cell_perm_i_at_position_i():
    cfg, m = make("jigsaw", *PATCH, "method.perms_per_batch=3")
    e = torch.randn(2, 9, 8)
    inputs, labels = m.arrange(e, ctx(1))
    assert inputs.shape == (6, 72) and labels.shape == (6,)
    chosen = torch.randperm(100, generator=torch.Generator().manual_seed(1))[:3]
    for j in range(3):
        perm = m.permutations[chosen[j]]
        for b in range(2):
            row = inputs[j * 2 + b].view(9, 8)
            assert labels[j * 2 + b] == chosen[j]
            for i in range(9):
                assert torch.equal(row[i], e[b, perm[i]])


def test_relpatch_pairs_each_neighbour_with_the_centre():
    cfg, m = make("relpatch", *PATCH)
    e = torch.randn(3, 9, 8)
    inputs, labels = m.arrange(e, ctx())
    assert inputs.shape == (24, 16)
    for b in range(3):
        for pos, cell in enumerate(RPL_NEIGHBOURS):
            row = inputs[b * 8 + pos]
            assert labels[b * 8 + pos] == pos
            assert torch.equal(row[:8], e[b, cell]) and torch.equal(row[8:], e[b, 4])


@pytest.mark.parametrize("name", ["rotation", "exemplar", "jigsaw", "relpatch"])
def test_gradients_reach_backbone_and_heads(name):
    extra = {"rotation": ["views.large.count=1"], "exemplar": ["views.large.count=3"]}.get(name, PATCH)
    cfg, m = make(name, *extra)
    out = m(views_for(cfg), ctx())
    assert torch.isfinite(out.loss) and "pretext_top1" in out.logs
    out.loss.backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert out.features.requires_grad is False


def test_exemplar_copies_share_grayscale_and_labels():
    cfg, m = make("exemplar", "views.large.count=4", "method.grayscale_p=0.5")
    seen = {}
    real = m.backbone.forward

    def spy(x):
        seen["x"] = x
        return real(x)

    m.backbone.forward = spy
    m(views_for(cfg, b=8), ctx(3))
    x = seen["x"].view(4, 8, 3, 16, 16)  # copy-major
    gray = (x.std(dim=2) < 1e-6).flatten(2).all(-1)  # (copies, images)
    assert gray.any() and (~gray).any()
    assert (gray == gray[0]).all()  # every copy of an image shares the decision


def test_patch_average_is_the_mean_over_nine_standardised_cells():
    cfg, m = make("jigsaw", *PATCH)
    rep = m.representation().eval()
    assert isinstance(rep, PatchAverage)
    x = torch.randn(2, 3, 18, 18)  # exactly 3 x patch: no resize
    cells = standardize(grid_patches(x, 6, jitter=False))
    direct = torch.stack([m.backbone(cells[:, k]) for k in range(9)], 1).mean(1)
    assert torch.allclose(rep(x), direct, atol=1e-5)
    taps = rep.forward_taps(x)
    assert torch.allclose(taps["pre_logits"], direct, atol=1e-5)


def test_eval_loads_the_patch_average_and_export_the_bare_backbone():
    cfg = load_config(None, ["method.name=jigsaw", *BASE, *PATCH])
    assert isinstance(load_backbone(cfg, None), PatchAverage)
    assert not isinstance(load_backbone(cfg, None, representation=False), PatchAverage)
    cfg = load_config(None, ["method.name=rotation", *BASE, "views.large.count=1"])
    assert not isinstance(load_backbone(cfg, None), PatchAverage)


def test_config_errors():
    with pytest.raises(ConfigError, match="views.small.count=0"):
        build_method(load_config(None, ["method.name=rotation", "views.small.count=2"]))
    with pytest.raises(ConfigError, match="method.patch_size=9 does not fit"):
        build_method(load_config(None, ["method.name=jigsaw", *BASE, "views.large.count=1", "views.large.size=24",
                                        "method.patch_size=9"]))
    with pytest.raises(ConfigError, match="views.large.count=1"):
        build_method(load_config(None, ["method.name=relpatch", *BASE, "views.large.count=2", "views.large.size=24",
                                        "method.patch_size=6"]))
    with pytest.raises(ConfigError, match="at least 2 copies"):
        build_method(load_config(None, ["method.name=exemplar", *BASE, "views.large.count=1"]))
    with pytest.raises(ConfigError, match="perms_per_batch"):
        load_config(None, ["method.name=jigsaw", "method.perms_per_batch=101"])
