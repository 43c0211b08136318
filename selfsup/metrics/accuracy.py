"""Classification metrics shared by the probes (linear L-BFGS, linear SGD, kNN) and the online monitor of pretraining.

Top-k accuracy is computed from ranks rather than from ``torch.topk`` so that ties are broken the same way everywhere,
on every device: among classes with equal scores, the lower class index ranks first (what a stable descending sort
gives). This matters for kNN, whose class scores tie often (classes with no votes all score 0).
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch

from selfsup.errors import DataError


def check_labels(labels: torch.Tensor, num_classes: int, what: str = "labels") -> None:
    """Raise a one-line :class:`DataError` unless ``labels`` is a 1-D integer tensor with values in
    ``[0, num_classes)``.

    Unlabelled datasets mark their images with -1; a probe needs real labels.
    """
    if labels.ndim != 1:
        raise DataError(f"{what} must be a 1-D tensor, got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise DataError(f"{what} must be integers, got {labels.dtype}")
    if num_classes < 1:
        raise DataError(f"num_classes must be >= 1, got {num_classes}")
    if labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise DataError(f"{what} must lie in [0, {num_classes}), found values in [{lo}, {hi}] "
                            "(-1 marks unlabelled images, which a probe cannot use)")


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean ``(N,)``: whether each label is among the ``k`` highest scores of its row.

    The rank of the true class is the number of classes scoring strictly higher plus the number scoring equally with a
    lower index; the label is in the top k when that rank is below ``k``. NaN scores count as -inf. ``k`` larger than
    the number of classes is clamped (everything is then correct).
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {tuple(scores.shape)}")
    n, c = scores.shape
    k = max(1, min(int(k), c))
    s = torch.nan_to_num(scores.float(), nan=float("-inf"))
    y = labels.to(device=s.device, dtype=torch.long).view(-1, 1)
    true = s.gather(1, y)
    idx = torch.arange(c, device=s.device).view(1, -1)
    rank = (s > true).sum(1) + ((s == true) & (idx < y)).sum(1)
    return rank < k


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> Dict[str, float]:
    """Top-k accuracy in percent for each ``k`` in ``ks``: ``{"top1": 87.5, "top5": 99.0}``.

    ``scores`` are ``(N, C)`` logits, probabilities or kNN votes (any monotone score), ``labels`` ``(N,)`` class
    indices.
    A ``k`` above ``C`` is clamped to ``C`` (the key keeps the requested ``k``). Ties: lower class index first (see the
    module docstring). An empty set gives NaN.
    """
    if scores.ndim != 2 or labels.ndim != 1 or scores.shape[0] != labels.shape[0]:
        raise ValueError(f"scores (N, C) and labels (N,) do not match: {tuple(scores.shape)} vs {tuple(labels.shape)}")
    check_labels(labels, scores.shape[1])
    n = scores.shape[0]
    out: Dict[str, float] = {}
    for k in ks:
        if n == 0:
            out[f"top{k}"] = float("nan")
        else:
            out[f"top{k}"] = 100.0 * topk_correct(scores, labels, k).sum().item() / n
    return out


def mean_per_class_accuracy(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Mean over the classes present in ``labels`` of each class's top-1 recall, in percent (the metric of the
    transfer datasets with unbalanced test sets: Pets, Flowers, Caltech-101, Aircraft in SimCLR/BYOL/RELICv2)."""
    if labels.numel() == 0:
        return float("nan")
    pred = scores.argmax(dim=1).to(labels.device)
    hits = torch.zeros(num_classes, dtype=torch.float64, device=labels.device)
    counts = torch.zeros(num_classes, dtype=torch.float64, device=labels.device)
    hits.index_add_(0, labels, (pred == labels).double())
    counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
    present = counts > 0
    return float(100.0 * (hits[present] / counts[present]).mean())
