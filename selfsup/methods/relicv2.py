"""RELICv2 (Tomasev et al. 2022): a contrastive likelihood over subsampled negatives plus a KL invariance term.

Views (A3): L large views and S small views per image (``cfg.views``; the paper uses 4 x 224 + 2 x 96), large views
optionally background-masked with probability p_m (A4; the sampler does it).
Networks (A2):
  * online = encoder f + projector + predictor (projector and predictor as in BYOL: Linear-BN-ReLU-Linear);
  * target = EMA of encoder + projector, momentum ``1 - (1 - base)(cos(pi k / K) + 1) / 2``, base 0.996.
  Large views go through both networks, small views only through the online network.
Loss (A1-A2): :func:`selfsup.losses.relic_multiview_loss` over large x large pairs (the same crop included) and
small x large pairs, averaged; under DDP the negatives come from the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from selfsup.config import Config, register_method_args
from selfsup.errors import ConfigError
from selfsup.losses import relic_multiview_loss
from selfsup.methods.base import (EMASpec, Method, StepContext, StepOutput, forward_by_resolution, frozen_copy,
                                  register_method)
from selfsup.methods.distributed import gather_no_grad, gather_with_grad
from selfsup.models.backbones import create_backbone
from selfsup.models.heads import MLP


@register_method_args("relicv2")
@dataclass
class RELICv2Args:
    """RELICv2's hyper-parameters (names as in the paper; defaults from Tables 18-19 and method-details A2)."""

    name: str = "relicv2"
    temperature: float = 0.2  # tau
    beta: float = 1.0  # invariance (KL) scale
    contrast_scale: float = 1.0  # c: scale of the contrastive likelihood
    num_negatives: Optional[int] = 10  # n_e; None = all other items of the (global) batch
    alpha: Optional[float] = None  # SSLight re-balancing of large-large vs small-large pairs; None = plain mean (eq. 3)
    ema_base: float = 0.996  # target momentum at step 0, cosine to 1
    projector_hidden: int = 4096
    projector_dim: int = 256
    predictor_hidden: int = 4096
    head_norm: str = "batch"  # batch | none

    def validate(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}")
        if self.beta < 0 or self.contrast_scale < 0:
            raise ConfigError("method.beta and method.contrast_scale must be >= 0")
        if self.num_negatives is not None and self.num_negatives < 1:
            raise ConfigError(f"method.num_negatives must be >= 1 or null, got {self.num_negatives}")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"method.alpha must be in [0, 1] or null, got {self.alpha}")
        if not 0.0 <= self.ema_base <= 1.0:
            raise ConfigError(f"method.ema_base must be in [0, 1], got {self.ema_base}")
        if self.head_norm not in ("batch", "none"):
            raise ConfigError(f"method.head_norm must be batch or none, got '{self.head_norm}'")
        for key in ("projector_hidden", "projector_dim", "predictor_hidden"):
            if getattr(self, key) < 1:
                raise ConfigError(f"method.{key} must be >= 1")


@register_method("relicv2")
class RELICv2(Method):
    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        a: RELICv2Args = cfg.method
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
        a: RELICv2Args = self.args
        online_large = forward_by_resolution(self.online, views.large)
        online_small = forward_by_resolution(self.online, views.small)
        with torch.no_grad():
            target_large = forward_by_resolution(self.target, views.large)
        loss = relic_multiview_loss(
            [gather_with_grad(z) for z in online_large],
            [gather_with_grad(z) for z in online_small],
            [gather_no_grad(k) for k in target_large],
            temperature=a.temperature, beta=a.beta, contrast_scale=a.contrast_scale,
            num_negatives=a.num_negatives, generator=ctx.generator, alpha=a.alpha,
        )
        logs: Dict[str, float] = {}
        return StepOutput(loss=loss, logs=logs)
