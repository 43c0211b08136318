"""RELICv2 loss (eq. 1-3, method-details A1-A2) against a direct, loop-based computation."""

import math

import pytest
import torch

from selfsup.losses import (
    baseline_alpha,
    combine_pair_losses,
    relic_multiview_loss,
    relic_pair_loss,
    sample_candidates,
    view_pairs,
)


def _loop_pair_loss(online, target, tau, beta, c, cand):
    """Eq. 1-2 with explicit loops over anchors and candidates (no autograd tricks: returns a float)."""
    z = [v / v.norm() for v in online.double()]
    k = [v / v.norm() for v in target.double()]
    con, inv = 0.0, 0.0
    for i, c_i in enumerate(cand):
        s_row = [float(z[i] @ k[j]) / tau for j in c_i]
        s_col = [float(z[j] @ k[i]) / tau for j in c_i]
        zr = sum(math.exp(s) for s in s_row)
        zc = sum(math.exp(s) for s in s_col)
        p = [math.exp(s) / zr for s in s_row]
        pt = [math.exp(s) / zc for s in s_col]
        pos = c_i.index(i)
        con += -math.log(p[pos])
        inv += sum(pj * (math.log(pj) - math.log(ptj)) for pj, ptj in zip(p, pt))  # KL(p || pt)
    n = len(cand)
    return c * con / n + beta * inv / n


def test_pair_loss_all_negatives_matches_loops():
    g = torch.Generator().manual_seed(0)
    online, target = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    cand = [[i] + [j for j in range(7) if j != i] for i in range(7)]
    for tau, beta, c in [(0.2, 1.0, 1.0), (0.5, 2.0, 0.3), (1.0, 0.0, 1.0)]:
        got = relic_pair_loss(online, target, temperature=tau, beta=beta, contrast_scale=c)
        assert got.item() == pytest.approx(_loop_pair_loss(online, target, tau, beta, c, cand), rel=1e-5)


def test_pair_loss_subsampled_negatives_matches_loops():
    g = torch.Generator().manual_seed(1)
    online, target = torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g)
    cand = sample_candidates(9, 3, generator=torch.Generator().manual_seed(5)).tolist()
    got = relic_pair_loss(online, target, temperature=0.3, beta=1.5, num_negatives=3,
                          generator=torch.Generator().manual_seed(5))
    assert got.item() == pytest.approx(_loop_pair_loss(online, target, 0.3, 1.5, 1.0, cand), rel=1e-5)


def test_candidates_are_distinct_others_and_uniform():
    cand = sample_candidates(6, 3, generator=torch.Generator().manual_seed(0))
    assert cand.shape == (6, 4)
    assert torch.equal(cand[:, 0], torch.arange(6))
    for i, row in enumerate(cand.tolist()):
        assert len(set(row)) == 4 and i not in row[1:]
    # each of the 5 other items is drawn with probability 3/5
    counts = torch.zeros(6, 6)
    gen = torch.Generator().manual_seed(1)
    trials = 3000
    for _ in range(trials):
        cand = sample_candidates(6, 3, generator=gen)
        counts.scatter_add_(1, cand[:, 1:], torch.ones(6, 3))
    off_diag = counts[~torch.eye(6, dtype=torch.bool)] / trials
    assert torch.allclose(off_diag, torch.full_like(off_diag, 0.6), atol=0.04)
    assert counts.diagonal().sum() == 0


def test_floyd_sampler_draws_uniform_ordered_tuples():
    """Few negatives per row (the paper's n_e = 10 at large batches) take Floyd's algorithm: every ordered k-tuple of
    distinct values is equally likely, exactly as the first k of a random permutation."""
    from collections import Counter

    from selfsup.losses.relic import random_ordered_subset

    draws = random_ordered_subset(60000, 5, 2, torch.Generator().manual_seed(0))
    counts = Counter(map(tuple, draws.tolist()))
    assert len(counts) == 20 and all(a != b for a, b in counts)  # 5 x 4 ordered pairs, never a repeat
    expected = 60000 / 20
    assert max(abs(c - expected) for c in counts.values()) < 5 * expected ** 0.5
    # the large-batch path of sample_candidates: distinct others, never the anchor, inclusion probability n_e / (B-1)
    gen = torch.Generator().manual_seed(3)
    counts = torch.zeros(64, 64)
    for _ in range(400):
        cand = sample_candidates(64, 3, generator=gen)
        assert torch.equal(cand[:, 0], torch.arange(64))
        assert all(len(set(row)) == 4 for row in cand.tolist())
        counts.scatter_add_(1, cand[:, 1:], torch.ones(64, 3))
    assert counts.diagonal().sum() == 0
    freq = counts[~torch.eye(64, dtype=torch.bool)] / 400
    assert abs(freq.mean().item() - 3 / 63) < 1e-3 and freq.std().item() < 0.02


