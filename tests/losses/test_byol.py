"""BYOL's loss (eq. 2) and its multi-view mean against direct computations."""

import pytest
import torch

from selfsup.losses import byol_multiview_loss, byol_pair_loss


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _loop_pair(online, target):
    """mean_i || q_i / |q_i| - z_i / |z_i| ||^2 (the paper's eq. 2), one item at a time."""
    total = 0.0
    for q, z in zip(online.double(), target.double()):
        total += float(((q / q.norm() - z / z.norm()) ** 2).sum())
    return total / online.shape[0]


def _loop_multiview(large, small, target, alpha):
    gg = [_loop_pair(large[o], target[t]) for t in range(len(large)) for o in range(len(large)) if o != t]
    gl = [_loop_pair(small[s], target[t]) for t in range(len(large)) for s in range(len(small))]
    if alpha is None:
        return sum(gg + gl) / len(gg + gl)
    return alpha * sum(gg) / len(gg) + (1 - alpha) * sum(gl) / len(gl)


def test_pair_loss_matches_squared_distance():
    online, target = _randn(6, 5, seed=0), _randn(6, 5, seed=1)
    assert byol_pair_loss(online, target).item() == pytest.approx(_loop_pair(online, target), rel=1e-5)
    assert byol_pair_loss(online, 4.0 * online).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_pair_loss(online, -online).item() == pytest.approx(4.0, rel=1e-6)


def test_two_views_is_the_mean_of_both_directions():
    o1, o2, t1, t2 = (_randn(5, 4, seed=s) for s in (2, 3, 4, 5))
    got = byol_multiview_loss([o1, o2], [], [t1, t2])
    assert got.item() == pytest.approx((_loop_pair(o1, t2) + _loop_pair(o2, t1)) / 2, rel=1e-5)


@pytest.mark.parametrize("alpha", [None, 0.4])
def test_multiview_matches_loops(alpha):
    large = [_randn(4, 3, seed=s) for s in (6, 7, 8)]
    small = [_randn(4, 3, seed=s) for s in (9, 10)]
    target = [_randn(4, 3, seed=s) for s in (11, 12, 13)]
    got = byol_multiview_loss(large, small, target, alpha=alpha)
    assert got.item() == pytest.approx(_loop_multiview(large, small, target, alpha), rel=1e-5)


def test_target_gets_no_gradient_online_does():
    online = [_randn(4, 3, seed=s).requires_grad_(True) for s in (14, 15, 16)]
    target = [_randn(4, 3, seed=s).requires_grad_(True) for s in (17, 18)]
    byol_multiview_loss(online[:2], online[2:], target).backward()
    for v in online:
        assert v.grad is not None and v.grad.abs().sum() > 0
    assert all(t.grad is None for t in target)
