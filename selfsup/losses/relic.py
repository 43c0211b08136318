"""The RELICv2 loss (Tomasev et al. 2022, eq. 1-3), as read in method-details A1-A2.

For one pair of view batches, a through the online network and b through the target network:

* ``z = normalize(online)``, ``k = stopgrad(normalize(target))``;
* candidates of anchor i: ``C_i = {i} u N(i)``, N(i) = ``num_negatives`` (n_e) indices drawn uniformly without
  replacement from the other batch items (all of them when ``num_negatives`` is None). Both directions use the same C_i;
* ``S_ij = <z_i, k_j> / tau``;
* ``p_i  = softmax_{j in C_i} S_ij`` (online anchor i against target candidates);
* ``pt_i = softmax_{j in C_i} S_ji`` (target anchor i against online candidates: the swapped distribution of eq. 2,
  written so that a small view is never needed on the target side);
* ``L_con = mean_i -log p_i(i)``;
* ``L_inv = mean_i [ stopgrad(sum_j p_i(j) log p_i(j)) - sum_j p_i(j) log pt_i(j) ]``: eq. 2 taken literally, only the
  entropy term is stopped and the cross term keeps gradients through both p and pt;
* ``L = contrast_scale * L_con + beta * L_inv``.

The multi-view sum (eq. 3) over large x large pairs (i = j included) and small x large pairs, divided by (L + S) * L, is
the plain mean over :func:`selfsup.losses.pairing.view_pairs`.

The loss is computed in float32 with autocast disabled, whatever precision the networks ran in.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.losses.pairing import multiview_loss, view_pairs


def sample_candidates(batch_size: int, num_negatives: int, *, generator: Optional[torch.Generator] = None,
                      device: torch.device | str = "cpu", count: Optional[int] = None,
                      ordered: bool = True) -> Tensor:
    """Candidate indices ``(B, 1 + n_e)``: column 0 is the anchor itself, then n_e distinct other batch items.
    With ``count``, ``(count, B, 1 + n_e)``: that many independent draws made as one (RELICv2 draws one per view pair,
    24 a step with the paper's views). ``ordered=False`` leaves the negatives of a row in Floyd's order (the set is
    still uniform, the order is not): the loss is a softmax over the set, so RELICv2's loss does not need the shuffle,
    which was most of the cost (a sort of ``B x n_e`` keys per pair).

    Where the draws are made: on ``device`` when it is an accelerator (from a generator on it, seeded by one number
    drawn from ``generator``: the same on every rank and after a resume, and no CPU work or transfer per step),
    otherwise on the CPU from ``generator``.

    Each row draws its negatives uniformly without replacement from the B - 1 other items, in a uniformly random order
    (the first n_e entries of a random permutation of the others). The draw uses ``generator`` on the CPU, so every
    DDP rank that holds the same generator state draws the same indices, and a resumed run draws them again.

    Two exact samplers of that distribution, by cost:

    * few negatives (``8 n_e < B``, the paper's n_e = 10 at any batch): Floyd's algorithm on all rows at once
      (:func:`random_ordered_subset`), O(B n_e^2) work and 2 B n_e random numbers;
    * otherwise: B x (B - 1) uniform keys, the n_e smallest per row (a random permutation, truncated).
    """
    if not 1 <= num_negatives <= batch_size - 1:
        raise ValueError(f"num_negatives must be in [1, {batch_size - 1}] for a batch of {batch_size}, "
                         f"got {num_negatives}")
    rows = batch_size * (1 if count is None else count)
    dev = torch.device(device)
    if dev.type != "cpu":
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        generator = torch.Generator(device=dev).manual_seed(seed)
    if 8 * num_negatives < batch_size:
        others = random_ordered_subset(rows, batch_size - 1, num_negatives, generator, ordered=ordered, device=dev)
    else:
        keys = torch.rand(rows, batch_size - 1, generator=generator, device=dev)
        # the n_e smallest keys: the first n_e of a random permutation (same set and order as argsort)
        others = keys.topk(num_negatives, dim=1, largest=False, sorted=True).indices
    anchors = torch.arange(batch_size, device=dev).repeat(rows // batch_size).unsqueeze(1)
    others = others + (others >= anchors).long()  # skip the anchor's own index
    out = torch.cat([anchors, others], dim=1)
    return (out if count is None else out.view(count, batch_size, 1 + num_negatives)).to(device)


def random_ordered_subset(rows: int, n: int, k: int, generator: Optional[torch.Generator], *, ordered: bool = True,
                           device: torch.device = torch.device("cpu")) -> Tensor:
    """``(rows, k)``: for every row, k distinct values of ``range(n)`` in uniformly random order (equivalently the first
    k entries of a uniformly random permutation).

    Floyd's algorithm draws a uniform k-subset in k steps (step j in n-k..n-1: t uniform in [0, j]; keep t unless it
    was drawn already, else keep j), all rows at once with one membership test a step; a random key per entry then
    shuffles the order (``ordered``; without it the k-subset is uniform but its order is Floyd's).
    """
    chosen = torch.empty((rows, k), dtype=torch.long, device=device)
    for i, j in enumerate(range(n - k, n)):
        t = torch.randint(0, j + 1, (rows,), generator=generator, device=device)
        seen = (chosen[:, :i] == t.unsqueeze(1)).any(1)
        chosen[:, i] = torch.where(seen, torch.full_like(t, j), t)
    if not ordered:
        return chosen
    order = torch.rand(rows, k, generator=generator, device=device).argsort(dim=1)
    return chosen.gather(1, order)


def relic_pair_loss(online: Tensor, target: Tensor, *, temperature: float, beta: float = 1.0,
                    contrast_scale: float = 1.0, num_negatives: Optional[int] = None,
                    generator: Optional[torch.Generator] = None, candidates: Optional[Tensor] = None) -> Tensor:
    """RELICv2 loss of one pair of view batches (eq. 1-2; method-details A1).

    Args:
        online: (B, D) un-normalised online embeddings h(f(x_a)) (projector + predictor output).
        target: (B, D) un-normalised target embeddings q(g(x_b)); the gradient is stopped here.
        temperature: tau.
        beta: scale of the KL invariance term.
        contrast_scale: scale of the contrastive likelihood term (c; 1 by default, 0.3 in the JFT setting).
        num_negatives: n_e negatives per anchor; None uses all other batch items. A value >= B - 1 also uses all of
            them (a batch smaller than n_e + 1 cannot supply more), which is the same candidate set.
        generator: CPU generator for the negative sampling (reproducibility and identical draws across DDP ranks).
        candidates: ``(B, 1 + n_e)`` candidates drawn beforehand (:func:`sample_candidates`); then ``generator`` is
            not used.
    """
    if online.shape != target.shape or online.dim() != 2:
        raise ValueError(f"online and target must be (B, D) of the same shape, got {tuple(online.shape)} "
                         f"and {tuple(target.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    batch = online.shape[0]
    with torch.autocast(device_type=online.device.type, enabled=False):
        z = F.normalize(online.float(), dim=-1)
        k = F.normalize(target.detach().float(), dim=-1)
        if num_negatives is None or num_negatives >= batch - 1:
            scores = z @ k.T / temperature  # S_ij
            log_p = F.log_softmax(scores, dim=1)  # rows: p_i over j
            log_pt = F.log_softmax(scores.T, dim=1)  # rows: pt_i over j of S_ji
            log_p_pos = log_p.diagonal()
        else:
            cand = (candidates.to(online.device) if candidates is not None
                    else sample_candidates(batch, num_negatives, generator=generator, device=online.device))
            s_row = torch.einsum("bd,bnd->bn", z, k[cand]) / temperature  # S_{i, c_ij}
            s_col = torch.einsum("bd,bnd->bn", k, z[cand]) / temperature  # S_{c_ij, i}
            log_p = F.log_softmax(s_row, dim=1)
            log_pt = F.log_softmax(s_col, dim=1)
            log_p_pos = log_p[:, 0]
        loss_con = -log_p_pos.mean()
        p = log_p.exp()
        neg_entropy = (p * log_p).sum(dim=1).detach()
        cross = (p * log_pt).sum(dim=1)
        loss_inv = (neg_entropy - cross).mean()
        return contrast_scale * loss_con + beta * loss_inv


def relic_multiview_loss(online_large: Sequence[Tensor], online_small: Sequence[Tensor],
                         target_large: Sequence[Tensor], *, temperature: float, beta: float = 1.0,
                         contrast_scale: float = 1.0, num_negatives: Optional[int] = None,
                         generator: Optional[torch.Generator] = None, alpha: Optional[float] = None,
                         include_same: bool = True) -> Tensor:
    """RELICv2 eq. 3 (method-details A2): the pair loss over large x large pairs (including the same crop on both sides)
    and small x large pairs, divided by (L + S) * L.

    ``include_same=False`` drops the same-crop terms (online l vs target l), leaving (L + S) * L - L pairs: the
    SimCLR/BYOL convention, and the ``method.same_crop_pairs=false`` setting of the small RELIC recipes.

    Args:
        online_large: L tensors (B, D), the online network on each large view.
        online_small: S tensors (B, D), the online network on each small view (small views never reach the target).
        target_large: L tensors (B, D), the target network on each large view.
        alpha: SSLight's re-balancing of large-large against small-large terms; None (RELICv2) is the plain mean.
        Other arguments as :func:`relic_pair_loss`; each pair has its own negatives, all drawn in one call before the
        first pair (in the pairs' order; unordered within a row, which the loss does not see; on the embeddings'
        device, see :func:`sample_candidates`).
    """
    online = {"large": list(online_large), "small": list(online_small)}
    batch = online_large[0].shape[0] if online_large else 0
    pair_fn: Callable[..., Tensor] = relic_pair_loss
    if num_negatives is not None and 0 < num_negatives < batch - 1:
        # one draw per pair that multiview_loss will visit, in its order
        pairs = len(view_pairs(len(online_large), len(online_small), include_same=include_same))
        draws = iter(sample_candidates(batch, num_negatives, generator=generator, count=pairs, ordered=False,
                                       device=online_large[0].device).unbind(0))

        def pair_with_drawn_negatives(o: Tensor, t: Tensor, **kw) -> Tensor:
            return relic_pair_loss(o, t, candidates=next(draws), **kw)

        pair_fn = pair_with_drawn_negatives

    return multiview_loss(pair_fn, online, list(target_large), alpha=alpha, include_same=include_same,
                          temperature=temperature, beta=beta, contrast_scale=contrast_scale,
                          num_negatives=num_negatives, generator=generator)
