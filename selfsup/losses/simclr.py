"""SimCLR's NT-Xent loss (Chen et al. 2020, eq. 1), extended to L large and S small views per image.

All (L + S) * B embeddings of a step are L2-normalised and compared with each other by cosine similarity. For an anchor
a (one view of image i) and its positive p (another view of the same image):

    l(a, p) = -log( exp(s(a, p) / tau) / sum_{k != a} exp(s(a, k) / tau) )

where k runs over **all** (L + S) * B embeddings except the anchor itself: every other image's views, and the other
views of image i (the positive among them). With L = 2, S = 0 this is exactly the textbook NT-Xent over 2B embeddings.

Pairs come from :func:`~selfsup.losses.pairing.view_pairs` with ``include_same=False`` (anchor = the pair's online
view, positive = its target large view): every ordered pair of different large views, and every (small view, large
view) pair. Each pair's term is the mean of l(a, p) over the B images, and the terms are combined by
:func:`~selfsup.losses.pairing.combine_pair_losses` (the plain mean, or SSLight's alpha between the gg and gl kinds).

Choice (the SimCLR paper has no small views): small x small pairs are not positives, and a large view is never an
anchor for a small positive. Small views are compared with large views only, as in SwAV, DINO and SSLight's multi-crop
losses, so the positives are exactly those of the other multi-view methods here. Small views still act as negatives
(and as the other same-image views) in every anchor's denominator, because the denominator runs over all embeddings.

The loss is computed in float32 with autocast disabled.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.losses.pairing import combine_pair_losses, view_pairs


def nt_xent_loss(large: Sequence[Tensor], small: Sequence[Tensor], *, temperature: float,
                 alpha: Optional[float] = None) -> Tensor:
    """Multi-view NT-Xent (see the module docstring).

    Args:
        large: L >= 1 tensors (B, D), un-normalised embeddings (projector outputs) of the large views, already gathered
            over processes by the caller so that the negatives come from the global batch.
        small: S tensors (B, D), the same for the small views (may be empty).
        temperature: tau.
        alpha: SSLight's re-balancing of large-large against small-large pairs; None is the plain mean over pairs.
    """
    views = [*large, *small]
    if not large or any(v.dim() != 2 or v.shape != views[0].shape for v in views):
        raise ValueError(f"expected L >= 1 large views and all views (B, D) of one shape, got "
                         f"{[tuple(v.shape) for v in views]}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    num_large, batch = len(large), views[0].shape[0]
    with torch.autocast(device_type=views[0].device.type, enabled=False):
        z = F.normalize(torch.cat([v.float() for v in views], dim=0), dim=-1)  # rows: view-major, (L + S) * B
        scores = z @ z.T / temperature
        scores = scores.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))  # k != a
        log_prob = F.log_softmax(scores, dim=1)
        terms: Dict[str, List[Tensor]] = {"gg": [], "gl": []}
        for pair in view_pairs(num_large, len(small), include_same=False):
            anchor = pair.online if pair.online_group == "large" else num_large + pair.online
            block = log_prob[anchor * batch:(anchor + 1) * batch, pair.target * batch:(pair.target + 1) * batch]
            terms[pair.kind].append(-block.diagonal().mean())  # positive of anchor i: the same image i
        return combine_pair_losses(terms["gg"], terms["gl"], alpha)
