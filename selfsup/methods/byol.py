"""BYOL (Grill et al. 2020): an online network predicts a slow-moving target network's projection of another view.

Views: L large and S small views per image (``cfg.views``; the paper uses 2 large views and no small ones).
Networks:
  * online = encoder f + projector ``Linear(d, 4096)-BN-ReLU-Linear(4096, 256)`` + predictor of the same shape on the
    256-d projection;
  * target = EMA of encoder + projector, momentum ``1 - (1 - base)(cos(pi k / K) + 1) / 2`` from base 0.996 to 1.
  Large views go through both networks, small views only through the online network.
Loss: :func:`selfsup.losses.byol_multiview_loss`, the mean of ``2 - 2 cos(online, stopgrad(target))`` over pairs of
different views (see its docstring for the scale). The loss needs no negatives; the embeddings are still gathered over
processes so that every rank computes (and logs) the loss of the whole batch, which gives the same gradient as the
per-rank loss averaged by DDP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import nn

from selfsup.config import Config, register_method_args
from selfsup.errors import ConfigError
from selfsup.losses import byol_multiview_loss
from selfsup.methods.base import (EMASpec, Method, StepContext, StepOutput, forward_by_resolution, frozen_copy,
                                  register_method)
from selfsup.methods.distributed import gather_no_grad, gather_with_grad
from selfsup.models.backbones import create_backbone
from selfsup.models.heads import MLP


@register_method_args("byol")
@dataclass
class BYOLArgs:
    """BYOL's hyper-parameters (defaults from the paper, section 3.3)."""

    name: str = "byol"
    alpha: Optional[float] = None  # SSLight re-balancing of large-large vs small-large pairs; None = plain mean
    ema_base: float = 0.996  # target momentum tau_base at step 0, cosine to 1
    projector_hidden: int = 4096
    projector_dim: int = 256
    predictor_hidden: int = 4096
    head_norm: str = "batch"  # batch | none

    def validate(self) -> None:
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"method.alpha must be in [0, 1] or null, got {self.alpha}")
        if not 0.0 <= self.ema_base <= 1.0:
            raise ConfigError(f"method.ema_base must be in [0, 1], got {self.ema_base}")
        if self.head_norm not in ("batch", "none"):
            raise ConfigError(f"method.head_norm must be batch or none, got '{self.head_norm}'")
        for key in ("projector_hidden", "projector_dim", "predictor_hidden"):
            if getattr(self, key) < 1:
                raise ConfigError(f"method.{key} must be >= 1")


@register_method("byol")
class BYOL(Method):
    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        a: BYOLArgs = cfg.method
        if cfg.views.large.count < 2 and cfg.views.small.count == 0:
            raise ConfigError("method byol needs a pair of views: views.large.count >= 2 or views.small.count >= 1")
        self.backbone = create_backbone(cfg.model, image_size=cfg.views.large.size)
        self.projector = MLP(self.backbone.num_features, a.projector_hidden, a.projector_dim, norm=a.head_norm)
        self.predictor = MLP(a.projector_dim, a.predictor_hidden, a.projector_dim, norm=a.head_norm)
        self.target_backbone = frozen_copy(self.backbone)
        self.target_projector = frozen_copy(self.projector)
        self.ema = EMASpec(base=a.ema_base, schedule="cosine")

    def ema_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.target_backbone), (self.projector, self.target_projector)]

    def online(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.projector(self.backbone(x)))

    def target(self, x: torch.Tensor) -> torch.Tensor:
        return self.target_projector(self.target_backbone(x))

    def forward(self, views, ctx: StepContext) -> StepOutput:
        a: BYOLArgs = self.args
        online_large = forward_by_resolution(self.online, views.large)
        online_small = forward_by_resolution(self.online, views.small)
        with torch.no_grad():
            target_large = forward_by_resolution(self.target, views.large)
        loss = byol_multiview_loss([gather_with_grad(z) for z in online_large],
                                   [gather_with_grad(z) for z in online_small],
                                   [gather_no_grad(k) for k in target_large], alpha=a.alpha)
        return StepOutput(loss=loss)
