"""SSLight's optimiser settings (method-details B 1.3): depthwise kernels without weight decay but with the LARS trust
ratio, the cosine weight-decay schedule applied per step, and gradient-norm clipping."""

import csv
import math

import pytest
import torch
import torch.nn as nn

from selfsup.config import ModelConfig, OptimConfig, load_config
from selfsup.engine.checkpoint import load_checkpoint
from selfsup.engine.optim import LARS, build_optimizer, param_groups
from selfsup.engine.schedules import set_weight_decay
from selfsup.engine.trainer import pretrain
from selfsup.models.registry import create_backbone

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mnv2():
    torch.manual_seed(0)
    return create_backbone(ModelConfig(backbone="mobilenetv2"), 32)


def _depthwise_kernels(model: nn.Module):
    """Found from the modules, not the parameter shapes: convs with one filter per input channel."""
    return [m.weight for m in model.modules()
            if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels]


def _ids(params):
    return {id(p) for p in params}


def test_depthwise_group_holds_exactly_the_depthwise_kernels(mnv2):
    groups = {g["name"]: g for g in param_groups(mnv2, 1e-5, depthwise_no_decay=True)}
    assert set(groups) == {"regular", "no_decay", "depthwise"}
    depthwise = _depthwise_kernels(mnv2)
    assert len(depthwise) == 17  # one per block
    assert _ids(groups["depthwise"]["params"]) == _ids(depthwise)
    assert _ids(groups["no_decay"]["params"]) == _ids(p for p in mnv2.parameters() if p.ndim == 1)
    assert all(p.ndim == 4 and p.shape[1] > 1 for p in groups["regular"]["params"])
    assert sum(len(g["params"]) for g in groups.values()) == len(list(mnv2.parameters()))
    assert groups["depthwise"]["weight_decay"] == 0 and groups["depthwise"]["wd_factor"] == 0
    assert groups["depthwise"]["lars_exclude"] is False and groups["no_decay"]["lars_exclude"] is True

    plain = {g["name"]: g for g in param_groups(mnv2, 1e-5)}
    assert set(plain) == {"regular", "no_decay"}
    assert _ids(depthwise) <= _ids(plain["regular"]["params"])


def test_lars_step_trust_ratio_without_decay_on_depthwise(mnv2):
    torch.manual_seed(1)
    model = nn.Module()
    model.dw = nn.Conv2d(8, 8, 3, groups=8, bias=False)
    model.conv = nn.Conv2d(8, 4, 1, bias=False)
    model.bn = nn.BatchNorm2d(4)
    nn.init.normal_(model.bn.weight, 1.0, 0.1)
    params = dict(model.named_parameters())
    before = {k: p.detach().clone().double() for k, p in params.items()}
    grads = {k: torch.randn_like(p) for k, p in params.items()}
    for k, p in params.items():
        p.grad = grads[k].clone()
    lr, wd, eta = 0.7, 0.05, 1e-3
    opt = build_optimizer(model, OptimConfig(name="lars", weight_decay=wd, trust_coefficient=eta), lr=lr,
                          depthwise_no_decay=True)
    assert isinstance(opt, LARS)
    opt.step()

    def expected(name: str, decay: float, trust: bool) -> torch.Tensor:
        p, g = before[name], grads[name].double()
        d = g + decay * p
        if trust:
            d = d * eta * p.norm() / d.norm()
        return p - lr * d  # zero momentum buffer on the first step: mu = d

    want = {
        "dw.weight": expected("dw.weight", 0.0, True),  # depthwise: trust ratio, no decay
        "conv.weight": expected("conv.weight", wd, True),  # regular: both
        "bn.weight": expected("bn.weight", 0.0, False),  # 1-D: neither
        "bn.bias": expected("bn.bias", 0.0, False),
    }
    for name, value in want.items():
        assert torch.allclose(params[name].detach().double(), value, rtol=1e-5, atol=1e-7), name
    # the trust ratio really scaled the depthwise step (a plain SGD step would be ~1/eta times larger)
    step = (params["dw.weight"].detach().double() - before["dw.weight"]).norm().item()
    assert step == pytest.approx(lr * eta * before["dw.weight"].norm().item(), rel=1e-5)


