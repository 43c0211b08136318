"""Schedules as pure functions of the optimiser step: learning rate, EMA momentum, generic cosine.

They sit below ``methods`` (DINO's teacher temperature and momentum use them) and ``engine`` (which writes the values
into the optimiser, see :mod:`selfsup.engine.schedules`).

* Learning rate (RELICv2/BYOL, method-details A2 and B 1.3): ``peak = scaled_lr(base_lr, global_batch)``, a linear
  warm-up, then a cosine decay to ``final`` (``optim.min_lr_ratio * peak``).
* Target EMA momentum (BYOL, RELICv2 A2): ``gamma_k = 1 - (1 - gamma_base) (cos(pi k / K) + 1) / 2``.
* Generic cosine (:func:`cosine_schedule`): SSLight's ViT weight decay 0.04 -> 0.4 (B 1.3), DINO-style schedules.
"""

from __future__ import annotations

import math

__all__ = ["scaled_lr", "warmup_cosine", "warmup_step_decay", "step_decay", "cosine_schedule", "cosine_ema_momentum"]


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """Linear scaling rule: ``base_lr * global_batch / 256`` (BYOL, RELICv2, SSLight)."""
    return base_lr * global_batch / 256.0


def cosine_schedule(step: int, total_steps: int, start: float, end: float) -> float:
    """``end + (start - end) * (1 + cos(pi * t)) / 2`` with ``t = min(step / total_steps, 1)``.

    ``start`` at step 0, ``end`` at ``total_steps`` and after; ``total_steps <= 0`` gives ``end``.
    """
    t = 1.0 if total_steps <= 0 else min(max(step, 0) / total_steps, 1.0)
    return end + (start - end) * (1.0 + math.cos(math.pi * t)) / 2.0


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, peak: float, final: float = 0.0) -> float:
    """Linear warm-up to ``peak``, then cosine from ``peak`` to ``final``.

    * Warm-up (``step < warmup_steps``): ``peak * (step + 1) / warmup_steps``. Step 0 already moves (no step at lr 0,
      unlike BYOL's ``peak * step / warmup_steps``) and the last warm-up step reaches the peak.
    * Then ``cosine_schedule(step - warmup_steps, total_steps - warmup_steps, peak, final)``: ``peak`` at
      ``step == warmup_steps``, ``final`` at ``step >= total_steps``.
    * ``warmup_steps = 0`` is a plain cosine; ``warmup_steps >= total_steps`` warms up and then stays at ``final``.
    """
    if total_steps < 0 or warmup_steps < 0:
        raise ValueError(f"total_steps and warmup_steps must be >= 0, got {total_steps} and {warmup_steps}")
    step = max(step, 0)
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    return cosine_schedule(step - warmup_steps, total_steps - warmup_steps, peak, final)


def step_decay(peak: float, epoch: float, milestones, gamma: float) -> float:
    """``peak * gamma ** #{m in milestones : epoch >= m}`` (torch's ``MultiStepLR``, in epochs)."""
    return peak * gamma ** sum(1 for m in milestones if epoch >= m)


def warmup_step_decay(step: int, steps_per_epoch: int, warmup_steps: int, peak: float, milestones,
                      gamma: float) -> float:
    """Linear warm-up to ``peak`` as :func:`warmup_cosine`, then :func:`step_decay` at ``milestones`` (epochs, counted
    as ``step / steps_per_epoch``): Revisiting's schedule (5 warm-up epochs, x0.1 at epochs 15 and 25 of 35)."""
    step = max(step, 0)
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    return step_decay(peak, step / max(steps_per_epoch, 1), milestones, gamma)


def cosine_ema_momentum(step: int, total_steps: int, base: float) -> float:
    """BYOL/RELICv2 target momentum ``1 - (1 - base) (cos(pi k / K) + 1) / 2``: ``base`` at k = 0, 1 at k >= K."""
    return cosine_schedule(step, total_steps, base, 1.0)
