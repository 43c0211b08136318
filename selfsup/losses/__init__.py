"""Losses: pure functions of embeddings, each with its own tests. No data loading, no optimisers, no distributed code."""

from selfsup.losses.pairing import ViewPair, baseline_alpha, combine_pair_losses, multiview_loss, view_pairs
from selfsup.losses.relic import relic_multiview_loss, relic_pair_loss, sample_candidates

__all__ = [
    "ViewPair",
    "baseline_alpha",
    "combine_pair_losses",
    "multiview_loss",
    "relic_multiview_loss",
    "relic_pair_loss",
    "sample_candidates",
    "view_pairs",
]
