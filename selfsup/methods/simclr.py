"""SimCLR (Chen et al. 2020): contrast every view against all other views of the global batch, no target network.

Views: L large and S small views per image (``cfg.views``; the paper uses 2 large views and no small ones). Every view,
large or small, goes through the same network.
Network: encoder f + projector ``Linear(d, 2048)-BN-ReLU-Linear(2048, 128)`` (the paper's 2-layer head g, with
BatchNorm as in its reference code; the loss is on g's output, the representation is f's). No EMA, no predictor.
Loss: :func:`selfsup.losses.nt_xent_loss` over pairs of different views (small views are positives of large views only,
see its docstring), with the negatives drawn from the global batch: each view's embeddings are gathered over processes
with their gradient (``gather_with_grad``), so every rank computes the loss of the whole batch.

Temperature: 0.1 by default, the paper's ImageNet setting (Table 5: the best tau with L2-normalised embeddings at batch
4096). Small batches on small images usually prefer a larger tau; the CPU recipes use 0.2, like their RELICv2
counterparts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from selfsup.config import Config
from selfsup.errors import ConfigError
from selfsup.losses import nt_xent_loss
from selfsup.method_args import at_least, check_alpha
from selfsup.methods.base import (
    Method,
    StepContext,
    StepOutput,
    detached_features,
    forward_by_resolution,
    register_method,
)
from selfsup.methods.distributed import gather_with_grad
from selfsup.models.heads import MLP
from selfsup.models.registry import create_backbone


@dataclass
class SimCLRArgs:
    """SimCLR's hyper-parameters (names as in the paper)."""

    name: str = "simclr"
    temperature: float = 0.1  # tau
    alpha: Optional[float] = None  # SSLight re-balancing of large-large vs small-large pairs; None = plain mean
    projector_hidden: int = 2048
    projector_dim: int = 128
    head_norm: str = "batch"  # batch | none

    def validate(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}")
        check_alpha(self.alpha)
        if self.head_norm not in ("batch", "none"):
            raise ConfigError(f"method.head_norm must be batch or none, got '{self.head_norm}'")
        at_least(self, ("projector_hidden", "projector_dim"))


@register_method("simclr", args=SimCLRArgs)
class SimCLR(Method):
    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        a: SimCLRArgs = cfg.method
        if cfg.views.large.count < 2 and cfg.views.small.count == 0:
            raise ConfigError("method simclr needs a positive pair: views.large.count >= 2 or views.small.count >= 1")
        self.backbone = create_backbone(cfg.model, image_size=cfg.views.large.size)
        self.projector = MLP(self.backbone.num_features, a.projector_hidden, a.projector_dim, norm=a.head_norm)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))

    def forward(self, views, ctx: StepContext) -> StepOutput:
        a: SimCLRArgs = self.args
        h_large = forward_by_resolution(self.backbone, views.large)
        large = forward_by_resolution(self.projector, h_large)
        small = forward_by_resolution(self.embed, views.small)
        loss = nt_xent_loss([gather_with_grad(z) for z in large], [gather_with_grad(z) for z in small],
                            temperature=a.temperature, alpha=a.alpha)
        return StepOutput(loss=loss, features=detached_features(h_large))
