"""One optimiser step of pretraining, in two halves with the NaN check between them.

:meth:`TrainStep.forward` sets the step's learning rate and weight decay
(:class:`~selfsup.engine.schedules.RunSchedule`), builds the method's :class:`~selfsup.methods.base.StepContext` (its
generator seeded by (seed, "method", step)), reseeds the global torch generator from (seed, "global", step, rank) and
runs the method under Fabric's autocast. :meth:`TrainStep.update` applies the loss: backward, the method's
``on_after_backward`` (e.g. freezing a layer's gradient), gradient clipping (``optim.clip_grad``: global norm, or
DINO's per parameter), the optimiser step, the EMA of the target networks, and the method's ``after_optimizer_step``;
it returns the step's log values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch

from selfsup.config import Config
from selfsup.data.views import Views
from selfsup.engine.ema import ema_update
from selfsup.engine.optim import clip_per_parameter
from selfsup.engine.schedules import RunSchedule, set_lr, set_weight_decay
from selfsup.engine.seeds import derive_seed, generator_for
from selfsup.methods.base import Method, StepContext, StepOutput

__all__ = ["Forward", "TrainStep"]


@dataclass
class Forward:
    """The method's output for one step, with the context and learning rate it was computed under."""

    out: StepOutput
    ctx: StepContext
    lr: float


class TrainStep:
    """The forward and update of one step (see the module docstring). ``model`` and ``optimizer`` are Fabric's
    wrappers; ``method`` is the method inside them."""

    def __init__(self, fabric, cfg: Config, model, method: Method, optimizer, schedule: RunSchedule) -> None:
        self.fabric, self.model, self.method, self.optimizer, self.schedule = fabric, model, method, optimizer, schedule
        self.seed, self.optim = cfg.seed, cfg.optim

    def forward(self, views: Views, step: int) -> Forward:
        s = self.schedule
        lr = s.lr(step)
        set_lr(self.optimizer, lr)
        weight_decay = s.weight_decay(step)
        if weight_decay is not None:
            set_weight_decay(self.optimizer, weight_decay)
        ctx = StepContext(step=step, total_steps=s.total_steps, epoch=step // s.steps_per_epoch,
                          generator=generator_for(self.seed, "method", step), steps_per_epoch=s.steps_per_epoch)
        torch.manual_seed(derive_seed(self.seed, "global", step, self.fabric.global_rank))
        with self.fabric.autocast():
            out = self.model(views, ctx)
        return Forward(out=out, ctx=ctx, lr=lr)

    def update(self, fwd: Forward) -> Dict[str, float]:
        """Apply the (finite) loss of ``fwd``; the step's logs: loss, lr, weight decay, EMA momentum, the method's."""
        o, method, loss = self.optim, self.method, fwd.out.loss
        self.optimizer.zero_grad(set_to_none=True)
        self.fabric.backward(loss)
        method.on_after_backward(fwd.ctx)
        if o.clip_grad is not None and o.clip_grad_mode == "per_param":
            clip_per_parameter(method.parameters(), o.clip_grad)
        elif o.clip_grad is not None:
            self.fabric.clip_gradients(self.model, self.optimizer, max_norm=o.clip_grad, error_if_nonfinite=False)
        self.optimizer.step()
        logs: Dict[str, float] = {"loss": loss.item(), "lr": fwd.lr}
        if o.weight_decay_end is not None:
            logs["weight_decay"] = self.optimizer.param_groups[0]["weight_decay"]
        if method.ema is not None:
            m = self.schedule.ema_momentum(fwd.ctx.step, method.ema)
            for online, target in method.ema_pairs():
                ema_update(target, online, m)
            logs["ema_momentum"] = m
        logs.update(method.after_optimizer_step(fwd.ctx))
        logs.update({k: float(v) for k, v in fwd.out.logs.items()})
        return logs
