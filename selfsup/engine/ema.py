"""The target network of BYOL/RELICv2 (and DINO's teacher): an exponential moving average of the online network.

``g <- gamma * g + (1 - gamma) * f`` after each optimiser step (RELICv2 Algorithm 1, method-details A2 / B 3.1), with
gamma from :func:`selfsup.schedules.cosine_ema_momentum`.

Only **parameters** are averaged (BYOL's ``target_params`` are an EMA of ``online_params``; the BN state is not part of
it). Buffers (BatchNorm running statistics, ``num_batches_tracked``) are left alone: the target runs its own forward
passes in train mode, where BatchNorm normalises with the batch's statistics, and its running statistics (used only in
eval mode) are kept up to date by those forwards.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn as nn

__all__ = ["ema_update"]


def _matched_params(target: nn.Module, online: nn.Module) -> tuple[List[torch.Tensor], List[torch.Tensor]]:
    t_named = list(target.named_parameters())
    o_named = list(online.named_parameters())
    if [n for n, _ in t_named] != [n for n, _ in o_named]:
        t_names = {n for n, _ in t_named}
        o_names = {n for n, _ in o_named}
        diff = sorted(t_names ^ o_names)[:5]
        raise ValueError("EMA target and online networks have different parameters "
                         f"(e.g. {diff or 'a different order'})")
    for (name, t), (_, o) in zip(t_named, o_named):
        if t.shape != o.shape:
            raise ValueError(f"EMA parameter '{name}' has shape {tuple(t.shape)} in the target "
                             f"and {tuple(o.shape)} in the online network")
    return [t for _, t in t_named], [o for _, o in o_named]


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place: ``target_p = momentum * target_p + (1 - momentum) * online_p`` for every parameter (by name).

    Buffers are left alone (see the module docstring). Raises ``ValueError`` when the two modules' parameter names or
    shapes differ. ``momentum = 1`` keeps the target, ``momentum = 0`` copies the online weights.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
    t_params, o_params = _matched_params(target, online)
    if not t_params:
        return
    o_params = [o.detach() for o in o_params]
    # lerp: t + (1 - m) * (o - t) = m * t + (1 - m) * o
    torch._foreach_lerp_(t_params, o_params, 1.0 - momentum)
