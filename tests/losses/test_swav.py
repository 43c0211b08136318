"""SwAV: Sinkhorn-Knopp codes and the swapped-prediction loss against hand-written loops."""

import math

import pytest
import torch

from selfsup.losses import sinkhorn, swav_multiview_loss, swav_pair_loss


def _loop_sinkhorn(scores, eps, iterations):
    """SwAV's distributed_sinkhorn on one process, element by element (float64 lists). Returns codes[n][k]."""
    n_rows, n_protos = len(scores), len(scores[0])
    q = [[math.exp(scores[n][k] / eps) for n in range(n_rows)] for k in range(n_protos)]  # (K, N)
    total = sum(sum(row) for row in q)
    q = [[v / total for v in row] for row in q]
    for _ in range(iterations):
        for k in range(n_protos):
            s = sum(q[k])
            q[k] = [v / s / n_protos for v in q[k]]
        for n in range(n_rows):
            s = sum(q[k][n] for k in range(n_protos))
            for k in range(n_protos):
                q[k][n] = q[k][n] / s / n_rows
    return [[q[k][n] * n_rows for k in range(n_protos)] for n in range(n_rows)]


def _cosines(n, k, d, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=1)
    return z @ c.T


@pytest.mark.parametrize("eps,iterations", [(0.05, 3), (0.1, 1), (0.5, 5)])
def test_sinkhorn_matches_loops(eps, iterations):
    scores = _cosines(7, 4, 3, seed=0)
    expected = torch.tensor(_loop_sinkhorn(scores.double().tolist(), eps, iterations), dtype=torch.float64)
    got = sinkhorn(scores, epsilon=eps, iterations=iterations)
    assert got.shape == (7, 4) and got.dtype == torch.float32
    assert torch.allclose(got.double(), expected, rtol=1e-4, atol=1e-7)


def test_sinkhorn_marginals():
    scores = _cosines(24, 6, 5, seed=1)
    codes = sinkhorn(scores, epsilon=0.05, iterations=3)
    assert torch.allclose(codes.sum(dim=1), torch.ones(24), atol=1e-5)  # each sample: a distribution
    # each prototype gets ~N/K of the mass, much closer than a plain softmax does
    target = torch.full((6,), 24 / 6)
    softmax_err = (torch.softmax(scores / 0.05, dim=1).sum(dim=0) - target).abs().max()
    err = (codes.sum(dim=0) - target).abs().max()
    assert err < 0.5 * softmax_err
    converged = sinkhorn(scores, epsilon=0.05, iterations=200)
    assert torch.allclose(converged.sum(dim=0), target, atol=1e-3)


def test_sinkhorn_is_shift_invariant_and_finite_for_large_scores():
    scores = _cosines(8, 5, 3, seed=2)
    a = sinkhorn(scores)
    assert torch.allclose(sinkhorn(scores + 3.0), a, atol=1e-6)
    # exp(10 / 0.05) overflows float32 without the max subtraction (the shift itself rounds the scores by ~1e-6)
    assert torch.allclose(sinkhorn(scores + 10.0), a, atol=2e-5)


def test_sinkhorn_carries_no_gradient():
    scores = _cosines(6, 3, 4, seed=3).requires_grad_(True)
    codes = sinkhorn(scores)
    assert not codes.requires_grad


def _loop_pair_loss(codes, scores, tau):
    total = 0.0
    for q, s in zip(codes.double().tolist(), scores.double().tolist()):
        logz = math.log(sum(math.exp(x / tau) for x in s))
        total += -sum(qk * (sk / tau - logz) for qk, sk in zip(q, s))
    return total / len(codes)


def test_pair_loss_matches_loops_and_stops_code_gradients():
    codes = sinkhorn(_cosines(5, 4, 3, seed=4)).requires_grad_(True)
    scores = _cosines(5, 4, 3, seed=5).requires_grad_(True)
    got = swav_pair_loss(codes, scores, temperature=0.1)
    assert got.item() == pytest.approx(_loop_pair_loss(codes, scores, 0.1), rel=1e-5)
    got.backward()
    assert codes.grad is None and scores.grad is not None and scores.grad.abs().sum() > 0


def test_multiview_loss_matches_loops_over_swapped_pairs():
    """Every assign (large) view c against every other view v, plain mean (SwAV) or SSLight's alpha."""
    L, S, B, K = 2, 3, 5, 4
    large = [_cosines(B, K, 3, seed=10 + i) for i in range(L)]
    small = [_cosines(B, K, 3, seed=20 + i) for i in range(S)]
    codes = [sinkhorn(s) for s in large]
    views = large + small
    gg, gl = [], []
    for c in range(L):
        for v in range(L + S):
            if v == c:
                continue
            (gg if v < L else gl).append(_loop_pair_loss(codes[c], views[v], 0.1))
    assert len(gg) == 2 and len(gl) == 6
    got = swav_multiview_loss(large, small, codes, temperature=0.1)
    assert got.item() == pytest.approx((sum(gg) + sum(gl)) / 8, rel=1e-5)
    weighted = swav_multiview_loss(large, small, codes, temperature=0.1, alpha=0.4)
    assert weighted.item() == pytest.approx(0.4 * sum(gg) / 2 + 0.6 * sum(gl) / 6, rel=1e-5)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        sinkhorn(torch.randn(3))
    with pytest.raises(ValueError):
        sinkhorn(torch.randn(3, 2), epsilon=0.0)
    with pytest.raises(ValueError):
        swav_pair_loss(torch.rand(3, 2), torch.randn(3, 4), temperature=0.1)
    with pytest.raises(ValueError):
        swav_pair_loss(torch.rand(3, 2), torch.randn(3, 2), temperature=0.0)
