"""SimCLR's NT-Xent (eq. 1), multi-view: against the textbook 2B x 2B form and a loop over anchors and candidates."""

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import nt_xent_loss


def _textbook_nt_xent(z1, z2, tau):
    """SimCLR's loss over 2N embeddings: row i's label is its other view, the diagonal is excluded (cross-entropy)."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    sim = z @ z.T / tau
    sim.fill_diagonal_(float("-inf"))
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, labels).item()


def _loop_nt_xent(large, small, tau, alpha):
    """Every (anchor, positive) term written out: positives are other large views, or large views of a small anchor."""
    views = [v.double() for v in (*large, *small)]
    num_large, batch = len(large), large[0].shape[0]
    emb = [(v, i, views[v][i] / views[v][i].norm()) for v in range(len(views)) for i in range(batch)]

    def term(anchor_view, pos_view):
        total = 0.0
        for i in range(batch):
            a = views[anchor_view][i] / views[anchor_view][i].norm()
            p = views[pos_view][i] / views[pos_view][i].norm()
            denom = sum(math.exp(float(a @ e) / tau) for v, j, e in emb if (v, j) != (anchor_view, i))
            total += -math.log(math.exp(float(a @ p) / tau) / denom)
        return total / batch

    gg = [term(a, p) for a in range(num_large) for p in range(num_large) if a != p]
    gl = [term(num_large + s, p) for s in range(len(small)) for p in range(num_large)]
    if alpha is None:
        return sum(gg + gl) / len(gg + gl)
    return alpha * sum(gg) / len(gg) + (1 - alpha) * sum(gl) / len(gl)


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_two_views_equal_textbook_simclr():
    z1, z2 = _randn(6, 5, seed=0), _randn(6, 5, seed=1)
    for tau in (0.1, 0.5, 1.0):
        got = nt_xent_loss([z1, z2], [], temperature=tau)
        assert got.item() == pytest.approx(_textbook_nt_xent(z1, z2, tau), rel=1e-5)
        assert got.item() == pytest.approx(_loop_nt_xent([z1, z2], [], tau, None), rel=1e-5)


@pytest.mark.parametrize("alpha", [None, 0.4, 1.0, 0.0])
def test_multiview_matches_loops(alpha):
    large = [_randn(5, 4, seed=s) for s in (2, 3)]
    small = [_randn(5, 4, seed=s) for s in (4, 5)]
    got = nt_xent_loss(large, small, temperature=0.3, alpha=alpha)
    assert got.item() == pytest.approx(_loop_nt_xent(large, small, 0.3, alpha), rel=1e-5)


def test_three_large_one_small_matches_loops():
    large = [_randn(4, 3, seed=s) for s in (6, 7, 8)]
    small = [_randn(4, 3, seed=9)]
    got = nt_xent_loss(large, small, temperature=0.2)
    assert got.item() == pytest.approx(_loop_nt_xent(large, small, 0.2, None), rel=1e-5)


def test_small_views_are_negatives_but_not_positives_of_each_other():
    large = [_randn(4, 3, seed=s) for s in (10, 11)]
    small = [_randn(4, 3, seed=12)]
    # a second small view equal to the first would be a perfect positive if small x small pairs counted;
    # it only adds gl terms and denominator entries, so the loss moves but stays the loop's value
    two_small = nt_xent_loss(large, [small[0], small[0].clone()], temperature=0.2)
    assert two_small.item() == pytest.approx(_loop_nt_xent(large, [small[0], small[0]], 0.2, None), rel=1e-5)
    # small views enter the large anchors' denominators: adding one changes the large-large terms
    gg_only = nt_xent_loss(large, small, temperature=0.2, alpha=1.0)
    assert gg_only.item() > nt_xent_loss(large, [], temperature=0.2).item()


def test_gradients_reach_every_view():
    views = [_randn(4, 3, seed=s).requires_grad_(True) for s in (13, 14, 15, 16)]
    nt_xent_loss(views[:2], views[2:], temperature=0.2).backward()
    for v in views:
        assert v.grad is not None and v.grad.abs().sum() > 0


def test_invariant_to_embedding_scale():
    z1, z2 = _randn(5, 4, seed=17), _randn(5, 4, seed=18)
    a = nt_xent_loss([z1, z2], [], temperature=0.2)
    b = nt_xent_loss([3.0 * z1, 0.5 * z2], [], temperature=0.2)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_bad_inputs_raise():
    z = _randn(4, 3, seed=19)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss([z, z], [], temperature=0.0)
    with pytest.raises(ValueError, match="same shape|one shape"):
        nt_xent_loss([z, z], [_randn(3, 3, seed=20)], temperature=0.1)
