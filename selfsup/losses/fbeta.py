"""DeepUSPS's saliency loss: one minus the continuous F-beta, with soft thresholding of the prediction.

For a predicted map ``p`` in [0, 1] and a binary pseudo-label ``y`` (the raw map ``r`` binarised at ``thr``),
per image::

    TP = sum p y,  FP = sum p (1 - y),  FN = sum (1 - p) y
    P = TP / (TP + FP),  R = TP / (TP + FN),  F = (1 + beta^2) P R / (beta^2 P + R)

and the loss is ``1 - mean over images of F``. *Soft thresholding* (DeepUSPS ``utils.py``) first replaces the prediction
where it is already beyond the raw pseudo-label on the right side of the threshold: ``p := 1`` where ``r > thr`` and
``p > r``, ``p := 0`` where ``r < thr`` and ``p < r``. Those pixels are constants, so they send no gradient: the network
is not pushed back towards a noisy label it already exceeds. DeepUSPS uses ``beta^2 = 1`` for the per-method refinement
and ``beta^2 = 4`` (recall-weighted) for the fused network. A small ``eps`` keeps empty images finite (F = 0 there).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["soft_threshold", "fbeta_score", "fbeta_loss"]


def soft_threshold(pred: Tensor, raw: Tensor, thr: float) -> Tensor:
    """``pred`` with pixels beyond the raw label set to 1 (above ``thr``) or 0 (below); see the module docstring."""
    up = (raw > thr) & (pred > raw)
    down = (raw < thr) & (pred < raw)
    return torch.where(up, torch.ones_like(pred), torch.where(down, torch.zeros_like(pred), pred))


def fbeta_score(pred: Tensor, target: Tensor, beta2: float, eps: float = 1e-8) -> Tensor:
    """Continuous F-beta per image of ``pred`` and binary ``target``, both ``(B, ...)``; returns ``(B,)``."""
    p = pred.flatten(1)
    y = target.flatten(1).to(p.dtype)
    tp = (p * y).sum(1)
    fp = (p * (1 - y)).sum(1)
    fn = ((1 - p) * y).sum(1)
    precision = tp / (tp + fp + eps)
    recall = tp / (tp + fn + eps)
    return (1 + beta2) * precision * recall / (beta2 * precision + recall + eps)


def fbeta_loss(pred: Tensor, raw: Tensor, thr: float, beta2: float = 1.0, soft: bool = True) -> Tensor:
    """``1 - mean F-beta`` of ``pred`` (probabilities) against ``raw`` binarised at ``thr`` (strictly above it),
    after :func:`soft_threshold` when ``soft``."""
    if pred.shape != raw.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and pseudo-label {tuple(raw.shape)} differ in shape")
    if soft:
        pred = soft_threshold(pred, raw, thr)
    return 1.0 - fbeta_score(pred, (raw > thr).to(pred.dtype), beta2).mean()
