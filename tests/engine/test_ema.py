"""EMA target update and construction."""

import pytest
import torch
import torch.nn as nn

from selfsup.engine.ema import ema_update
from selfsup.methods.base import frozen_copy as make_target  # targets are built by the methods


def _net():
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))


def test_make_target_is_a_frozen_copy():
    torch.manual_seed(0)
    online = _net()
    target = make_target(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())
    for a, b in zip(online.parameters(), target.parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    out = target(torch.randn(3, 4)).sum()
    assert not out.requires_grad


def test_ema_update_matches_formula_and_leaves_buffers():
    torch.manual_seed(0)
    online = _net()
    target = make_target(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online.train()
    online(torch.randn(8, 4))  # changes the online BN running stats
    before_t = [p.clone() for p in target.parameters()]
    before_buf = [b.clone() for b in target.buffers()]
    m = 0.9
    ema_update(target, online, m)
    for t0, t1, o in zip(before_t, target.parameters(), online.parameters()):
        assert torch.allclose(t1, m * t0 + (1 - m) * o, atol=1e-6)
    for b0, b1 in zip(before_buf, target.buffers()):
        assert torch.equal(b0, b1)
    assert all(not p.requires_grad for p in target.parameters())


def test_ema_update_extremes():
    online = _net()
    target = make_target(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    keep = [p.clone() for p in target.parameters()]
    ema_update(target, online, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(keep, target.parameters()))
    ema_update(target, online, 0.0)
    assert all(torch.allclose(a, b) for a, b in zip(online.parameters(), target.parameters()))


def test_ema_update_refuses_different_structures():
    with pytest.raises(ValueError):
        ema_update(_net(), nn.Sequential(nn.Linear(4, 6)), 0.9)
    with pytest.raises(ValueError, match="shape"):
        ema_update(nn.Linear(4, 6), nn.Linear(4, 5), 0.9)
    with pytest.raises(ValueError):
        ema_update(_net(), _net(), 1.5)
