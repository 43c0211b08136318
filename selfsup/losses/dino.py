"""The DINO loss (Caron et al. 2021), as SSLight computes it (method-details B 1.2 and 1.4).

The teacher sees only the global (large) views, the student all views. For teacher view ``iq`` and student view ``v``:

* ``p_iq = softmax((t_iq - center) / T_t)`` (:func:`dino_teacher_probs`; no gradient);
* ``ce(v, iq) = mean_batch( sum_k -p_iq[k] * log_softmax(s_v / T_s)[k] )`` (:func:`dino_pair_loss`);
* the pairs are every teacher view against every *other* student view, large or small
  (``view_pairs(L, S, include_same=False)``): for L = 2, S = 6 that is 2 global-global and 12 global-local terms;
* the terms are combined by :func:`~selfsup.losses.pairing.combine_pair_losses`: ``alpha=None`` is DINO's plain mean
  over all pairs (SSLight's baseline weights 2/14 and 12/14), ``alpha`` is SSLight's re-balancing (0.4 in its recipe).

The centre is an EMA of the teacher outputs (:func:`update_center`, momentum 0.9); the method updates it once per step
from the mean over all teacher outputs of the global batch, after the loss is computed.

All of it runs in float32 with autocast disabled, whatever precision the networks ran in.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.losses.pairing import multiview_loss
from selfsup.losses.soft_targets import soft_cross_entropy


def dino_teacher_probs(teacher_logits: Tensor, center: Tensor, *, temperature: float) -> Tensor:
    """``softmax((teacher_logits - center) / temperature)`` over the last dim, float32, without gradient.

    Args:
        teacher_logits: (B, K) teacher head outputs of one large view.
        center: (K,) or (1, K) running centre.
        temperature: the teacher temperature T_t (0.04 -> 0.07 in DINO).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with torch.no_grad(), torch.autocast(device_type=teacher_logits.device.type, enabled=False):
        return F.softmax((teacher_logits.float() - center.float()) / temperature, dim=-1)


def dino_pair_loss(student_logits: Tensor, teacher_probs: Tensor, *, temperature: float) -> Tensor:
    """Cross-entropy of one (student view, teacher view) pair: ``mean_b sum_k -p[b,k] log_softmax(s[b] / T_s)[k]``.

    Args:
        student_logits: (B, K) student head outputs of one view (gradients flow here).
        teacher_probs: (B, K) teacher probabilities from :func:`dino_teacher_probs` (treated as constants).
        temperature: the student temperature T_s (0.1 in DINO and SSLight).
    """
    return soft_cross_entropy(teacher_probs, student_logits, temperature=temperature)


def dino_multiview_loss(student_large: Sequence[Tensor], student_small: Sequence[Tensor],
                        teacher_probs_large: Sequence[Tensor], *, temperature: float,
                        alpha: Optional[float] = None) -> Tensor:
    """DINO's multi-crop loss: :func:`dino_pair_loss` over every teacher large view against every other student view.

    Args:
        student_large: L tensors (B, K), the student on each large view.
        student_small: S tensors (B, K), the student on each small view.
        teacher_probs_large: L tensors (B, K), :func:`dino_teacher_probs` of the teacher on each large view.
        temperature: the student temperature.
        alpha: SSLight's weight of the large-large terms; None is the plain mean over the L(L-1) + L*S pairs.
    """
    return multiview_loss(dino_pair_loss, {"large": list(student_large), "small": list(student_small)},
                          list(teacher_probs_large), alpha=alpha, include_same=False, temperature=temperature)


def update_center(center: Tensor, batch_mean: Tensor, momentum: float) -> Tensor:
    """DINO's centre EMA: ``momentum * center + (1 - momentum) * batch_mean`` (a new tensor; 0.9 in DINO)."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"center momentum must be in [0, 1], got {momentum}")
    return center * momentum + batch_mean.to(center.dtype) * (1.0 - momentum)
