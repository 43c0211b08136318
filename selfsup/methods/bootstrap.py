"""The BYOL network pair, shared by BYOL, RELIC and RELICv2: an online network and a slow EMA target.

* online = encoder f + projector ``Linear(d, h)-BN-ReLU-Linear(h, p)`` + predictor of the same shape on the p-d
  projection;
* target = EMA of encoder + projector, momentum ``1 - (1 - base)(cos(pi k / K) + 1) / 2`` from ``ema_base`` to 1
  (applied by the engine through :meth:`BootstrapMethod.ema_pairs`).

Large views go through both networks, small views only through the online network (RELICv2 A2). Each resolution group
runs as one batch (:func:`forward_by_resolution`), and the embeddings are gathered over processes so that every rank
computes the loss of the global batch (negatives from the whole batch for RELIC/RELICv2; for BYOL the same gradient as
DDP's average of per-rank losses). A method subclass adds only its loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import nn

from selfsup.config import Config
from selfsup.errors import ConfigError
from selfsup.method_args import at_least, check_alpha
from selfsup.methods.base import EMASpec, Method, detached_features, forward_by_resolution, frozen_copy
from selfsup.methods.distributed import gather_no_grad, gather_with_grad
from selfsup.models.heads import MLP
from selfsup.models.registry import create_backbone

__all__ = ["BootstrapArgs", "BootstrapMethod"]


@dataclass
class BootstrapArgs:
    """Arguments of the online/target pair (defaults from BYOL section 3.3 and RELICv2 Tables 18-19)."""

    name: str = ""
    alpha: Optional[float] = None  # SSLight re-balancing of large-large vs small-large pairs; None = plain mean
    ema_base: float = 0.996  # target momentum at step 0, cosine to 1
    projector_hidden: int = 4096
    projector_dim: int = 256
    predictor_hidden: int = 4096
    head_norm: str = "batch"  # batch | none

    def validate(self) -> None:
        check_alpha(self.alpha)
        if not 0.0 <= self.ema_base <= 1.0:
            raise ConfigError(f"method.ema_base must be in [0, 1], got {self.ema_base}")
        if self.head_norm not in ("batch", "none"):
            raise ConfigError(f"method.head_norm must be batch or none, got '{self.head_norm}'")
        at_least(self, ("projector_hidden", "projector_dim", "predictor_hidden"))


class BootstrapMethod(Method):
    """Online encoder + projector + predictor, EMA target encoder + projector; subclasses define ``forward``."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        a: BootstrapArgs = cfg.method
        self.backbone = create_backbone(cfg.model, image_size=cfg.views.large.size)
        self.projector = MLP(self.backbone.num_features, a.projector_hidden, a.projector_dim, norm=a.head_norm)
        self.predictor = MLP(a.projector_dim, a.predictor_hidden, a.projector_dim, norm=a.head_norm)
        self.target_backbone = frozen_copy(self.backbone)
        self.target_projector = frozen_copy(self.projector)
        self.ema = EMASpec(base=a.ema_base, schedule="cosine")

    def ema_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.target_backbone), (self.projector, self.target_projector)]

    def online(self, x: torch.Tensor) -> torch.Tensor:
        return self.online_head(self.backbone(x))

    def online_head(self, h: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.projector(h))

    def target(self, x: torch.Tensor) -> torch.Tensor:
        return self.target_projector(self.target_backbone(x))

    def embed(self, views) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor], Optional[torch.Tensor]]:
        """``(online_large, online_small, target_large, features)``: lists of (global B, D) embeddings, one per view,
        and the detached online backbone features of this process's large views (:attr:`StepOutput.features`).

        The online embeddings keep their gradient through the gather; the target ones are computed without gradient.
        The backbone and the heads each run once on all large views together.
        """
        h_large = forward_by_resolution(self.backbone, views.large)
        online_large = forward_by_resolution(self.online_head, h_large)
        online_small = forward_by_resolution(self.online, views.small)
        with torch.no_grad():
            target_large = forward_by_resolution(self.target, views.large)
        return ([gather_with_grad(z) for z in online_large], [gather_with_grad(z) for z in online_small],
                [gather_no_grad(k) for k in target_large], detached_features(h_large))
