"""RELICv2 (Tomasev et al. 2022): a contrastive likelihood over subsampled negatives plus a KL invariance term.

Views (A3): L large views and S small views per image (``cfg.views``; the paper uses 4 x 224 + 2 x 96), large views
optionally background-masked with probability p_m (A4; the sampler does it).
Networks (A2): BYOL's online/target pair (:mod:`selfsup.methods.bootstrap`): online = encoder + projector + predictor,
  target = EMA of encoder + projector (cosine from 0.996 to 1); large views through both, small views online only.
Loss (A1-A2): :func:`selfsup.losses.relic_multiview_loss` over large x large pairs (the same crop included) and
small x large pairs, averaged; under DDP the negatives come from the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from selfsup.errors import ConfigError
from selfsup.losses import relic_multiview_loss
from selfsup.methods.base import StepContext, StepOutput, register_method
from selfsup.methods.bootstrap import BootstrapArgs, BootstrapMethod


@dataclass
class RELICv2Args(BootstrapArgs):
    """RELICv2's hyper-parameters (names as in the paper; defaults from Tables 18-19 and method-details A2).

    ``alpha`` (SSLight re-balancing of large-large vs small-large pairs) is None by default: the plain mean of eq. 3.
    """

    name: str = "relicv2"
    temperature: float = 0.2  # tau
    beta: float = 1.0  # invariance (KL) scale
    contrast_scale: float = 1.0  # c: scale of the contrastive likelihood
    num_negatives: Optional[int] = 10  # n_e; None = all other items of the (global) batch
    # eq. 3's double loop includes the same crop on both sides (online l vs target l); false drops those L terms
    same_crop_pairs: bool = True

    def validate(self) -> None:
        super().validate()
        if self.temperature <= 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}")
        if self.beta < 0 or self.contrast_scale < 0:
            raise ConfigError("method.beta and method.contrast_scale must be >= 0")
        if self.num_negatives is not None and self.num_negatives < 1:
            raise ConfigError(f"method.num_negatives must be >= 1 or null, got {self.num_negatives}")


@register_method("relicv2", args=RELICv2Args)
class RELICv2(BootstrapMethod):
    def forward(self, views, ctx: StepContext) -> StepOutput:
        a: RELICv2Args = self.args
        online_large, online_small, target_large, features = self.embed(views)
        loss = relic_multiview_loss(
            online_large, online_small, target_large,
            temperature=a.temperature, beta=a.beta, contrast_scale=a.contrast_scale,
            num_negatives=a.num_negatives, generator=ctx.generator, alpha=a.alpha, include_same=a.same_crop_pairs,
        )
        return StepOutput(loss=loss, features=features)
