"""MoCo-v2 loss (InfoNCE against a key and a queue; SSLight's multi-crop queries) against direct loop computations."""

import math

import pytest
import torch

from selfsup.losses import moco_multiview_loss, moco_pair_loss


def _unit(v):
    return v / v.norm()


def _loop_pair_loss(query, key, queue, tau):
    """-log softmax([q.k, q.queue_1, ..., q.queue_K] / tau)[0], averaged over the batch, with explicit loops."""
    total = 0.0
    for q, k in zip(query.double(), key.double()):
        q, k = _unit(q), _unit(k)
        logits = [float(q @ k) / tau] + [float(q @ n) / tau for n in queue.double()]
        total += -(logits[0] - math.log(sum(math.exp(x) for x in logits)))
    return total / query.shape[0]


def _queue(k, d, seed):
    return torch.nn.functional.normalize(torch.randn(k, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_pair_loss_matches_loops():
    g = torch.Generator().manual_seed(0)
    query, key, queue = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g), _queue(11, 5, 1)
    for tau in (0.2, 0.07, 1.0):
        got = moco_pair_loss(query, key, queue, temperature=tau)
        assert got.item() == pytest.approx(_loop_pair_loss(query, key, queue, tau), rel=1e-5)


def test_pair_loss_is_scale_invariant_and_prefers_the_positive():
    g = torch.Generator().manual_seed(2)
    query, queue = torch.randn(5, 8, generator=g), _queue(20, 8, 3)
    a = moco_pair_loss(query, torch.randn(5, 8, generator=g), queue, temperature=0.2)
    b = moco_pair_loss(query, query * 3.0, queue, temperature=0.2)  # key = query: the positive logit is maximal
    assert b < a
    c = moco_pair_loss(query * 0.1, query, queue, temperature=0.2)
    assert c.item() == pytest.approx(b.item(), rel=1e-6)


def test_no_gradient_reaches_key_or_queue():
    g = torch.Generator().manual_seed(4)
    query = torch.randn(4, 6, generator=g, requires_grad=True)
    key = torch.randn(4, 6, generator=g, requires_grad=True)
    queue = _queue(9, 6, 5).requires_grad_(True)
    moco_pair_loss(query, key, queue, temperature=0.2).backward()
    assert query.grad is not None and query.grad.abs().sum() > 0
    assert key.grad is None and queue.grad is None


def _views(n, b, d, g):
    return [torch.randn(b, d, generator=g) for _ in range(n)]


def test_multiview_baseline_is_sslight_one_seventh_weighting():
    """alpha=None with 2 large + 6 small views: SSLight's baseline LAMBDAS (1/7, 6/7) on g and mean(l)."""
    g = torch.Generator().manual_seed(6)
    large, small, key, queue = _views(2, 5, 4, g), _views(6, 5, 4, g), torch.randn(5, 4, generator=g), _queue(7, 4, 7)
    gl = [_loop_pair_loss(s, key, queue, 0.2) for s in small]
    gg = _loop_pair_loss(large[1], key, queue, 0.2)
    expected = gg / 7 + 6 / 7 * (sum(gl) / 6)
    got = moco_multiview_loss([None, large[1]], small, key, queue, temperature=0.2)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # large view 0 is the key's view: its query is never read
    assert moco_multiview_loss(large, small, key, queue, temperature=0.2).item() == pytest.approx(got.item())
    weighted = moco_multiview_loss([None, large[1]], small, key, queue, temperature=0.2, alpha=0.4)
    assert weighted.item() == pytest.approx(0.4 * gg + 0.6 * sum(gl) / 6, rel=1e-5)


def test_multiview_without_small_views_is_plain_moco():
    g = torch.Generator().manual_seed(8)
    q1, key, queue = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g), _queue(6, 4, 9)
    got = moco_multiview_loss([None, q1], [], key, queue, temperature=0.2, alpha=0.4)
    assert got.item() == pytest.approx(_loop_pair_loss(q1, key, queue, 0.2), rel=1e-5)


def test_multiview_symmetric_pairs_each_query_with_the_other_views_key():
    """Keys from both large views (MoCo-v2+): (large 1, k0), (large 0, k1), each small view with k0 and k1."""
    g = torch.Generator().manual_seed(10)
    large, small, queue = _views(2, 5, 4, g), _views(2, 5, 4, g), _queue(7, 4, 3)
    k0, k1 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    gg = [_loop_pair_loss(large[1], k0, queue, 0.2), _loop_pair_loss(large[0], k1, queue, 0.2)]
    gl = [_loop_pair_loss(s, k, queue, 0.2) for k in (k0, k1) for s in small]
    got = moco_multiview_loss(large, small, [k0, k1], queue, temperature=0.2)
    assert got.item() == pytest.approx(sum(gg + gl) / 6, rel=1e-5)
    weighted = moco_multiview_loss(large, small, [k0, k1], queue, temperature=0.2, alpha=0.4)
    assert weighted.item() == pytest.approx(0.4 * sum(gg) / 2 + 0.6 * sum(gl) / 4, rel=1e-5)
    # [k0, None] is SSLight's one-key form
    one = moco_multiview_loss(large, small, [k0, None], queue, temperature=0.2)
    assert one.item() == pytest.approx(moco_multiview_loss(large, small, k0, queue, temperature=0.2).item())


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        moco_pair_loss(torch.randn(3, 2), torch.randn(4, 2), _queue(5, 2, 0), temperature=0.2)
    with pytest.raises(ValueError):
        moco_pair_loss(torch.randn(3, 2), torch.randn(3, 2), _queue(5, 3, 0), temperature=0.2)
    with pytest.raises(ValueError):
        moco_pair_loss(torch.randn(3, 2), torch.randn(3, 2), _queue(5, 2, 0), temperature=0.0)
