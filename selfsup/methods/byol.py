"""BYOL (Grill et al. 2020): an online network predicts a slow-moving target network's projection of another view.

Views: L large and S small views per image (``cfg.views``; the paper uses 2 large views and no small ones).
Networks (:mod:`selfsup.methods.bootstrap`):
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

from selfsup.config import Config
from selfsup.errors import ConfigError
from selfsup.losses import byol_multiview_loss
from selfsup.methods.base import StepContext, StepOutput, register_method
from selfsup.methods.bootstrap import BootstrapArgs, BootstrapMethod


@dataclass
class BYOLArgs(BootstrapArgs):
    """BYOL's hyper-parameters (defaults from the paper, section 3.3): those of the online/target pair."""

    name: str = "byol"


@register_method("byol", args=BYOLArgs)
class BYOL(BootstrapMethod):
    def __init__(self, cfg: Config) -> None:
        if cfg.views.large.count < 2 and cfg.views.small.count == 0:
            raise ConfigError("method byol needs a pair of views: views.large.count >= 2 or views.small.count >= 1")
        super().__init__(cfg)

    def forward(self, views, ctx: StepContext) -> StepOutput:
        a: BYOLArgs = self.args
        online_large, online_small, target_large, features = self.embed(views)
        return StepOutput(loss=byol_multiview_loss(online_large, online_small, target_large, alpha=a.alpha),
                          features=features)
