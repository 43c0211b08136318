"""Cross-entropy against soft targets, the pair loss that SwAV and DINO share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["soft_cross_entropy"]


def soft_cross_entropy(targets: Tensor, logits: Tensor, *, temperature: float) -> Tensor:
    """``mean_b sum_k -targets[b, k] * log_softmax(logits[b] / temperature)[k]``, in float32 with autocast off.

    ``targets`` (B, K) are treated as constants (their gradient is stopped); ``logits`` (B, K) get the gradient.
    """
    if targets.shape != logits.shape or logits.dim() != 2:
        raise ValueError(f"targets and logits must be (B, K) of the same shape, got {tuple(targets.shape)} "
                         f"and {tuple(logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        log_p = F.log_softmax(logits.float() / temperature, dim=-1)
        return -(targets.detach().float() * log_p).sum(dim=-1).mean()