def test_unordered_floyd_subsets_are_uniform_and_the_loss_ignores_their_order():
    """ordered=False (what relic_multiview_loss draws): every k-subset equally likely; the pair loss is the same for
    any order of the negatives in a row."""
    from collections import Counter

    from selfsup.losses.relic import random_ordered_subset

    draws = random_ordered_subset(60000, 6, 3, torch.Generator().manual_seed(0), ordered=False)
    counts = Counter(frozenset(r) for r in draws.tolist())
    assert len(counts) == 20 and all(len(c) == 3 for c in counts)  # C(6, 3) subsets, no repeats within a row
    expected = 60000 / 20
    assert max(abs(c - expected) for c in counts.values()) < 5 * expected ** 0.5
    g = torch.Generator().manual_seed(2)
    online, target = torch.randn(30, 8, generator=g), torch.randn(30, 8, generator=g)
    cand = sample_candidates(30, 3, generator=g, ordered=False)
    shuffled = torch.cat([cand[:, :1], cand[:, 1:].flip(1)], dim=1)
    a = relic_pair_loss(online, target, temperature=0.2, num_negatives=3, candidates=cand)
    b = relic_pair_loss(online, target, temperature=0.2, num_negatives=3, candidates=shuffled)
    assert torch.allclose(a, b, atol=1e-6)


def test_num_negatives_at_least_batch_uses_everyone():
    g = torch.Generator().manual_seed(2)
    online, target = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    full = relic_pair_loss(online, target, temperature=0.2)
    assert relic_pair_loss(online, target, temperature=0.2, num_negatives=3).item() == pytest.approx(full.item())
    assert relic_pair_loss(online, target, temperature=0.2, num_negatives=10).item() == pytest.approx(full.item())


def test_loss_is_invariant_to_embedding_scale():
    g = torch.Generator().manual_seed(3)
    online, target = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    a = relic_pair_loss(online, target, temperature=0.2)
    b = relic_pair_loss(3.0 * online, 0.5 * target, temperature=0.2)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_gradient_stops_at_target_and_entropy_term():
    g = torch.Generator().manual_seed(4)
    online = torch.randn(6, 4, generator=g, requires_grad=True)
    target = torch.randn(6, 4, generator=g, requires_grad=True)
    relic_pair_loss(online, target, temperature=0.2, num_negatives=2, generator=g).backward()
    assert online.grad is not None and online.grad.abs().sum() > 0
    assert target.grad is None

    # Only the entropy term is stopped (A1): d/dz of KL uses -sum p log pt with grads through p and pt.
    online2 = online.detach().clone().requires_grad_(True)
    zt = torch.nn.functional.normalize(target.detach(), dim=-1)

    def manual(o):
        z = torch.nn.functional.normalize(o, dim=-1)
        s = z @ zt.T / 0.2
        log_p, log_pt = s.log_softmax(1), s.T.log_softmax(1)
        p = log_p.exp()
        con = -log_p.diagonal().mean()
        inv = ((p * log_p).sum(1).detach() - (p * log_pt).sum(1)).mean()
        return con + inv

    manual(online2).backward()
    online3 = online.detach().clone().requires_grad_(True)
    relic_pair_loss(online3, target.detach(), temperature=0.2).backward()
    assert torch.allclose(online2.grad, online3.grad, atol=1e-6)
    # and it differs from a fully-detached-KL variant, so the test can tell the readings apart
    online4 = online.detach().clone().requires_grad_(True)

    def kl_detached_target(o):
        z = torch.nn.functional.normalize(o, dim=-1)
        s = z @ zt.T / 0.2
        log_p, log_pt = s.log_softmax(1), s.T.log_softmax(1).detach()
        p = log_p.exp()
        return -log_p.diagonal().mean() + (p * (log_p - log_pt)).sum(1).mean()

    kl_detached_target(online4).backward()
    assert not torch.allclose(online4.grad, online3.grad, atol=1e-6)


def test_view_pairs_follow_eq3():
    pairs = view_pairs(4, 2)
    assert len(pairs) == (4 + 2) * 4
    gg = [(p.online, p.target) for p in pairs if p.kind == "gg"]
    assert sorted(gg) == [(a, b) for a in range(4) for b in range(4)]  # includes l1 == l2
    gl = [(p.online, p.target) for p in pairs if p.kind == "gl"]
    assert sorted(gl) == [(s, lg) for s in range(2) for lg in range(4)]
    assert all(p.online_group == "small" for p in pairs if p.kind == "gl")
    assert len(view_pairs(3, 0, include_same=False)) == 6


