"""RELIC (Mitrovic et al. 2021, "Representation Learning via Invariant Causal Mechanisms"): RELICv2 restricted to
RELIC's views and negatives.

RELIC's objective (method-details B 3.2) is a contrastive likelihood plus a KL term that makes the prediction invariant
to swapping the two augmentations, the same loss as RELICv2's eq. 1-2 (:func:`selfsup.losses.relic_pair_loss`). What
RELICv2 added is the views and the negatives, which this method removes:

* 2 large views, no small views, no saliency masking (``views.large.count=2``, ``views.small.count=0``,
  ``views.mask_p=0``; anything else is a configuration error);
* all other items of the global batch as negatives (``num_negatives=None``), as RELIC contrasted against the whole
  batch instead of RELICv2's n_e = 10 sampled ones.

Networks, target EMA and the rest of the arguments are RELICv2's (:mod:`selfsup.methods.relicv2`). Choice: the pairs
are RELICv2's large x large pairs including the same crop on both sides (2 x 2 = 4 pair terms), reading RELIC's sum
over augmentation pairs ``a_lk in A x A`` as including l = k, the reading RELICv2's eq. 3 makes explicit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from selfsup.config import Config
from selfsup.errors import ConfigError
from selfsup.methods.base import register_method
from selfsup.methods.relicv2 import RELICv2, RELICv2Args


@dataclass
class RELICArgs(RELICv2Args):
    """RELICv2's arguments with RELIC's negatives: all of the global batch."""

    name: str = "relic"
    num_negatives: Optional[int] = None  # n_e; None = all other items of the (global) batch


@register_method("relic", args=RELICArgs)
class RELIC(RELICv2):
    def __init__(self, cfg: Config) -> None:
        v = cfg.views
        if v.large.count != 2 or v.small.count != 0 or v.mask_p > 0:
            raise ConfigError("method relic uses 2 large views and no small views (views.small.count=0) and no masking "
                              f"(views.mask_p=0); got views.large.count={v.large.count}, "
                              f"views.small.count={v.small.count}, views.mask_p={v.mask_p}")
        super().__init__(cfg)
