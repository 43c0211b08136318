"""Losses: pure functions of embeddings, each with its own tests.

No data loading, no optimisers, no distributed code.
"""

from selfsup.losses.byol import byol_multiview_loss, byol_pair_loss
from selfsup.losses.dino import dino_multiview_loss, dino_pair_loss, dino_teacher_probs, update_center
from selfsup.losses.moco import moco_multiview_loss, moco_pair_loss
from selfsup.losses.pairing import ViewPair, baseline_alpha, combine_pair_losses, multiview_loss, view_pairs
from selfsup.losses.relic import relic_multiview_loss, relic_pair_loss, sample_candidates
from selfsup.losses.simclr import nt_xent_loss
from selfsup.losses.soft_targets import soft_cross_entropy
from selfsup.losses.swav import sinkhorn, swav_multiview_loss, swav_pair_loss
from selfsup.losses.triplet import semi_hard_triplet_loss, squared_distances

__all__ = [
    "ViewPair",
    "baseline_alpha",
    "byol_multiview_loss",
    "byol_pair_loss",
    "combine_pair_losses",
    "dino_multiview_loss",
    "dino_pair_loss",
    "dino_teacher_probs",
    "moco_multiview_loss",
    "moco_pair_loss",
    "multiview_loss",
    "nt_xent_loss",
    "relic_multiview_loss",
    "relic_pair_loss",
    "sample_candidates",
    "semi_hard_triplet_loss",
    "sinkhorn",
    "soft_cross_entropy",
    "squared_distances",
    "swav_multiview_loss",
    "swav_pair_loss",
    "update_center",
    "view_pairs",
]
