"""Exemplar's loss (Revisiting SSL, method-details B 2.3): FaceNet's semi-hard triplet loss on squared L2 distances, as
TF-contrib's ``triplet_semihard_loss`` computes it.

For every anchor-positive pair ``(a, p)`` (same label, ``a != p``) the negative is the **semi-hard** one: the closest
negative that is still farther from the anchor than the positive, ``min {D_an : D_an > D_ap}``; when no negative is
that far, the farthest negative ``max D_an`` is used instead (TF's fallback). The loss is
``mean over all (a, p) of max(margin + D_ap - D_an, 0)`` with ``D`` the squared Euclidean distance.

The search is vectorised by sorting each anchor's negative distances once and finding each ``D_ap`` in them with
``torch.searchsorted``: O(N^2 log N) time and O(N^2) memory, where TF builds an (N, N, N) tile.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["semi_hard_triplet_loss", "squared_distances"]


def squared_distances(x: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances of the rows of ``x``, clamped at 0, exact zeros on the diagonal."""
    sq = x.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp_min(0.0)
    return d * (1.0 - torch.eye(len(x), device=x.device, dtype=x.dtype))


def semi_hard_triplet_loss(embeddings: Tensor, labels: Tensor, margin: float = 0.5) -> Tensor:
    """Semi-hard triplet loss of ``embeddings (N, D)`` with integer ``labels (N,)`` (see the module docstring).

    Anchors without a negative (all N share a label) contribute nothing; with no positive pair at all the loss is 0
    (kept in the graph)."""
    n = embeddings.shape[0]
    d = squared_distances(embeddings.float())
    same = labels[:, None] == labels[None, :]
    positive = same & ~torch.eye(n, dtype=torch.bool, device=d.device)
    negative = ~same
    inf = torch.finfo(d.dtype).max
    neg_sorted, _ = torch.where(negative, d, torch.full_like(d, inf)).sort(dim=1)  # row a: D_an ascending, then inf
    count = negative.sum(1)  # negatives per anchor
    idx = torch.searchsorted(neg_sorted.detach().contiguous(), d.detach().contiguous(), right=True)  # first D_an > D_ap
    has_outside = idx < count[:, None]
    outside = neg_sorted.gather(1, idx.clamp_max(n - 1))
    farthest = neg_sorted.gather(1, (count - 1).clamp_min(0)[:, None]).expand(n, n)
    d_an = torch.where(has_outside, outside, farthest)
    valid = positive & (count > 0)[:, None]
    terms = (margin + d - d_an).clamp_min(0.0) * valid
    return terms.sum() / valid.sum().clamp_min(1)
