"""DINO (Caron et al. 2021) with SSLight's settings (Tan et al. ICLR'23; method-details B 1.1, 1.2, 1.4).

Views (B 1.1): L global (large) and S local (small) views (``cfg.views``; DINO/SSLight use 2 x 224 + 6 x 96 or 128).
Networks (B 1.4):
  * student = backbone + :class:`~selfsup.models.heads.DINOHead` (3-layer GELU MLP with BatchNorm for CNNs, none for
    ViTs -> 256-d bottleneck -> L2 normalisation -> weight-normalised Linear to ``out_dim`` = 4096 with g fixed at 1).
    As in DINO's ``MultiCropWrapper``, the backbone runs once per resolution group and the head once on the features of
    all views together (its BatchNorm normalises over all views);
  * teacher = EMA of backbone + head, momentum cosine 0.996 -> 1 per step; it sees only the large views, under no_grad.
Loss (B 1.2): :func:`selfsup.losses.dino_multiview_loss` over (teacher large iq, student view v != iq) pairs, student
temperature 0.1, teacher temperature warmed up 0.04 -> 0.07 (:func:`teacher_temperature`), combined with SSLight's
``alpha`` (None: DINO's plain mean over pairs).
Centre: an EMA (momentum 0.9) of the teacher outputs, updated once per step from the mean over *all* teacher outputs of
the global batch (all-reduced across processes).
Last layer: its gradients are dropped during the first ``freeze_last_layer_epochs`` epochs (DINO's ``cancel_gradients_
last_layer``; the optimiser then leaves it and its momentum untouched).

Choices where the reference leaves room:
  * The centre update is computed in ``forward`` (after the loss, from the teacher outputs) but *applied* in
    :meth:`DINO.after_optimizer_step`. So the centre never affects the step that produced it (as in DINO, where
    ``update_center`` follows the loss), a step rejected for a non-finite loss leaves the checkpointed centre untouched,
    and calling ``forward`` twice gives the same loss.
  * The loss is per sample apart from the centre, so each process computes it on its own slice (no gathering of the
    4096-d outputs): DDP's gradient averaging then gives exactly the gradient of the global-batch loss. The value
    returned is shifted by a constant to the mean over processes (one scalar all-reduce), so every process reports and
    checks the global loss, as one process on the whole batch would.
  * The teacher temperature follows DINO's warm-up per optimiser step instead of per epoch (see
    :func:`teacher_temperature`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from selfsup.config import Config
from selfsup.errors import ConfigError
from selfsup.losses import dino_multiview_loss, dino_teacher_probs, update_center
from selfsup.method_args import at_least, check_alpha, positive
from selfsup.methods.base import (
    EMASpec,
    Method,
    StepContext,
    StepOutput,
    detached_features,
    drop_gradients,
    forward_by_resolution,
    frozen_copy,
    register_method,
)
from selfsup.methods.distributed import all_reduce_mean
from selfsup.models.heads import DINOHead
from selfsup.models.registry import create_backbone
from selfsup.schedules import cosine_schedule

TEACHER_TEMPERATURE_SCHEDULES = ("linear", "cosine")  # DINO's teacher temperature warm-up shapes



def teacher_temperature(epoch: float, warmup_value: float, final_value: float, warmup_epochs: float,
                        schedule: str = "linear") -> float:
    """The teacher temperature at fractional epoch ``epoch`` (``ctx.epoch_float``: evaluated every optimiser step).

    * ``"linear"``: ``warmup_value + (final_value - warmup_value) * epoch / warmup_epochs``. DINO and SSLight use
      ``np.linspace(warmup_value, final_value, warmup_epochs)`` indexed by the integer epoch, which holds each value for
      a whole epoch and reaches ``final_value`` at epoch ``warmup_epochs - 1``; here the ramp is continuous and reaches
      it at ``warmup_epochs`` (for 50 epochs the slopes differ by 2%). It also allows a fractional warm-up (short runs).
    * ``"cosine"``: ``final + (warmup - final) * (1 + cos(pi * epoch / warmup_epochs)) / 2``.

    ``final_value`` from ``warmup_epochs`` on (and throughout when ``warmup_epochs`` is 0).
    """
    if schedule not in TEACHER_TEMPERATURE_SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(TEACHER_TEMPERATURE_SCHEDULES)}, got '{schedule}'")
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return final_value
    if schedule == "cosine":
        return cosine_schedule(epoch, warmup_epochs, warmup_value, final_value)  # type: ignore[arg-type]
    return warmup_value + (final_value - warmup_value) * max(epoch, 0.0) / warmup_epochs


@dataclass
class DINOArgs:
    """DINO's hyper-parameters (defaults: SSLight's MobileNetV2 setting, method-details B 1.4, and DINO's paper)."""

    name: str = "dino"
    out_dim: int = 4096  # K: prototypes of the weight-normalised last layer
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    head_norm: str = "batch"  # batch (SSLight CNN) | none (DINO ViT)
    norm_last_layer: bool = True  # keep the last layer's weight-norm g fixed at 1
    student_temperature: float = 0.1
    teacher_temperature: float = 0.07  # after the warm-up
    warmup_teacher_temperature: float = 0.04  # at epoch 0
    teacher_temperature_warmup_epochs: float = 50.0
    teacher_temperature_schedule: str = "linear"  # linear | cosine
    center_momentum: float = 0.9
    ema_base: float = 0.996  # teacher momentum at step 0, cosine to 1
    freeze_last_layer_epochs: int = 1  # last layer's gradients dropped while ctx.epoch < this
    alpha: Optional[float] = None  # SSLight re-balancing of global-global vs global-local pairs; None = plain mean

    def validate(self) -> None:
        at_least(self, ("out_dim", "hidden_dim", "bottleneck_dim"))
        if self.head_norm not in ("batch", "none"):
            raise ConfigError(f"method.head_norm must be batch or none, got '{self.head_norm}'")
        positive(self, ("student_temperature", "teacher_temperature", "warmup_teacher_temperature"))
        if self.teacher_temperature_warmup_epochs < 0:
            raise ConfigError(f"method.teacher_temperature_warmup_epochs must be >= 0, "
                              f"got {self.teacher_temperature_warmup_epochs}")
        if self.teacher_temperature_schedule not in TEACHER_TEMPERATURE_SCHEDULES:
            raise ConfigError(f"method.teacher_temperature_schedule must be linear or cosine, "
                              f"got '{self.teacher_temperature_schedule}'")
        if not 0.0 <= self.center_momentum <= 1.0:
            raise ConfigError(f"method.center_momentum must be in [0, 1], got {self.center_momentum}")
        if not 0.0 <= self.ema_base <= 1.0:
            raise ConfigError(f"method.ema_base must be in [0, 1], got {self.ema_base}")
        if self.freeze_last_layer_epochs < 0:
            raise ConfigError(f"method.freeze_last_layer_epochs must be >= 0, got {self.freeze_last_layer_epochs}")
        check_alpha(self.alpha)


