"""SimCLR, BYOL and RELIC as methods: views, gradients, EMA, config errors, and a few CLI training steps each."""

import csv
import math

import pytest
import torch

import selfsup.methods.simclr as simclr_module
from selfsup.cli.main import main
from selfsup.config import load_config
from selfsup.data.views import Views
from selfsup.errors import ConfigError
from selfsup.losses import nt_xent_loss, relic_multiview_loss
from selfsup.methods.base import StepContext, build_method
from selfsup.methods.byol import BYOL
from selfsup.methods.relic import RELIC
from selfsup.methods.simclr import SimCLR
from tests.conftest import TINY

METHOD_OVERRIDES = {
    "simclr": ["method.name=simclr", "method.projector_hidden=32", "method.projector_dim=16"],
    "byol": ["method.name=byol", "method.projector_hidden=32", "method.projector_dim=16",
             "method.predictor_hidden=32"],
    "relic": ["method.name=relic", "method.projector_hidden=32", "method.projector_dim=16",
              "method.predictor_hidden=32", "views.small.count=0", "views.mask_p=0"],
}


def _overrides(method, tmp_path, *extra):
    return [*(o for o in TINY if not o.startswith("method.")), *METHOD_OVERRIDES[method], f"out={tmp_path / 'run'}",
            *extra]


def _views(cfg, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = cfg.views
    return Views(large=[torch.randn(batch, 3, v.large.size, v.large.size, generator=g) for _ in range(v.large.count)],
                 small=[torch.randn(batch, 3, v.small.size, v.small.size, generator=g) for _ in range(v.small.count)])


def _ctx(step=0):
    return StepContext(step=step, total_steps=10, epoch=0, generator=torch.Generator().manual_seed(step))


def _grad_sum(module):
    grads = [p.grad for p in module.parameters()]
    assert all(g is not None for g in grads)
    return sum(g.abs().sum() for g in grads)


# ---------------------------------------------------------------------------------------------------------- SimCLR


def test_simclr_all_views_through_one_network_and_gathered(tmp_path, monkeypatch):
    cfg = load_config(None, _overrides("simclr", tmp_path))
    method = build_method(cfg)
    assert isinstance(method, SimCLR) and method.ema is None and method.ema_pairs() == []
    assert method.projector.out_dim == 16
    sizes, gathered = [], []

    def spy_gather(z):
        gathered.append(z.shape)
        return z

    method.backbone.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[-1]))
    monkeypatch.setattr(simclr_module, "gather_with_grad", spy_gather)
    views = _views(cfg)
    out = method(views, _ctx())
    # one forward per resolution group, every view gathered before the loss
    assert sorted(sizes) == sorted([cfg.views.large.size, cfg.views.small.size])
    assert len(gathered) == cfg.views.large.count + cfg.views.small.count
    # the loss is nt_xent_loss of the projector outputs (one batch per resolution group, as BatchNorm saw them)
    with torch.no_grad():
        large = list(method.projector(method.backbone(torch.cat(views.large))).chunk(len(views.large)))
        small = list(method.projector(method.backbone(torch.cat(views.small))).chunk(len(views.small)))
    expected = nt_xent_loss(large, small, temperature=cfg.method.temperature)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_simclr_gradients_reach_backbone_and_projector(tmp_path):
    cfg = load_config(None, _overrides("simclr", tmp_path))
    method = build_method(cfg)
    method(_views(cfg), _ctx()).loss.backward()
    assert _grad_sum(method.backbone) > 0 and _grad_sum(method.projector) > 0


def test_simclr_needs_a_pair(tmp_path):
    cfg = load_config(None, _overrides("simclr", tmp_path, "views.large.count=1", "views.small.count=0"))
    with pytest.raises(ConfigError, match="views.large.count >= 2"):
        build_method(cfg)
    with pytest.raises(ConfigError, match="method.temperature"):
        load_config(None, _overrides("simclr", tmp_path, "method.temperature=0"))


# ------------------------------------------------------------------------------------------------------------ BYOL


def test_byol_gradients_reach_online_not_target(tmp_path):
    cfg = load_config(None, _overrides("byol", tmp_path))
    method = build_method(cfg)
    assert isinstance(method, BYOL)
    out = method(_views(cfg), _ctx())
    assert 0.0 <= out.loss.item() <= 4.0
    out.loss.backward()
    for name in ("backbone", "projector", "predictor"):
        assert _grad_sum(getattr(method, name)) > 0, name
    for name in ("target_backbone", "target_projector"):
        assert all(p.grad is None and not p.requires_grad for p in getattr(method, name).parameters()), name


def test_byol_small_views_never_reach_the_target_and_ema(tmp_path, monkeypatch):
    cfg = load_config(None, _overrides("byol", tmp_path))
    method = build_method(cfg)
    assert method.ema.schedule == "cosine" and method.ema.base == pytest.approx(0.996)
    pairs = method.ema_pairs()
    assert pairs[0][0] is method.backbone and pairs[0][1] is method.target_backbone
    assert pairs[1][0] is method.projector and pairs[1][1] is method.target_projector
    for p, q in zip(method.backbone.parameters(), method.target_backbone.parameters()):
        assert torch.equal(p, q)
    seen = []
    original = BYOL.target

    def spy(self, x):
        seen.append(x.shape[-1])
        return original(self, x)

    monkeypatch.setattr(BYOL, "target", spy)
    method(_views(cfg), _ctx())
    assert seen and set(seen) == {cfg.views.large.size}


# ----------------------------------------------------------------------------------------------------------- RELIC


def test_relic_defaults_and_loss_is_relicv2_with_all_negatives(tmp_path):
    cfg = load_config(None, _overrides("relic", tmp_path))
    assert cfg.method.num_negatives is None and cfg.method.temperature == 0.2
    method = build_method(cfg)
    assert isinstance(method, RELIC)
    views = _views(cfg)
    out = method(views, _ctx())
    with torch.no_grad():
        online = list(method.online(torch.cat(views.large)).chunk(2))
        target = list(method.target(torch.cat(views.large)).chunk(2))
    expected = relic_multiview_loss(online, [], target, temperature=0.2, num_negatives=None)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    out.loss.backward()
    assert _grad_sum(method.backbone) > 0


@pytest.mark.parametrize("bad", ["views.large.count=3", "views.small.count=1", "views.mask_p=0.1"])
def test_relic_rejects_other_views(tmp_path, bad):
    cfg = load_config(None, _overrides("relic", tmp_path, bad))
    with pytest.raises(ConfigError) as err:
        build_method(cfg)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("method relic uses 2 large views and no small views")
    assert bad.split("=")[0] in msg


# ------------------------------------------------------------------------------------------------ recipes and CLI


@pytest.mark.parametrize("recipe", [f"{m}_{d}" for m in ("simclr", "byol", "relic") for d in ("fmnist", "shapes")])
def test_recipes_load(recipe):
    cfg = load_config(recipe)
    assert cfg.method.name == recipe.split("_")[0] and cfg.model.backbone == "convnet_tiny"
    assert cfg.method.projector_hidden == 512 and cfg.method.projector_dim == 128


@pytest.mark.parametrize("method", ["simclr", "byol", "relic"])
def test_cli_pretrain_trains(tmp_path, method):
    out = tmp_path / "run"
    assert main(["pretrain", "--quiet", f"{method}_shapes", *_overrides(method, tmp_path, "train.steps=3")]) == 0
    assert (out / "backbone.safetensors").is_file()
    with open(out / "train_log.csv") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
