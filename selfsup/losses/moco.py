"""The MoCo-v2 loss (He et al. 2020; Chen et al. 2020), with SSLight's multi-crop variant (method-details B 1.2, 1.4).

For one batch of queries q (online network) against the keys k (momentum encoder on the same images, another view) and
a queue of K earlier keys:

* ``q = normalize(query)``, ``k = stopgrad(normalize(key))``, the queue rows are unit vectors without gradient;
* ``logits_i = [q_i . k_i, q_i . queue_1, ..., q_i . queue_K] / T``;
* ``loss = mean_i CE(logits_i, label 0) = mean_i -log softmax(logits_i)[0]`` (:func:`moco_pair_loss`).

Multi-crop (SSLight's MoCo): the key comes from global view 0 only; the queries are global view 1 and every local view,
all against that key and the same queue. The pairs are ``view_pairs(L, S, include_same=False, target_views=[0])``:
(large 1, key 0) is the one global-global term, (small s, key 0) the global-local terms, combined by
:func:`~selfsup.losses.pairing.combine_pair_losses`. SSLight's loss ``alpha * g + (1 - alpha) * sum(l) / S`` is that
combination; its baseline weights (1/7, 6/7) for S = 6 are the plain mean over the 1 + S queries (``alpha=None``). The
loss is one-directional (no symmetrised view-0 query against a view-1 key), as in MoCo-v2 and SSLight.

The loss is computed in float32 with autocast disabled, whatever precision the networks ran in.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.losses.pairing import multiview_loss


def moco_pair_loss(query: Tensor, key: Tensor, queue: Tensor, *, temperature: float) -> Tensor:
    """InfoNCE of each query against its own key (the positive) and the queue (the negatives).

    Args:
        query: (B, D) un-normalised online embeddings (query encoder + projector).
        key: (B, D) un-normalised key-encoder embeddings of the same images; the gradient is stopped here.
        queue: (K, D) unit-norm earlier keys; the gradient is stopped here.
        temperature: T (0.2 in MoCo-v2).
    """
    if query.dim() != 2 or query.shape != key.shape:
        raise ValueError(f"query and key must be (B, D) of the same shape, got {tuple(query.shape)} "
                         f"and {tuple(key.shape)}")
    if queue.dim() != 2 or queue.shape[1] != query.shape[1]:
        raise ValueError(f"queue must be (K, {query.shape[1]}), got {tuple(queue.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with torch.autocast(device_type=query.device.type, enabled=False):
        q = F.normalize(query.float(), dim=-1)
        k = F.normalize(key.detach().float(), dim=-1)
        positive = (q * k).sum(dim=-1, keepdim=True)  # (B, 1)
        negatives = q @ queue.detach().float().T  # (B, K)
        logits = torch.cat([positive, negatives], dim=1) / temperature
        return -F.log_softmax(logits, dim=1)[:, 0].mean()


def moco_multiview_loss(online_large: Sequence[Optional[Tensor]], online_small: Sequence[Tensor],
                        key: Union[Tensor, Sequence[Optional[Tensor]]], queue: Tensor, *, temperature: float,
                        alpha: Optional[float] = None) -> Tensor:
    """SSLight's multi-crop MoCo: every large view but view 0 and every small view queries the key of large view 0.

    Args:
        online_large: L entries, the query network on each large view; an entry that is only a key's view (view 0 in
            SSLight's form) is never read and may be None.
        online_small: S tensors (B, D), the query network on each small view.
        key: (B, D) the key encoder on large view 0; or one entry per large view, None where that view gives no key
            (the symmetric form, MoCo-v2+ as in solo-learn: ``[k0, k1]`` pairs (large 1, k0), (large 0, k1) and every
            small view with both keys).
        queue: (K, D) unit-norm negatives.
        alpha: SSLight's weight of the global-global terms; None is the plain mean over all (query, key) pairs.
    """
    keys = [key] + [None] * (len(online_large) - 1) if isinstance(key, Tensor) else list(key)
    target_views = [i for i, k in enumerate(keys) if k is not None]
    return multiview_loss(moco_pair_loss, {"large": list(online_large), "small": list(online_small)}, keys,
                          alpha=alpha, include_same=False, target_views=target_views, queue=queue,
                          temperature=temperature)