def test_multiview_loss_matches_loops_over_eq3():
    g = torch.Generator().manual_seed(6)
    L, S, B, D = 3, 2, 5, 4
    ol = [torch.randn(B, D, generator=g) for _ in range(L)]
    os_ = [torch.randn(B, D, generator=g) for _ in range(S)]
    tl = [torch.randn(B, D, generator=g) for _ in range(L)]
    cand = [[i] + [j for j in range(B) if j != i] for i in range(B)]
    total = 0.0
    for l1 in range(L):
        for l2 in range(L):
            total += _loop_pair_loss(ol[l2], tl[l1], 0.2, 1.0, 1.0, cand)
        for s in range(S):
            total += _loop_pair_loss(os_[s], tl[l1], 0.2, 1.0, 1.0, cand)
    expected = total / ((L + S) * L)
    got = relic_multiview_loss(ol, os_, tl, temperature=0.2)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # same_crop_pairs=false: the L same-crop terms (online l vs target l) are left out of the sum and of the count
    same = sum(_loop_pair_loss(ol[lg], tl[lg], 0.2, 1.0, 1.0, cand) for lg in range(L))
    got = relic_multiview_loss(ol, os_, tl, temperature=0.2, include_same=False)
    assert got.item() == pytest.approx((total - same) / ((L + S) * L - L), rel=1e-5)


def test_multiview_subsampled_negatives_are_one_draw_in_pair_order():
    """With n_e < B - 1, eq. 3's pairs take their negatives from one batched draw (sample_candidates(count=pairs)),
    slice k for the k-th pair of view_pairs: the same loss as the loops over eq. 3 with those candidates."""
    g = torch.Generator().manual_seed(7)
    L, S, B, D, n_e = 2, 2, 40, 6, 3
    ol = [torch.randn(B, D, generator=g) for _ in range(L)]
    os_ = [torch.randn(B, D, generator=g) for _ in range(S)]
    tl = [torch.randn(B, D, generator=g) for _ in range(L)]
    draws = sample_candidates(B, n_e, generator=torch.Generator().manual_seed(1), count=(L + S) * L, ordered=False)
    assert draws.shape == ((L + S) * L, B, 1 + n_e)
    for d in draws:  # each slice: the anchor, then n_e distinct others
        assert torch.equal(d[:, 0], torch.arange(B))
        assert all(len(set(row[1:].tolist())) == n_e and row[0] not in row[1:].tolist() for row in d)
    assert not torch.equal(draws[0], draws[1])
    total, k = 0.0, 0
    for l1 in range(L):
        for l2 in range(L):
            total += _loop_pair_loss(ol[l2], tl[l1], 0.2, 1.0, 1.0, draws[k].tolist())
            k += 1
    for l1 in range(L):
        for s in range(S):
            total += _loop_pair_loss(os_[s], tl[l1], 0.2, 1.0, 1.0, draws[k].tolist())
            k += 1
    got = relic_multiview_loss(ol, os_, tl, temperature=0.2, num_negatives=n_e,
                               generator=torch.Generator().manual_seed(1))
    assert got.item() == pytest.approx(total / ((L + S) * L), rel=1e-5)


def test_alpha_rebalancing_and_its_baseline():
    gg = [torch.tensor(1.0), torch.tensor(3.0)]
    gl = [torch.tensor(10.0)] * 4
    assert combine_pair_losses(gg, gl).item() == pytest.approx((1 + 3 + 40) / 6)
    assert combine_pair_losses(gg, gl, alpha=0.4).item() == pytest.approx(0.4 * 2 + 0.6 * 10)
    a = baseline_alpha(2, 4)
    assert combine_pair_losses(gg, gl, alpha=a).item() == pytest.approx(combine_pair_losses(gg, gl).item())
    assert combine_pair_losses(gg, [], alpha=0.4).item() == pytest.approx(2.0)


def test_multiview_alpha_weights_kinds():
    g = torch.Generator().manual_seed(7)
    ol = [torch.randn(4, 3, generator=g) for _ in range(2)]
    os_ = [torch.randn(4, 3, generator=g) for _ in range(3)]
    tl = [torch.randn(4, 3, generator=g) for _ in range(2)]
    gg = torch.stack([relic_pair_loss(ol[b], tl[a], temperature=0.2) for a in range(2) for b in range(2)]).mean()
    gl = torch.stack([relic_pair_loss(os_[s], tl[a], temperature=0.2) for a in range(2) for s in range(3)]).mean()
    got = relic_multiview_loss(ol, os_, tl, temperature=0.2, alpha=0.4)
    assert got.item() == pytest.approx((0.4 * gg + 0.6 * gl).item(), rel=1e-6)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        relic_pair_loss(torch.randn(3, 2), torch.randn(4, 2), temperature=0.2)
    with pytest.raises(ValueError):
        relic_pair_loss(torch.randn(3, 2), torch.randn(3, 2), temperature=0.0)
    with pytest.raises(ValueError):
        relic_multiview_loss([torch.randn(3, 2)], [], [], temperature=0.2)
