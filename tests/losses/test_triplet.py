"""Exemplar's semi-hard triplet loss against a direct triple loop over (anchor, positive, negative)."""

import pytest
import torch

from selfsup.losses import semi_hard_triplet_loss, squared_distances

pytestmark = pytest.mark.usefixtures("one_thread")


def brute_force(z: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """TF-contrib triplet_semihard_loss, written as the definition: per (a, p), the smallest D_an > D_ap, else the
    largest D_an; squared Euclidean distances; mean of the hinge over all positive pairs."""
    n = len(z)
    d = torch.cdist(z.double(), z.double()).pow(2)
    total, count = 0.0, 0
    for a in range(n):
        negatives = [d[a, k] for k in range(n) if labels[k] != labels[a]]
        if not negatives:
            continue
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            farther = [v for v in negatives if v > d[a, p]]
            d_an = min(farther) if farther else max(negatives)
            total += max(margin + d[a, p] - d_an, 0.0)
            count += 1
    return torch.as_tensor(total / max(count, 1), dtype=torch.float64)


@pytest.mark.parametrize("seed", range(5))
def test_matches_direct_computation(seed):
    g = torch.Generator().manual_seed(seed)
    n_images, copies = 6, 3
    z = torch.nn.functional.normalize(torch.randn(n_images * copies, 8, generator=g), dim=1)
    labels = torch.arange(n_images).repeat(copies)
    for margin in (0.0, 0.5, 2.0):
        got = semi_hard_triplet_loss(z, labels, margin)
        assert torch.allclose(got.double(), brute_force(z, labels, margin), atol=1e-5)


def test_uses_fallback_when_no_negative_is_farther():
    """One anchor, its positive far away, the only negative close: no semi-hard negative, so the farthest is used."""
    z = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    # pairs (0,1): D_ap = 9, D_an = 1 -> 0.5 + 9 - 1 = 8.5; (1,0): D_ap = 9, D_an = 4 -> 5.5
    assert torch.allclose(semi_hard_triplet_loss(z, labels, 0.5), torch.tensor(7.0))


def test_zero_for_well_separated_classes_and_gradient_pulls_positives():
    z = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    assert semi_hard_triplet_loss(z, labels, 0.5).item() == 0.0
    z2 = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.5, 0.0]], requires_grad=True)
    loss = semi_hard_triplet_loss(z2, torch.tensor([0, 0, 1]), 0.5)
    loss.backward()
    assert loss.item() > 0 and z2.grad[1, 0] > 0  # a descent step moves the positive at x=2 towards the anchor at 0


def test_single_label_batch_is_zero_and_differentiable():
    z = torch.randn(4, 3, requires_grad=True)
    loss = semi_hard_triplet_loss(z, torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0


def test_squared_distances():
    x = torch.randn(7, 5, dtype=torch.float64)
    assert torch.allclose(squared_distances(x), torch.cdist(x, x).pow(2), atol=1e-10)
