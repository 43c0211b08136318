"""A run's schedules: its length in steps (:class:`RunSchedule`) and writing the values into the optimiser.

The schedules themselves are pure functions in :mod:`selfsup.schedules`; :class:`RunSchedule` fixes their arguments
for one run (``train.steps`` or ``train.epochs``, the warm-up, the peak learning rate scaled from the global batch,
``optim.schedule``). Weight decay is multiplied by the group's ``wd_factor`` (set by
:func:`selfsup.engine.optim.param_groups`: 1 for regular weights, 0 for biases, norm parameters and, under SSLight's
rule, depthwise kernels), so the no-decay groups stay at 0.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from selfsup.config import Config
from selfsup.errors import ConfigError
from selfsup.methods.base import EMASpec
from selfsup.schedules import cosine_ema_momentum, cosine_schedule, scaled_lr, warmup_cosine, warmup_step_decay

__all__ = ["RunSchedule", "set_lr", "set_weight_decay"]


class RunSchedule:
    """The run's length and its learning-rate, weight-decay and EMA-momentum values at each step.

    ``steps_per_epoch`` = dataset size // global batch (the incomplete last batch is dropped); ``total_steps`` =
    ``train.steps``, else ``ceil(train.epochs * steps_per_epoch)``; the warm-up is ``optim.warmup_steps``, else
    ``optim.warmup_epochs`` in steps, at most the run; the peak learning rate is ``scaled_lr(optim.base_lr, batch)``.
    """

    def __init__(self, cfg: Config, num_items: int) -> None:
        t, o = cfg.train, cfg.optim
        self.optim = o
        self.steps_per_epoch = num_items // t.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(f"the dataset has {num_items} images, fewer than train.batch_size={t.batch_size}")
        self.total_steps = t.steps if t.steps is not None else max(1, math.ceil(t.epochs * self.steps_per_epoch))
        warmup = o.warmup_steps if o.warmup_steps is not None else round(o.warmup_epochs * self.steps_per_epoch)
        self.warmup = min(warmup, self.total_steps)
        self.peak_lr = scaled_lr(o.base_lr, t.batch_size)

    def lr(self, step: int) -> float:
        """``optim.schedule``: "step" (warm-up, then x ``gamma`` at each milestone epoch), else warm-up and cosine to
        ``optim.min_lr_ratio`` of the peak."""
        o = self.optim
        if o.schedule == "step":
            return warmup_step_decay(step, self.steps_per_epoch, self.warmup, self.peak_lr, o.milestones, o.gamma)
        return warmup_cosine(step, self.total_steps, self.warmup, self.peak_lr, self.peak_lr * o.min_lr_ratio)

    def weight_decay(self, step: int) -> Optional[float]:
        """The cosine from ``optim.weight_decay`` to ``optim.weight_decay_end``; None when the decay is constant."""
        o = self.optim
        if o.weight_decay_end is None:
            return None
        return cosine_schedule(step, self.total_steps, o.weight_decay, o.weight_decay_end)

    def ema_momentum(self, step: int, ema: EMASpec) -> float:
        """A target network's momentum: the cosine from ``ema.base`` to 1, or ``ema.base`` throughout."""
        return cosine_ema_momentum(step, self.total_steps, ema.base) if ema.schedule == "cosine" else ema.base


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set ``lr`` in every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def set_weight_decay(optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
    """Set ``weight_decay * group["wd_factor"]`` in every group (factor 1 when absent), so no-decay groups stay at 0."""
    for group in optimizer.param_groups:
        group["weight_decay"] = weight_decay * group.get("wd_factor", 1.0)
