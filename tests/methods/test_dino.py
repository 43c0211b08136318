"""DINO as a method: teacher temperature schedule, head, gradients, centre, frozen last layer, EMA, recipes, CLI."""

import csv
import math

import numpy as np
import pytest
import torch

from selfsup.cli.main import main
from selfsup.config import load_config
from selfsup.data.views import Views
from selfsup.engine.checkpoint import load_checkpoint
from selfsup.engine.ema import ema_update
from selfsup.engine.optim import build_optimizer
from selfsup.engine.trainer import pretrain
from selfsup.errors import ConfigError
from selfsup.methods.base import StepContext, build_method
from selfsup.methods.dino import DINO, teacher_temperature
from selfsup.models.heads import DINOHead
from tests.conftest import TINY

# TINY with DINO's method block: 2 large + 2 small views, a small head
DINO_TINY = [o for o in TINY if not o.startswith("method.") and not o.startswith("views.small.count")] + [
    "views.small.count=2", "method.name=dino", "method.out_dim=32", "method.hidden_dim=32", "method.bottleneck_dim=16",
]


@pytest.fixture
def cfg(tmp_path):
    return load_config(None, [*DINO_TINY, f"out={tmp_path / 'run'}"])


def _views(cfg, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = cfg.views
    return Views(large=[torch.randn(batch, 3, v.large.size, v.large.size, generator=g) for _ in range(v.large.count)],
                 small=[torch.randn(batch, 3, v.small.size, v.small.size, generator=g) for _ in range(v.small.count)])


def _ctx(step=0, steps_per_epoch=4):
    return StepContext(step=step, total_steps=100, epoch=step // steps_per_epoch,
                       generator=torch.Generator().manual_seed(step), steps_per_epoch=steps_per_epoch)


def _last_v(head):
    return head.last_layer.parametrizations.weight.original1


def _last_g(head):
    return head.last_layer.parametrizations.weight.original0


# ---------------------------------------------------------------------------------------------------------- schedule


def test_linear_teacher_temperature_is_dinos_ramp_per_iteration():
    # DINO: np.linspace(0.04, 0.07, W) per epoch; ours reaches 0.07 at epoch W, i.e. linspace with W + 1 points
    ramp = np.linspace(0.04, 0.07, 51)
    for epoch in (0, 1, 17, 49):
        assert teacher_temperature(epoch, 0.04, 0.07, 50) == pytest.approx(ramp[epoch])
    assert teacher_temperature(2.5, 0.04, 0.07, 50) == pytest.approx((ramp[2] + ramp[3]) / 2)  # between epochs
    for epoch in (50, 50.5, 300):
        assert teacher_temperature(epoch, 0.04, 0.07, 50) == 0.07  # after the warm-up
    assert teacher_temperature(0.0, 0.04, 0.07, 0) == 0.07  # no warm-up


def test_cosine_teacher_temperature():
    w = 4.0
    for epoch in (0.0, 1.0, 2.0, 3.0, 3.9):
        expected = 0.07 + (0.04 - 0.07) * (1 + math.cos(math.pi * epoch / w)) / 2
        assert teacher_temperature(epoch, 0.04, 0.07, w, "cosine") == pytest.approx(expected)
    assert teacher_temperature(2.0, 0.04, 0.07, w, "cosine") == pytest.approx(0.055)
    assert teacher_temperature(1.0, 0.04, 0.07, w, "cosine") < teacher_temperature(1.0, 0.04, 0.07, w, "linear")
    assert teacher_temperature(w, 0.04, 0.07, w, "cosine") == 0.07
    with pytest.raises(ValueError):
        teacher_temperature(0.0, 0.04, 0.07, w, "step")


def test_method_uses_the_per_iteration_temperature(tmp_path):
    cfg = load_config(None, [*DINO_TINY, f"out={tmp_path}", "method.teacher_temperature_warmup_epochs=2"])
    method = build_method(cfg)
    out = method(_views(cfg), _ctx(step=3, steps_per_epoch=4))  # epoch 0.75 of 2
    assert out.logs["teacher_temperature"] == pytest.approx(0.04 + 0.03 * 0.75 / 2)
    assert 0 < out.logs["teacher_entropy"] <= math.log(cfg.method.out_dim) + 1e-5


# -------------------------------------------------------------------------------------------------------------- head


def test_head_structure_and_weight_norm():
    head = DINOHead(24, out_dim=40, hidden_dim=32, bottleneck_dim=8)
    types = [type(m).__name__ for m in head.mlp]
    assert types == ["Linear", "BatchNorm1d", "GELU", "Linear", "BatchNorm1d", "GELU", "Linear"]
    assert [type(m).__name__ for m in DINOHead(24, 40, 32, 8, norm="none").mlp] == [
        "Linear", "GELU", "Linear", "GELU", "Linear"]
    assert head.last_layer.bias is None and head.last_layer.weight.shape == (40, 8)
    assert torch.equal(_last_g(head), torch.ones(40, 1)) and not _last_g(head).requires_grad
    assert torch.allclose(head.last_layer.weight.norm(dim=1), torch.ones(40), atol=1e-5)
    # DINO's init: std 0.02, zero biases (here a 2048 x 2048 layer, so the estimate is tight)
    big = DINOHead(16, 8, 2048, 8, norm="none")
    assert big.mlp[2].weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert big.mlp[2].bias.abs().sum() == 0
    assert _last_g(DINOHead(24, 40, 32, 8, norm_last_layer=False)).requires_grad
    # output = cosine similarities between the normalised bottleneck and unit prototypes
    x = torch.randn(6, 24)
    head.eval()
    z = torch.nn.functional.normalize(head.mlp(x), dim=-1)
    w = _last_v(head) / _last_v(head).norm(dim=1, keepdim=True)
    assert torch.allclose(head(x), z @ w.T, atol=1e-5)
    assert head(x).abs().max() <= 1 + 1e-5


def test_teacher_copy_tracks_the_student_last_layer_by_ema(cfg):
    method = build_method(cfg)
    assert isinstance(method, DINO)
    student, teacher = method.head, method.teacher_head
    assert torch.equal(teacher.last_layer.weight, student.last_layer.weight)
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        _last_v(student).add_(torch.randn_like(_last_v(student)))
    old_v = _last_v(teacher).clone()
    for online, target in method.ema_pairs():
        ema_update(target, online, 0.75)
    assert torch.allclose(_last_v(teacher), 0.75 * old_v + 0.25 * _last_v(student))
    assert torch.equal(_last_g(teacher), torch.ones_like(_last_g(teacher)))
    expected = _last_v(teacher) / _last_v(teacher).norm(dim=1, keepdim=True)  # the parametrisation follows v
    assert torch.allclose(teacher.last_layer.weight, expected, atol=1e-6)
    for online, target in method.ema_pairs():
        ema_update(target, online, 0.0)
    assert torch.allclose(teacher.last_layer.weight, student.last_layer.weight)


# ------------------------------------------------------------------------------------------------- gradients, views


def test_gradients_reach_student_not_teacher(cfg):
    method = build_method(cfg)
    method(_views(cfg), _ctx()).loss.backward()
    for name, module in (("backbone", method.backbone), ("mlp", method.head.mlp), ("last", method.head.last_layer)):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name
    for module in (method.teacher_backbone, method.teacher_head):
        assert all(p.grad is None and not p.requires_grad for p in module.parameters())
    assert _last_g(method.head).grad is None


def test_teacher_sees_only_large_views_and_student_all(cfg, monkeypatch):
    method = build_method(cfg)
    seen = []
    original = DINO.teacher

    def spy(self, x):
        seen.append(x.shape[-1])
        return original(self, x)

    monkeypatch.setattr(DINO, "teacher", spy)
    calls = []
    method.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    method(_views(cfg), _ctx())
    assert seen == [cfg.views.large.size]  # one batched call over both large views
    b = 8
    assert [tuple(s) for s in calls] == [(2 * b, 3, 16, 16), (2 * b, 3, 8, 8)]  # once per resolution group


# ------------------------------------------------------------------------------------------------------------ centre


def test_centre_update_is_the_formula_and_does_not_change_the_current_loss(cfg):
    method = build_method(cfg)
    assert "center" in method.state_dict() and torch.equal(method.center, torch.zeros(1, cfg.method.out_dim))
    views = _views(cfg)
    loss = method(views, _ctx()).loss.detach()
    assert torch.equal(method.center, torch.zeros(1, cfg.method.out_dim))  # forward leaves the centre alone
    assert torch.equal(method(views, _ctx()).loss.detach(), loss)
    with torch.no_grad():  # the teacher's BatchNorm sees both large views together, as in the method
        teacher = method.teacher(torch.cat(views.large))
    method.after_optimizer_step(_ctx())
    expected = 0.9 * torch.zeros(1, cfg.method.out_dim) + 0.1 * teacher.mean(dim=0, keepdim=True)
    assert torch.allclose(method.center, expected, atol=1e-6)
    assert not torch.equal(method(views, _ctx()).loss.detach(), loss)  # the next step uses the new centre
    # a second update compounds the EMA
    method.after_optimizer_step(_ctx())
    assert torch.allclose(method.center, 0.9 * expected + 0.1 * teacher.mean(dim=0, keepdim=True), atol=1e-6)


# -------------------------------------------------------------------------------------------------- frozen last layer


def _train_step(method, optimizer, views, ctx):
    optimizer.zero_grad(set_to_none=True)
    method(views, ctx).loss.backward()
    method.on_after_backward(ctx)
    optimizer.step()
    method.after_optimizer_step(ctx)


def test_last_layer_frozen_in_epoch_zero_then_trained_and_g_stays_one(cfg):
    method = build_method(cfg)
    optimizer = build_optimizer(method, cfg.optim, lr=0.5)
    assert all(p is not _last_g(method.head) for g in optimizer.param_groups for p in g["params"])
    views = _views(cfg)
    v0, mlp0 = _last_v(method.head).clone(), method.head.mlp[0].weight.clone()
    _train_step(method, optimizer, views, _ctx(step=3))  # epoch 0
    assert torch.equal(_last_v(method.head), v0)
    assert not torch.equal(method.head.mlp[0].weight, mlp0)
    _train_step(method, optimizer, views, _ctx(step=4))  # epoch 1
    assert not torch.equal(_last_v(method.head), v0)
    assert torch.equal(_last_g(method.head), torch.ones_like(_last_g(method.head)))
    assert torch.allclose(method.head.last_layer.weight.norm(dim=1), torch.ones(cfg.method.out_dim), atol=1e-5)


def test_freeze_zero_epochs_trains_the_last_layer_at_once(tmp_path):
    cfg = load_config(None, [*DINO_TINY, f"out={tmp_path}", "method.freeze_last_layer_epochs=0"])
    method = build_method(cfg)
    optimizer = build_optimizer(method, cfg.optim, lr=0.5)
    v0 = _last_v(method.head).clone()
    _train_step(method, optimizer, _views(cfg), _ctx(step=0))
    assert not torch.equal(_last_v(method.head), v0)


# ------------------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize("override,key", [
    ("method.head_norm=layer", "method.head_norm"), ("method.teacher_temperature_schedule=step", "schedule"),
    ("method.student_temperature=0", "method.student_temperature"), ("method.center_momentum=2", "center_momentum"),
    ("method.alpha=1.5", "method.alpha"), ("method.out_dim=0", "method.out_dim"),
    ("method.teacher_temperature_warmup_epochs=-1", "warmup_epochs"),
])
def test_bad_values_name_the_option(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [*DINO_TINY, override])


