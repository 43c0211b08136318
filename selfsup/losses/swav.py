"""The SwAV loss (Caron et al. 2020), as SSLight computes it (method-details B 1.2, 1.4).

Each view's embedding z (unit norm) is scored against K unit-norm prototypes: ``scores = z @ C.T`` (N, K).

* Codes (:func:`sinkhorn`): for an *assign* view (a global/large view), the equipartitioned soft assignment of the
  whole global batch (plus the queue's rows, if any) to the prototypes, by SwAV's ``distributed_sinkhorn``:
  ``Q = exp(scores / eps).T`` (K, N); ``Q /= sum(Q)``; then ``iterations`` times: each prototype row
  ``/= its sum, /= K``, each sample column ``/= its sum, /= N``; finally ``Q *= N`` and the codes are ``Q.T``, whose
  rows sum to 1. No gradient.
* Swapped prediction (:func:`swav_pair_loss`): view v predicts the codes of assign view c,
  ``-mean_i sum_k q_c[i, k] * log_softmax(scores_v[i] / T)[k]``.
* Pairs (:func:`swav_multiview_loss`): every assign view c against every *other* view v, large or small
  (``view_pairs(L, S, include_same=False)``); SwAV's ``CROPS_FOR_ASSIGN`` are the large views. ``alpha=None`` is SwAV's
  plain mean over those pairs (SSLight's baseline weights 2/14 and 12/14 for L = 2, S = 6); ``alpha`` re-balances the
  large-large against the small-large terms (SSLight: 0.4).

All of it runs in float32 with autocast disabled: ``exp(score / 0.05)`` turns a bf16 rounding of the scores (~0.4%) into
an 8% change of the assignment weights.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from selfsup.losses.pairing import multiview_loss
from selfsup.losses.soft_targets import soft_cross_entropy


@torch.no_grad()
def sinkhorn(scores: Tensor, *, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """SwAV's Sinkhorn-Knopp codes of ``scores`` (N, K): (N, K) float32, each row a distribution over the K prototypes.

    ``scores`` is the whole global batch of one assign view (plus any queue rows): the iterations normalise over all N
    rows, so every process must pass the same N rows to get the same codes. The global maximum is subtracted before the
    exponential; that constant factor cancels in the first normalisation (SwAV's maths is unchanged) and keeps
    ``exp(scores / eps)`` finite for scores beyond the cosine range. Scores whose spread exceeds ~80 * eps would still
    underflow to a zero prototype row (the inputs are cosines in [-1, 1], a spread of 40 * eps at most).

    After the last column step each row sums to exactly 1 and each prototype holds approximately N / K of the mass
    (exactly after a row step; more iterations get closer).
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (N, K), got {tuple(scores.shape)}")
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    with torch.autocast(device_type=scores.device.type, enabled=False):
        s = scores.detach().float()
        q = torch.exp((s - s.max()) / epsilon).T  # (K, N)
        q /= q.sum()
        num_prototypes, num_samples = q.shape
        for _ in range(iterations):
            q /= q.sum(dim=1, keepdim=True)  # each prototype: total weight 1 / K
            q /= num_prototypes
            q /= q.sum(dim=0, keepdim=True)  # each sample: total weight 1 / N
            q /= num_samples
        q *= num_samples  # each sample's weights sum to 1: an assignment
        return q.T


def swav_pair_loss(codes: Tensor, scores: Tensor, *, temperature: float) -> Tensor:
    """``-mean_i sum_k codes[i, k] * log_softmax(scores[i] / T)[k]``: view ``scores`` predicts another view's codes.

    Args:
        codes: (B, K) Sinkhorn codes of the assign view (rows sum to 1); the gradient is stopped here.
        scores: (B, K) prototype scores ``z @ C.T`` of the predicting view.
        temperature: T (0.1 in SwAV).
    """
    return soft_cross_entropy(codes, scores, temperature=temperature)


def _predict_codes(scores: Tensor, codes: Tensor, *, temperature: float) -> Tensor:
    """:func:`swav_pair_loss` in the (online view, target view) argument order of :func:`multiview_loss`."""
    return swav_pair_loss(codes, scores, temperature=temperature)


def swav_multiview_loss(scores_large: Sequence[Tensor], scores_small: Sequence[Tensor], codes_large: Sequence[Tensor],
                        *, temperature: float, alpha: Optional[float] = None) -> Tensor:
    """SwAV's swapped prediction over all (assign view c, other view v) pairs, combined by SSLight's ``alpha``.

    Args:
        scores_large: L tensors (B, K), the prototype scores of each large view.
        scores_small: S tensors (B, K), the prototype scores of each small view.
        codes_large: L tensors (B, K), the Sinkhorn codes of each large view (every large view is an assign view).
        alpha: weight of the large-large terms; None is the plain mean over the L (L - 1) + L S pairs.
    """
    return multiview_loss(_predict_codes, {"large": list(scores_large), "small": list(scores_small)},
                          list(codes_large), alpha=alpha, include_same=False, temperature=temperature)