@register_method("dino", args=DINOArgs)
class DINO(Method):
    center: Tensor

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        a: DINOArgs = cfg.method
        if cfg.views.large.count + cfg.views.small.count < 2:
            raise ConfigError("method dino pairs each large view with the other views: it needs at least 2 views "
                              "(views.large.count + views.small.count)")
        self.backbone = create_backbone(cfg.model, image_size=cfg.views.large.size)
        self.head = DINOHead(self.backbone.num_features, a.out_dim, a.hidden_dim, a.bottleneck_dim,
                             norm=a.head_norm, norm_last_layer=a.norm_last_layer)
        self.teacher_backbone = frozen_copy(self.backbone)
        self.teacher_head = frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(1, a.out_dim))
        self.ema = EMASpec(base=a.ema_base, schedule="cosine")
        self._batch_center: Optional[Tensor] = None  # this step's mean teacher output, applied after the step

    def ema_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.teacher_backbone), (self.head, self.teacher_head)]

    def teacher(self, x: Tensor) -> Tensor:
        return self.teacher_head(self.teacher_backbone(x))

    def student(self, views) -> Tuple[List[Tensor], Optional[Tensor]]:
        """Student logits of every view (large first): backbone once per resolution group, head once on all; and the
        detached backbone features of the large views (:attr:`StepOutput.features`)."""
        large = forward_by_resolution(self.backbone, views.large)
        feats = large + forward_by_resolution(self.backbone, views.small)
        return list(self.head(torch.cat(feats, dim=0)).chunk(len(feats), dim=0)), detached_features(large)

    def forward(self, views, ctx: StepContext) -> StepOutput:
        a: DINOArgs = self.args
        num_large = len(views.large)
        student, features = self.student(views)
        with torch.no_grad():
            teacher = forward_by_resolution(self.teacher, views.large)
        temp = teacher_temperature(ctx.epoch_float, a.warmup_teacher_temperature, a.teacher_temperature,
                                   a.teacher_temperature_warmup_epochs, a.teacher_temperature_schedule)
        probs = [dino_teacher_probs(t, self.center, temperature=temp) for t in teacher]
        local = dino_multiview_loss(student[:num_large], student[num_large:], probs,
                                    temperature=a.student_temperature, alpha=a.alpha)
        # this process's gradient, the global batch's value (see the module docstring)
        loss = local + (all_reduce_mean(local.detach()) - local.detach())
        with torch.no_grad():
            self._batch_center = torch.cat(teacher, dim=0).float().mean(dim=0, keepdim=True)
            entropy = torch.special.entr(torch.cat(probs, dim=0)).sum(dim=-1).mean()
        return StepOutput(loss=loss, logs={"teacher_temperature": temp, "teacher_entropy": float(entropy)},
                          features=features)

    def on_after_backward(self, ctx: StepContext) -> None:
        if ctx.epoch < self.args.freeze_last_layer_epochs:
            drop_gradients(self.head.last_layer)

    @torch.no_grad()
    def after_optimizer_step(self, ctx: StepContext) -> Dict[str, float]:
        """Move the centre toward the global batch's mean teacher output of the step just taken."""
        if self._batch_center is not None:
            batch_mean = all_reduce_mean(self._batch_center)
            self.center.copy_(update_center(self.center, batch_mean, self.args.center_momentum))
            self._batch_center = None
        return {}
