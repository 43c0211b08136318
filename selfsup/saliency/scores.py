"""Saliency scores against ground-truth masks, as the saliency literature reports them.

All functions take ``pred`` and ``gt`` as arrays ``(N, H, W)``: ``pred`` in [0, 1] (or uint8, scaled by 1/255), ``gt``
binarised at 0.5 (uint8 masks at 128).

* :func:`f_measure`: F-beta with ``beta^2 = 0.3`` (Achanta et al. 2009; precision weighted over recall), each map
  binarised at the adaptive threshold ``min(2 * mean(map), 1)``, precision and recall per image, F per image, averaged.
  An image whose prediction or ground truth is empty has precision (or recall) 0 there.
* :func:`max_f_measure`: precision and recall averaged over images at each of 255 thresholds, F at each, the maximum.
* :func:`mae`: mean absolute error between the map and the binary mask.
* :func:`iou`: intersection over union of the map binarised at 0.5 with the mask, per image, averaged (an image where
  both are empty scores 1).
"""

from __future__ import annotations

from typing import Dict

import numpy as np

__all__ = ["f_measure", "max_f_measure", "mae", "iou", "saliency_scores", "as_unit", "as_binary"]


def as_unit(pred: np.ndarray) -> np.ndarray:
    pred = np.asarray(pred)
    if pred.dtype == np.uint8:
        return pred.astype(np.float64) / 255.0
    return pred.astype(np.float64)


def as_binary(gt: np.ndarray) -> np.ndarray:
    gt = np.asarray(gt)
    return gt >= (128 if gt.dtype == np.uint8 else 0.5)


def _pr(binary: np.ndarray, gt: np.ndarray):
    tp = (binary & gt).sum((1, 2)).astype(np.float64)
    p = np.divide(tp, binary.sum((1, 2)), out=np.zeros_like(tp), where=binary.sum((1, 2)) > 0)
    r = np.divide(tp, gt.sum((1, 2)), out=np.zeros_like(tp), where=gt.sum((1, 2)) > 0)
    return p, r


def _f(p: np.ndarray, r: np.ndarray, beta2: float) -> np.ndarray:
    den = beta2 * p + r
    return np.divide((1 + beta2) * p * r, den, out=np.zeros_like(den), where=den > 0)


def f_measure(pred: np.ndarray, gt: np.ndarray, beta2: float = 0.3) -> float:
    """Mean F-beta at each map's adaptive threshold ``min(2 * mean, 1)``."""
    pred, gt = as_unit(pred), as_binary(gt)
    thr = np.minimum(2 * pred.mean((1, 2), keepdims=True), 1.0)
    p, r = _pr(pred >= thr, gt)
    return float(_f(p, r, beta2).mean())


def max_f_measure(pred: np.ndarray, gt: np.ndarray, beta2: float = 0.3) -> float:
    """Maximum over 255 thresholds of F-beta of the image-averaged precision and recall."""
    pred, gt = as_unit(pred), as_binary(gt)
    best = 0.0
    for t in np.arange(1, 256) / 255.0:
        p, r = _pr(pred >= t, gt)
        best = max(best, float(_f(np.array([p.mean()]), np.array([r.mean()]), beta2)[0]))
    return best


def mae(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.abs(as_unit(pred) - as_binary(gt)).mean())


def iou(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> float:
    binary, gt = as_unit(pred) >= threshold, as_binary(gt)
    inter = (binary & gt).sum((1, 2)).astype(np.float64)
    union = (binary | gt).sum((1, 2)).astype(np.float64)
    return float(np.divide(inter, union, out=np.ones_like(inter), where=union > 0).mean())


def saliency_scores(pred: np.ndarray, gt: np.ndarray) -> Dict[str, float]:
    """F-beta (adaptive), max F-beta, MAE and IoU, with ``beta^2 = 0.3``."""
    if np.shape(pred) != np.shape(gt):
        raise ValueError(f"saliency maps {np.shape(pred)} and masks {np.shape(gt)} differ in shape")
    return {"f_beta": f_measure(pred, gt), "max_f_beta": max_f_measure(pred, gt), "mae": mae(pred, gt),
            "iou": iou(pred, gt)}
