"""The distinct unreadable images a run skipped (``data.skip_corrupt``), counted over every process and every resume.

A count of skip events would grow with each epoch that draws the same broken file and with each process that draws it;
what a user wants to know is how many *images* are unreadable. So the count is of dataset indices: each process notes
the indices its batches asked for and did not get back, the processes join their sets (:func:`union`, a collective) at
each checkpoint, and the checkpoint keeps the joined set (``skipped_indices``) so that a resumed run continues it. An
older checkpoint holds the count alone (``skipped``): it is kept as a floor.
"""

from __future__ import annotations

from typing import Dict, Iterable, Set

import torch

__all__ = ["SkippedImages"]


class SkippedImages:
    """The skipped dataset indices: ``known`` (joined over the processes at the last checkpoint, resumes included),
    ``recent`` (this process's since then) and ``floor`` (an older checkpoint's bare count)."""

    def __init__(self, known: Iterable[int] = (), floor: int = 0) -> None:
        self.known: Set[int] = set(known)
        self.floor = floor
        self.recent: Set[int] = set()

    @classmethod
    def from_checkpoint(cls, state: dict) -> "SkippedImages":
        return cls(state.get("skipped_indices", []), int(state.get("skipped", 0)))

    def note(self, asked: Iterable[int], got: torch.Tensor) -> None:
        """The indices of ``asked`` that are not in ``got`` (a batch's ``index``) were skipped as unreadable."""
        self.recent.update(_missing(asked, got))

    def any(self) -> bool:
        """Whether any skip is known to this process (then the logs carry a ``skipped`` column)."""
        return bool(self.recent or self.known or self.floor)

    def count(self) -> int:
        """Distinct images skipped as far as this process knows (other processes' since the last checkpoint join at
        the next :meth:`sync`)."""
        return max(self.floor, len(self.known | self.recent))

    def sync(self, fabric) -> None:
        """Join every process's indices into ``known`` (a collective: every process must call it)."""
        self.known = union(fabric, self.known | self.recent)
        self.recent.clear()

    def state(self) -> Dict[str, object]:
        """The checkpoint's fields (call :meth:`sync` first)."""
        return {"skipped": max(self.floor, len(self.known)), "skipped_indices": sorted(self.known)}


def _missing(asked: Iterable[int], got: torch.Tensor) -> Set[int]:
    """The indices of ``asked`` that are not in ``got`` (a batch's ``index``): the images skipped as unreadable."""
    kept = set(got.tolist())
    return {int(i) for i in asked if int(i) not in kept}


def union(fabric, indices: Set[int]) -> Set[int]:
    """The union of every process's ``indices`` (a collective: every process must call it)."""
    if fabric.world_size == 1:
        return set(indices)
    longest = int(fabric.all_reduce(torch.tensor(float(len(indices)), device=fabric.device), reduce_op="max").item())
    if longest == 0:
        return set()
    mine = torch.full((longest,), -1, dtype=torch.int64)
    mine[:len(indices)] = torch.tensor(sorted(indices), dtype=torch.int64)
    every = fabric.all_gather(mine.to(fabric.device)).reshape(-1).cpu()
    return {int(i) for i in every.tolist() if i >= 0}
