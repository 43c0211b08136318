"""RELICv2 (Tomasev et al. 2022): a contrastive likelihood over subsampled negatives plus a KL invariance term.

Views (A3): L large views and S small views per image (``cfg.views``; the paper uses 4 x 224 + 2 x 96), large views
optionally background-masked with probability p_m (A4; the sampler does it).
Networks (A2): BYOL's online/target pair (:mod:`selfsup.methods.bootstrap`): online = encoder + projector + predictor,
  target = EMA of encoder + projector (cosine from 0.996 to 1); large views through both, small views online only.
Loss (A1-A2): :func:`selfsup.losses.relic_multiview_loss` over large x large pairs (the same crop included) and
small x large pairs, averaged; under DDP the negatives come from the global batch.
"""

from __future__ import annotations

from selfsup.losses import relic_multiview_loss
from selfsup.method_args import RELICv2Args  # noqa: F401  (the config schema of this method)
from selfsup.methods.base import StepContext, StepOutput, register_method
from selfsup.methods.bootstrap import BootstrapMethod


@register_method("relicv2")
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
