"""Gathering embeddings across processes for losses that contrast against the global batch.

Every rank gathers the global batch and computes the *same* global loss. ``torch.distributed.nn.functional.all_gather``
sums the gradients that all ranks send back to a rank's own slice, so each rank's slice receives W times dL/dz; DDP
then averages parameter gradients over the W ranks, which leaves exactly dL/dtheta of the single-process loss on the
global batch. ``tests/engine/test_ddp.py`` checks this against one process (the bug class of lightly #1528/#1920/#1977).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, keeping the autograd path to every rank's slice."""
    if world_size() == 1:
        return x
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(x), dim=0)


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (e.g. stop-gradient target embeddings) from all ranks along dim 0."""
    if world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


@torch.no_grad()
def all_reduce_mean(x: Tensor) -> Tensor:
    """The mean of ``x`` over all ranks (a new tensor; ``x`` itself when there is one process).

    With equal per-rank batch sizes, the mean of per-rank batch means is the global batch mean (DINO's centre).
    """
    if world_size() == 1:
        return x
    out = x.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / world_size()