def test_set_weight_decay_leaves_depthwise_and_no_decay_at_zero(mnv2):
    opt = build_optimizer(mnv2, OptimConfig(name="lars", weight_decay=1e-6), lr=0.1, depthwise_no_decay=True)
    set_weight_decay(opt, 0.3)
    assert {g["name"]: g["weight_decay"] for g in opt.param_groups} == {"regular": 0.3, "no_decay": 0.0,
                                                                        "depthwise": 0.0}


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_trainer_follows_the_cosine_weight_decay_schedule_per_step(tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, "optim.name=adamw", "optim.base_lr=1e-3", "optim.weight_decay=0.04",
                             "optim.weight_decay_end=0.4"])
    result = pretrain(cfg)
    total = result.total_steps
    assert total == 6
    rows = _rows(result.out_dir / "train_log.csv")
    logged = [float(r["weight_decay"]) for r in rows]
    # DINO/SSLight ViT: wd_k = end + (start - end) (1 + cos(pi k / K)) / 2 for step k of K
    want = [0.4 + (0.04 - 0.4) * (1 + math.cos(math.pi * k / total)) / 2 for k in range(total)]
    assert logged == pytest.approx(want, rel=1e-9)
    assert logged[0] == pytest.approx(0.04) and all(a < b for a, b in zip(logged, logged[1:]))
    groups = {g["name"]: g for g in load_checkpoint(result.out_dir / "last.ckpt")["optimizer"]["param_groups"]}
    assert groups["regular"]["weight_decay"] == pytest.approx(want[-1])
    assert groups["no_decay"]["weight_decay"] == 0.0


def test_trainer_without_schedule_keeps_weight_decay_constant(tiny_overrides):
    result = pretrain(load_config(None, [*tiny_overrides, "train.steps=2", "optim.weight_decay=0.01"]))
    groups = {g["name"]: g for g in load_checkpoint(result.out_dir / "last.ckpt")["optimizer"]["param_groups"]}
    assert groups["regular"]["weight_decay"] == 0.01 and groups["no_decay"]["weight_decay"] == 0.0


def test_clip_grad_bounds_the_global_gradient_norm(tiny_overrides, monkeypatch):
    norms = []
    original = LARS.step

    def recording_step(self, closure=None):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        return original(self, closure)

    monkeypatch.setattr(LARS, "step", recording_step)
    clip = 1e-3  # far below the gradient norms of this model, so every step is clipped to exactly this norm
    result = pretrain(load_config(None, [*tiny_overrides, "train.steps=3", f"optim.clip_grad={clip}"]))
    assert len(norms) == 3 and all(math.isfinite(v) for v in result.losses)
    assert norms == pytest.approx([clip] * 3, rel=1e-3)

    norms.clear()
    pretrain(load_config(None, [*tiny_overrides, "train.steps=1", f"out={result.out_dir}_noclip"]))
    assert norms[0] > 100 * clip  # without the option the same step is far larger


def test_clip_per_parameter_bounds_each_gradient_on_its_own():
    """DINO's per-parameter clipping: every gradient's own norm ends at most max_norm; small ones are untouched."""
    from selfsup.engine.optim import clip_per_parameter

    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([30.0, 40.0, 0.0]), torch.tensor([0.3, 0.4])
    clip_per_parameter([a, b], 3.0)
    assert torch.linalg.vector_norm(a.grad).item() == pytest.approx(3.0, rel=1e-5)
    assert torch.equal(b.grad, torch.tensor([0.3, 0.4]))  # global clipping would have scaled this one too


def test_trainer_clips_per_parameter(tiny_overrides, monkeypatch):
    seen = []
    original = LARS.step

    def recording_step(self, closure=None):
        seen.append(max(torch.linalg.vector_norm(p.grad).item() for g in self.param_groups for p in g["params"]
                        if p.grad is not None))
        return original(self, closure)

    monkeypatch.setattr(LARS, "step", recording_step)
    pretrain(load_config(None, [*tiny_overrides, "train.steps=2", "optim.clip_grad=1e-3",
                                "optim.clip_grad_mode=per_param"]))
    assert len(seen) == 2 and max(seen) <= 1e-3 * 1.0001
