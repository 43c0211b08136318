"""Input pipelines of the classic pretext tasks (Revisiting SSL, method-details B 2.3): rotations, per-image
grayscale, per-patch standardisation, the 3x3 patch grid with random gaps, and Jigsaw's permutation set.

All functions work on batched tensors on any device (no per-image Python loop); randomness comes from an explicit
``torch.Generator`` so that a step is reproducible and every DDP rank can draw the same choices.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["rotations", "random_grayscale", "standardize", "grid_patches", "patch_grid_size", "generate_permutations",
           "jigsaw_permutations", "PERMUTATIONS_FILE", "RPL_NEIGHBOURS"]

PERMUTATIONS_FILE = Path(__file__).with_name("jigsaw_permutations_100.txt")
#: Relative Patch Location: the 8 neighbours paired with the centre cell 4 of the 3x3 grid, label = position here.
RPL_NEIGHBOURS: Tuple[int, ...] = (0, 1, 2, 3, 5, 6, 7, 8)


def rotations(x: Tensor) -> Tuple[Tensor, Tensor]:
    """All four rotations of every image: ``(4B, C, H, W)``, rotation after rotation, and labels ``k`` in 0..3 for a
    counter-clockwise rotation by ``k * 90`` degrees (``np.rot90(img, k)``, as the reference). Images must be square."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(x.shape[-2:])}")
    out = torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)], dim=0)
    labels = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
    return out, labels


def random_grayscale(x: Tensor, p: float, generator: Optional[torch.Generator] = None,
                     decide: Optional[Tensor] = None) -> Tensor:
    """Replace whole images ``(B, C, H, W)`` by the mean of their channels (tiled), each with probability ``p``
    (the reference's ``to_gray``: a plain RGB mean, not luma). ``decide`` (bool ``(B,)``) overrides the draw, so that
    several copies of one image can share the decision (Exemplar)."""
    if decide is None:
        decide = torch.rand(x.shape[0], generator=generator).lt(p)
    decide = decide.to(x.device).view(-1, 1, 1, 1)
    return torch.where(decide, x.mean(dim=1, keepdim=True).expand_as(x), x)


def standardize(x: Tensor) -> Tensor:
    """TF's ``per_image_standardization`` over the last three dimensions: ``(x - mean) / max(std, 1 / sqrt(N))``."""
    n = x.shape[-1] * x.shape[-2] * x.shape[-3]
    mean = x.mean(dim=(-3, -2, -1), keepdim=True)
    std = x.std(dim=(-3, -2, -1), keepdim=True, unbiased=False).clamp_min(1.0 / n ** 0.5)
    return (x - mean) / std


def patch_grid_size(patch: int, gap_frac: float) -> int:
    """The side of the image a 3x3 grid of ``patch``-pixel patches needs when each cell is ``patch / (1 - gap_frac)``
    (the reference: 64 px patches in 85 px cells of a 255 px crop, ``gap_frac`` = 21 / 85 ~ 0.25)."""
    cell = int(round(patch / (1.0 - gap_frac)))
    return 3 * cell


def grid_patches(x: Tensor, patch: int, jitter: bool, generator: Optional[torch.Generator] = None) -> Tensor:
    """Cut ``(B, C, S, S)`` into a 3x3 grid of cells of ``S // 3`` pixels and take a ``patch``-pixel square from each:
    at a uniformly random position inside the cell when ``jitter`` (the random gap against edge-continuity shortcuts),
    centred otherwise. Returns ``(B, 9, C, patch, patch)``, cells in row-major order (cell 4 is the centre)."""
    b, c, s, _ = x.shape
    cell = s // 3
    if patch > cell:
        raise ValueError(f"patch {patch} px does not fit the {cell} px cells of a {s} px image")
    room = cell - patch
    if jitter and room > 0:
        off = torch.randint(0, room + 1, (b, 9, 2), generator=generator).to(x.device)
    else:
        off = torch.full((b, 9, 2), room // 2, dtype=torch.long, device=x.device)
    k = torch.arange(9, device=x.device)
    top = (k // 3) * cell + off[..., 0]  # (B, 9)
    left = (k % 3) * cell + off[..., 1]
    ar = torch.arange(patch, device=x.device)
    rows = (top[..., None] + ar)[:, :, :, None]  # (B, 9, P, 1)
    cols = (left[..., None] + ar)[:, :, None, :]  # (B, 9, 1, P)
    bi = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    out = x.permute(0, 2, 3, 1)[bi, rows, cols]  # (B, 9, P, P, C)
    return out.permute(0, 1, 4, 2, 3).contiguous()


def generate_permutations(n: int = 100, seed: int = 0) -> np.ndarray:
    """``n`` permutations of 9 chosen greedily for a large Hamming distance: start from one permutation drawn with
    ``seed``, then repeatedly add the permutation whose **minimum** distance to the chosen set is largest (ties: the
    largest total distance, then the first in lexicographic order). Deterministic. Noroozi & Favaro's published "max"
    set maximises the total distance instead, which leaves near-duplicates (its minimum distance is 2); the max-min
    rule keeps every pair at least 6 apart. Returns int64 ``(n, 9)``, 0-based."""
    perms = np.array(list(itertools.permutations(range(9))), dtype=np.int8)  # lexicographic
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(perms)))]
    min_d = (perms != perms[chosen[0]]).sum(1).astype(np.int16)
    sum_d = min_d.astype(np.int32)
    for _ in range(n - 1):
        score = min_d.astype(np.int64) * 1000 + sum_d  # min first, total second; argmax takes the first on ties
        score[chosen] = -1
        j = int(score.argmax())
        chosen.append(j)
        d = (perms != perms[j]).sum(1).astype(np.int16)
        min_d = np.minimum(min_d, d)
        sum_d += d
    return perms[chosen].astype(np.int64)


@lru_cache(maxsize=1)
def jigsaw_permutations() -> Tensor:
    """The shipped set (``jigsaw_permutations_100.txt``, :func:`generate_permutations` with its defaults): ``(100, 9)``
    long, row ``i`` lists which cell goes to position ``j``."""
    rows = [[int(v) for v in line.split()] for line in PERMUTATIONS_FILE.read_text().splitlines() if line.strip()]
    return torch.tensor(rows, dtype=torch.long)
