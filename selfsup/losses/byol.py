"""BYOL's regression loss (Grill et al. 2020, eq. 2), over L large and S small views per image.

For one pair of view batches, ``online`` = predictor(projector(encoder(x_a))) and ``target`` = EMA projector(EMA
encoder(x_b)):

    L_pair = mean_i || normalize(online_i) - stopgrad(normalize(target_i)) ||^2
           = mean_i [ 2 - 2 cos(online_i, stopgrad(target_i)) ]

Multi-view: :func:`~selfsup.losses.pairing.multiview_loss` with ``include_same=False``: every ordered pair of different
large views (online view, target view) and every (small online view, large target view) pair; small views never reach
the target (as RELICv2, DINO and solo-learn's multi-crop BYOL).

Scale choice: the pair terms are *averaged* (:func:`~selfsup.losses.pairing.combine_pair_losses`), so for 2 views the
loss is the mean of the two directions, ``(L(1 -> 0) + L(0 -> 1)) / 2``, i.e. half of the paper's symmetrised
``L + L~``. It stays in [0, 4] whatever the number of views, which keeps the losses of all methods on the same footing
and a learning rate valid across view counts; with the paper's sum, the same step needs twice the SGD learning rate
(LARS's trust ratio mostly cancels the factor).

The loss is computed in float32 with autocast disabled.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.losses.pairing import multiview_loss


def byol_pair_loss(online: Tensor, target: Tensor) -> Tensor:
    """``mean_i [2 - 2 cos(online_i, stopgrad(target_i))]`` for (B, D) un-normalised embeddings."""
    if online.shape != target.shape or online.dim() != 2:
        raise ValueError(f"online and target must be (B, D) of the same shape, got {tuple(online.shape)} "
                         f"and {tuple(target.shape)}")
    with torch.autocast(device_type=online.device.type, enabled=False):
        z = F.normalize(online.float(), dim=-1)
        k = F.normalize(target.detach().float(), dim=-1)
        return (2.0 - 2.0 * (z * k).sum(dim=-1)).mean()


def byol_multiview_loss(online_large: Sequence[Tensor], online_small: Sequence[Tensor],
                        target_large: Sequence[Tensor], *, alpha: Optional[float] = None) -> Tensor:
    """The mean of :func:`byol_pair_loss` over pairs of different views (module docstring).

    Args:
        online_large: L tensors (B, D), the online network (with predictor) on each large view.
        online_small: S tensors (B, D), the online network on each small view.
        target_large: L tensors (B, D), the target network on each large view (gradient stopped).
        alpha: SSLight's re-balancing of large-large against small-large pairs; None is the plain mean over pairs.
    """
    return multiview_loss(byol_pair_loss, {"large": list(online_large), "small": list(online_small)},
                          list(target_large), alpha=alpha, include_same=False)