def test_a_single_view_is_refused():
    cfg = load_config(None, [*DINO_TINY, "views.large.count=1", "views.small.count=0"])
    with pytest.raises(ConfigError, match="at least 2 views"):
        build_method(cfg)


def test_recipes_load_with_sslight_settings():
    base = load_config("dino_fmnist")
    light = load_config("dino_fmnist_sslight")
    shapes = load_config("dino_shapes")
    for c in (base, light, shapes):
        assert c.method.name == "dino" and c.model.backbone == "convnet_tiny"
        assert (c.views.large.count, c.views.small.count) == ((4, 2) if c is shapes else (2, 6))
        assert list(c.views.large.blur_p) == [1.0, 0.1] and list(c.views.large.solarize_p) == [0.0, 0.2]
        assert list(c.views.small.blur_p) == [0.5] and list(c.views.small.solarize_p) == [0.0]
    assert (base.views.small.size, base.views.large.scale_min, base.views.small.scale_max, base.method.alpha) == (
        12, [0.14], 0.14, None)
    assert (light.views.small.size, light.views.large.scale_min, light.views.small.scale_max, light.method.alpha) == (
        16, [0.3], 0.3, 0.4)
    # the built-in data's views (RESULTS 15): 4 global 0.4-1, 2 local 16 px 0.15-0.4
    assert (shapes.views.small.size, shapes.views.large.size, shapes.views.large.scale_min,
            shapes.views.small.scale_min, shapes.views.small.scale_max) == (16, 32, [0.4], [0.15], 0.4)


# --------------------------------------------------------------------------------------------------------------- CLI


def test_cli_pretrain_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--quiet", "dino_shapes", *DINO_TINY, f"out={out}", "train.steps=5"]) == 0
    assert (out / "backbone.safetensors").is_file()
    with open(out / "train_log.csv", newline="") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(losses) == 5 and all(math.isfinite(x) for x in losses)
    assert load_checkpoint(out / "last.ckpt")["method"]["center"].abs().sum() > 0


def test_resume_reproduces_the_run(tmp_path):
    """The centre and the teacher are in the checkpoint; the freeze and the temperature follow the step."""
    over = [*DINO_TINY, "train.steps=6", "train.threads=1"]  # 4 steps per epoch: the last layer unfreezes at step 4
    ref = pretrain(load_config(None, [*over, f"out={tmp_path / 'ref'}"]))
    cfg = load_config(None, [*over, f"out={tmp_path / 'cut'}"])
    first = pretrain(cfg, stop_at_step=3)
    rest = pretrain(cfg, resume="auto")
    assert first.losses + rest.losses == pytest.approx(ref.losses, rel=1e-6)
