"""DeepUSPS's F-beta loss: the score against a direct computation, soft thresholding and where gradients flow."""

import pytest
import torch

from selfsup.losses.fbeta import fbeta_loss, fbeta_score, soft_threshold


def _direct_f(p, y, beta2):
    tp = sum(a * b for a, b in zip(p, y))
    fp = sum(a * (1 - b) for a, b in zip(p, y))
    fn = sum((1 - a) * b for a, b in zip(p, y))
    prec, rec = tp / (tp + fp), tp / (tp + fn)
    return (1 + beta2) * prec * rec / (beta2 * prec + rec)


@pytest.mark.parametrize("beta2", [0.3, 1.0, 4.0])
def test_fbeta_score_matches_the_formula(beta2):
    g = torch.Generator().manual_seed(0)
    p = torch.rand(3, 5, 5, generator=g, dtype=torch.float64)
    y = (torch.rand(3, 5, 5, generator=g) > 0.5).double()
    got = fbeta_score(p, y, beta2, eps=0.0)
    for i in range(3):
        assert float(got[i]) == pytest.approx(_direct_f(p[i].flatten().tolist(), y[i].flatten().tolist(), beta2))


def test_soft_threshold_sets_pixels_beyond_the_raw_label():
    raw = torch.tensor([0.8, 0.8, 0.2, 0.2, 0.5])
    pred = torch.tensor([0.9, 0.7, 0.1, 0.3, 0.9])
    out = soft_threshold(pred, raw, 0.5)
    assert out.tolist() == pytest.approx([1.0, 0.7, 0.0, 0.3, 0.9])


def test_loss_gradients_skip_the_soft_thresholded_pixels():
    raw = torch.tensor([[0.8, 0.8, 0.2, 0.2]])
    logits = torch.tensor([[2.0, 0.5, -2.0, 0.0]], requires_grad=True)  # p = .88 .62 .12 .5
    fbeta_loss(torch.sigmoid(logits), raw, 0.5, beta2=1.0).backward()
    grad = logits.grad[0]
    assert grad[0] == 0 and grad[2] == 0  # beyond the raw label on the right side: constants
    assert grad[1] < 0 and grad[3] > 0  # pushed up towards foreground, down towards background


def test_loss_is_zero_for_the_label_and_one_for_its_complement():
    raw = (torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    assert float(fbeta_loss(raw, raw, 0.5)) == pytest.approx(0.0, abs=1e-6)
    assert float(fbeta_loss(1 - raw, raw, 0.5, soft=False)) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        fbeta_loss(raw, raw[:1], 0.5)
