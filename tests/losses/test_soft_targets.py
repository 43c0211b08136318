import math

import pytest
import torch

from selfsup.losses import soft_cross_entropy


def test_soft_cross_entropy_matches_direct_sum_and_stops_target_gradient():
    g = torch.Generator().manual_seed(0)
    targets = torch.softmax(torch.randn(3, 5, generator=g), dim=1).requires_grad_()
    logits = torch.randn(3, 5, generator=g, requires_grad=True)
    loss = soft_cross_entropy(targets, logits, temperature=0.5)
    direct = 0.0
    for b in range(3):
        norm = math.log(sum(math.exp(logits[b, j].item() / 0.5) for j in range(5)))
        direct += -sum(targets[b, k].item() * (logits[b, k].item() / 0.5 - norm) for k in range(5))
    assert loss.item() == pytest.approx(direct / 3, rel=1e-5)
    loss.backward()
    assert targets.grad is None and logits.grad.abs().sum() > 0


def test_soft_cross_entropy_rejects_bad_shapes_and_temperature():
    with pytest.raises(ValueError):
        soft_cross_entropy(torch.ones(2, 3), torch.ones(2, 4), temperature=0.1)
    with pytest.raises(ValueError):
        soft_cross_entropy(torch.ones(2, 3), torch.ones(2, 3), temperature=0.0)
