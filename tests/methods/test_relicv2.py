"""RELICv2 as a method: which views reach which network, where gradients flow, what the EMA moves."""

import torch

from selfsup.config import load_config
from selfsup.data.views import Views
from selfsup.methods.base import StepContext, build_method
from selfsup.methods.relicv2 import RELICv2


def _views(cfg, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = cfg.views
    return Views(large=[torch.randn(batch, 3, v.large.size, v.large.size, generator=g) for _ in range(v.large.count)],
                 small=[torch.randn(batch, 3, v.small.size, v.small.size, generator=g) for _ in range(v.small.count)])


def _ctx(step=0):
    return StepContext(step=step, total_steps=10, epoch=0, generator=torch.Generator().manual_seed(step))


def test_gradients_reach_online_not_target(tiny_overrides):
    cfg = load_config(None, tiny_overrides)
    method = build_method(cfg)
    assert isinstance(method, RELICv2)
    out = method(_views(cfg), _ctx())
    out.loss.backward()
    for name in ("backbone", "projector", "predictor"):
        grads = [p.grad for p in getattr(method, name).parameters()]
        assert all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name
    for name in ("target_backbone", "target_projector"):
        assert all(p.grad is None and not p.requires_grad for p in getattr(method, name).parameters()), name


def test_small_views_never_reach_the_target(tiny_overrides, monkeypatch):
    cfg = load_config(None, tiny_overrides)
    method = build_method(cfg)
    seen = []
    original = RELICv2.target

    def spy(self, x):
        seen.append(x.shape[-1])
        return original(self, x)

    monkeypatch.setattr(RELICv2, "target", spy)
    method(_views(cfg), _ctx())
    assert seen and set(seen) == {cfg.views.large.size}


def test_ema_pairs_cover_encoder_and_projector_only(tiny_overrides):
    cfg = load_config(None, tiny_overrides)
    method = build_method(cfg)
    pairs = method.ema_pairs()
    assert [(o is method.backbone, t is method.target_backbone) for o, t in pairs[:1]] == [(True, True)]
    assert pairs[1][0] is method.projector and pairs[1][1] is method.target_projector
    assert method.ema.schedule == "cosine" and method.ema.base == cfg.method.ema_base
    # target starts as an exact copy of the online encoder
    for p, q in zip(method.backbone.parameters(), method.target_backbone.parameters()):
        assert torch.equal(p, q)


def test_loss_is_reproducible_from_the_step_generator(tiny_overrides):
    cfg = load_config(None, tiny_overrides)
    method = build_method(cfg)
    views = _views(cfg)
    a = method(views, _ctx(3)).loss
    b = method(views, _ctx(3)).loss
    c = method(views, _ctx(4)).loss  # other negatives
    assert torch.equal(a, b) and not torch.equal(a, c)
