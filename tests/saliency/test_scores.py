"""Saliency scores against direct per-image computations."""

import numpy as np
import pytest

from selfsup.saliency.scores import f_measure, iou, mae, max_f_measure, saliency_scores


def _data():
    rng = np.random.default_rng(0)
    gt = (rng.uniform(0, 1, (4, 10, 10)) > 0.75).astype(np.float32)
    pred = 0.2 * rng.uniform(0, 1, (4, 10, 10)) + 0.7 * gt  # informative but imperfect
    return pred, gt


def test_adaptive_f_measure_matches_a_direct_computation():
    pred, gt = _data()
    fs = []
    for p, g in zip(pred, gt):
        b = p >= min(2 * p.mean(), 1.0)
        tp = (b & (g > 0.5)).sum()
        prec, rec = tp / b.sum(), tp / (g > 0.5).sum()
        fs.append(1.3 * prec * rec / (0.3 * prec + rec))
    assert f_measure(pred, gt) == pytest.approx(np.mean(fs))


def test_iou_mae_and_uint8_inputs():
    pred, gt = _data()
    inter = ((pred >= 0.5) & (gt > 0.5)).sum((1, 2))
    union = ((pred >= 0.5) | (gt > 0.5)).sum((1, 2))
    assert iou(pred, gt) == pytest.approx((inter / union).mean())
    assert mae(pred, gt) == pytest.approx(np.abs(pred - gt).mean())
    u8 = (pred * 255).round().astype(np.uint8)
    assert mae(u8, (gt * 255).astype(np.uint8)) == pytest.approx(mae(u8 / 255.0, gt))


def test_perfect_maps_score_one_and_max_f_bounds_adaptive_f():
    _, gt = _data()
    s = saliency_scores(gt, gt)
    assert s["f_beta"] == pytest.approx(1.0) and s["iou"] == 1.0 and s["mae"] == 0.0
    assert s["max_f_beta"] == pytest.approx(1.0)
    pred, gt = _data()
    assert max_f_measure(pred, gt) >= f_measure(pred, gt) - 0.05
    with pytest.raises(ValueError, match="differ in shape"):
        saliency_scores(pred, gt[:2])
