"""Writing schedule values into the optimiser: :func:`set_lr` and :func:`set_weight_decay`.

The schedules themselves are pure functions in :mod:`selfsup.schedules` (re-exported here). Weight decay is multiplied
by the group's ``wd_factor`` (set by :func:`selfsup.engine.optim.param_groups`: 1 for regular weights, 0 for biases, norm
parameters and, under SSLight's rule, depthwise kernels), so the no-decay groups stay at 0.
"""

from __future__ import annotations

import torch

from selfsup.schedules import cosine_ema_momentum, cosine_schedule, scaled_lr, warmup_cosine, warmup_step_decay

__all__ = ["scaled_lr", "warmup_cosine", "warmup_step_decay", "cosine_schedule", "cosine_ema_momentum", "set_lr",
           "set_weight_decay"]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set ``lr`` in every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def set_weight_decay(optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
    """Set ``weight_decay * group["wd_factor"]`` in every group (factor 1 when absent), so no-decay groups stay at 0."""
    for group in optimizer.param_groups:
        group["weight_decay"] = weight_decay * group.get("wd_factor", 1.0)
