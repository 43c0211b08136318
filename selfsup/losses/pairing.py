"""Which views are paired, and how the pair losses are combined. Written once, shared by every multi-view method.

A method's loss is a sum over view pairs (online/student view, target/teacher view). The pairs fall in two kinds:

* ``gg``: both views large (RELICv2) / global (SSLight);
* ``gl``: a small/local online view against a large/global target view (small views never reach the target).

RELICv2 (eq. 3, Listing 1; method-details A2) sums over all L x L large pairs *including* the same crop on both sides,
plus all S x L small-large pairs, divided by (L + S) * L: the plain mean over pairs. SSLight (A5) re-balances the two
kinds: ``alpha * mean(gg) + (1 - alpha) * mean(gl)``. The plain mean is the special case
``alpha = P_gg / (P_gg + P_gl)``, which :func:`combine_pair_losses` uses when ``alpha`` is None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import torch
from torch import Tensor


@dataclass(frozen=True)
class ViewPair:
    """One term of the multi-view sum: ``online`` indexes the online views, ``target`` the target (large) views."""

    online_group: str  # "large" or "small"
    online: int
    target: int
    kind: str  # "gg" or "gl"


def view_pairs(num_large: int, num_small: int, *, include_same: bool = True,
               target_views: Optional[Sequence[int]] = None) -> List[ViewPair]:
    """The pairs of RELICv2 eq. 3: (online large l2, target large l1) for all l1, l2, then (online small s, target l1).

    ``include_same=False`` drops the l1 == l2 terms (the SimCLR/BYOL/SwAV/DINO convention of pairing only different
    crops). ``target_views`` restricts which large views act as targets (default: all of them); SSLight's MoCo takes
    its key from global view 0 only, so its pairs are ``view_pairs(2, S, include_same=False, target_views=[0])``:
    (large 1, large 0) and (small s, large 0).
    """
    targets = range(num_large) if target_views is None else list(target_views)
    for t in targets:
        if not 0 <= t < num_large:
            raise ValueError(f"target view {t} is out of range for {num_large} large views")
    pairs = [ViewPair("large", l2, l1, "gg") for l1 in targets for l2 in range(num_large)
             if include_same or l1 != l2]
    pairs += [ViewPair("small", s, l1, "gl") for l1 in targets for s in range(num_small)]
    return pairs


def combine_pair_losses(gg: Sequence[Tensor], gl: Sequence[Tensor], alpha: Optional[float] = None) -> Tensor:
    """``alpha * mean(gg) + (1 - alpha) * mean(gl)``; ``alpha=None`` is the plain mean over all pairs (A5).

    If one kind is empty its mean is dropped and the other kind carries the full weight (e.g. S = 0 small views).
    """
    if not gg and not gl:
        raise ValueError("combine_pair_losses needs at least one pair loss")
    if alpha is None:
        return torch.stack([*gg, *gl]).mean()
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not gl:
        return torch.stack(list(gg)).mean()
    if not gg:
        return torch.stack(list(gl)).mean()
    return alpha * torch.stack(list(gg)).mean() + (1.0 - alpha) * torch.stack(list(gl)).mean()


def baseline_alpha(num_gg: int, num_gl: int) -> float:
    """The alpha for which the re-balanced loss equals the plain mean: P_gg / (P_gg + P_gl)."""
    return num_gg / (num_gg + num_gl)


def multiview_loss(pair_loss, online: Mapping[str, Sequence[Optional[Tensor]]], target: Sequence[Optional[Tensor]], *,
                   alpha: Optional[float] = None, include_same: bool = True,
                   target_views: Optional[Sequence[int]] = None, **kwargs) -> Tensor:
    """Apply ``pair_loss(online_view, target_view, **kwargs)`` over :func:`view_pairs` and combine the terms.

    ``target`` holds one entry per large view (entries that are not in ``target_views`` are never read and may be
    None).
    """
    large, small = online.get("large", ()), online.get("small", ())
    if len(target) != len(large):
        raise ValueError(f"expected one target view per large view, got {len(target)} targets for {len(large)}")
    terms: Dict[str, List[Tensor]] = {"gg": [], "gl": []}
    for pair in view_pairs(len(large), len(small), include_same=include_same, target_views=target_views):
        views = large if pair.online_group == "large" else small
        terms[pair.kind].append(pair_loss(views[pair.online], target[pair.target], **kwargs))
    return combine_pair_losses(terms["gg"], terms["gl"], alpha)
