"""Batch preparation: from the step number to this process's views, ready for the method.

For step s, :class:`Batches` takes the indices :class:`StepBatchSampler` gives (its slice of the global batch of s),
loads them (the DataLoader's workers), decodes still-encoded JPEGs on the device (``data.decode=device``), counts the
images that could not be read (``data.skip_corrupt``, :class:`~selfsup.engine.skips.SkippedImages`) and, under DDP,
fills a shortened batch back to its size (:func:`_refill`). Then the masks (:class:`~selfsup.data.masks.MaskProvider`)
and the view parameters are drawn for the *global* batch of s from generators seeded by (seed, purpose, s) and this
process's rows kept, so that DDP draws what one process draws and a resumed run what the uninterrupted one drew; the
views are rendered and, with ``train.channels_last``, laid out channels-last.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from selfsup.config import Config
from selfsup.data.base import collate
from selfsup.data.images import decode_on_device
from selfsup.data.masks import MaskProvider
from selfsup.data.views import MultiViewSampler, Views
from selfsup.engine.seeds import generator_for
from selfsup.engine.skips import SkippedImages
from selfsup.engine.stopping import any_flag
from selfsup.errors import ConfigError, DataError

__all__ = ["Batch", "Batches", "StepBatchSampler"]


class StepBatchSampler(Sampler[List[int]]):
    """Index batches for steps ``start_step .. total_steps - 1``; this rank's slice of each global batch.

    Epoch e visits a permutation drawn from (seed, e); step s of the run is batch ``s % steps_per_epoch`` of epoch
    ``s // steps_per_epoch`` (the incomplete last batch of an epoch is dropped). Resuming at step s therefore continues
    the same sequence without touching the skipped batches.
    """

    def __init__(self, num_items: int, global_batch: int, *, rank: int, world_size: int, seed: int,
                 start_step: int, total_steps: int) -> None:
        if num_items < global_batch:
            raise ConfigError(f"the dataset has {num_items} images, fewer than train.batch_size={global_batch}")
        self.n, self.global_batch = num_items, global_batch
        self.local_batch = global_batch // world_size
        self.rank, self.seed = rank, seed
        self.start_step, self.total_steps = start_step, total_steps
        self.steps_per_epoch = num_items // global_batch

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def __iter__(self) -> Iterator[List[int]]:
        epoch = -1
        perm: Tensor  # drawn at the first step (no step is in epoch -1)
        for step in range(self.start_step, self.total_steps):
            e, k = divmod(step, self.steps_per_epoch)
            if e != epoch:
                epoch, perm = e, self._permutation(e)
            lo = k * self.global_batch + self.rank * self.local_batch
            yield perm[lo:lo + self.local_batch].tolist()

    def _permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=generator_for(self.seed, "epoch", epoch))

    def indices(self, step: int) -> List[int]:
        """The dataset indices this rank's part of step ``step`` asks for (what ``__iter__`` yields for it); the
        epoch's permutation is kept for the next call."""
        e, k = divmod(step, self.steps_per_epoch)
        cached = getattr(self, "_cached", None)
        if cached is None or cached[0] != e:
            cached = self._cached = (e, self._permutation(e))
        lo = k * self.global_batch + self.rank * self.local_batch
        return cached[1][lo:lo + self.local_batch].tolist()


@dataclass
class Batch:
    """One step's prepared input on this process."""

    views: Views
    labels: Tensor  # the images' labels (-1: none), for the monitor's online classifier
    loaded_at: float  # time.perf_counter() once the images were loaded and decoded (the end of the data wait)


class Batches:
    """This process's :class:`Batch` for each step, in order from ``start_step`` (see the module docstring)."""

    def __init__(self, fabric, cfg: Config, dataset, mask_provider: MaskProvider, skips: SkippedImages, *,
                 start_step: int, total_steps: int) -> None:
        t = cfg.train
        self.fabric, self.cfg, self.dataset, self.masks, self.skips = fabric, cfg, dataset, mask_provider, skips
        self.total_steps = total_steps
        self.rank, self.local_batch = fabric.global_rank, t.batch_size // fabric.world_size
        self.sampler = MultiViewSampler(cfg.views, dataset.mean, dataset.std)
        self.indices = StepBatchSampler(len(dataset), t.batch_size, rank=self.rank, world_size=fabric.world_size,
                                        seed=cfg.seed, start_step=start_step, total_steps=total_steps)
        self.loader = DataLoader(dataset, batch_sampler=self.indices, collate_fn=collate,
                                 num_workers=cfg.data.workers, pin_memory=fabric.device.type == "cuda",
                                 persistent_workers=False)
        self.ahead = _Prefetch(self._draw_params)
        self.it: Optional[Iterator[Dict[str, Any]]] = None

    def start(self, step: int) -> None:
        """Start the loader's iteration (its workers) and the view parameters' draw for ``step``."""
        self.it = iter(self.loader)
        self.ahead.start(step)

    def next(self, step: int) -> Batch:
        """The prepared batch of ``step`` (the steps are taken in order)."""
        batch = self._load(step)
        loaded_at = time.perf_counter()
        images = batch["image"].to(self.fabric.device, non_blocking=True)
        rows = slice(self.rank * self.local_batch, self.rank * self.local_batch + images.shape[0])  # this rank's part
        masks = self.masks(batch, images, generator_for(self.cfg.seed, "masks", step), self.cfg.train.batch_size, rows)
        params = self.ahead.take(step, step + 1 if step + 1 < self.total_steps else None)[rows]
        views = self.sampler(images, masks, params, batch["size"])  # boxes placed in each image's own size
        if self.cfg.train.channels_last:
            views.large = [v.contiguous(memory_format=torch.channels_last) for v in views.large]
            views.small = [v.contiguous(memory_format=torch.channels_last) for v in views.small]
        return Batch(views=views, labels=batch["label"], loaded_at=loaded_at)

    def _load(self, step: int) -> Dict[str, Any]:
        """The loaded (and decoded) batch of ``step``, its unreadable images counted, refilled under DDP."""
        if self.it is None:
            raise TypeError("Batches.next before Batches.start: the loader is not iterating")
        batch = next(self.it)
        if "items" in batch:  # data.decode=device: the batch's JPEGs are decoded together on the device
            batch = decode_on_device(batch, self.dataset, self.fabric.device)
        if batch.get("skipped", 0):  # the indices asked for that did not come back (after decode_on_device)
            self.skips.note(self.indices.indices(step), batch["index"])
        if self.cfg.data.skip_corrupt and any_flag(self.fabric, batch["image"].shape[0] == 0):
            raise DataError(f"no readable image in the batch of step {step}: {self.skips.count()} unreadable images "
                            f"skipped so far out of {len(self.dataset)} in data.root={self.cfg.data.root}; fix or "
                            f"remove them")
        if self.fabric.world_size > 1 and 0 < batch["image"].shape[0] < self.local_batch:
            batch = _refill(batch, self.local_batch)  # every rank must gather equal shapes
        return batch

    def _draw_params(self, step: int):
        """The view parameters of the global batch of ``step``, from (seed, "views", step)."""
        return self.sampler.sample_params(self.cfg.train.batch_size, generator_for(self.cfg.seed, "views", step))

    def close(self) -> None:
        self.ahead.close()


class _Prefetch:
    """Draws the next step's view parameters in a background thread while this step runs: at a global batch of 4096
    the draw costs about 11 ms of CPU a step, which would otherwise sit between GPU steps. Each step's draw comes from
    its own generator (seed, "views", step), so the result is the same as drawing it in line, resumed runs included."""

    def __init__(self, draw: Callable[[int], Any]) -> None:
        self.draw = draw
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="selfsup-views")
        self.future: Optional[Future] = None
        self.step: Optional[int] = None

    def start(self, step: int) -> None:
        self.step, self.future = step, self.pool.submit(self.draw, step)

    def take(self, step: int, next_step: Optional[int]):
        value = self.future.result() if self.future is not None and self.step == step else self.draw(step)
        self.future = None
        if next_step is not None:
            self.start(next_step)
        return value

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _refill(batch: Dict[str, Any], size: int) -> Dict[str, Any]:
    """A DDP rank's batch that lost images to ``data.skip_corrupt``, filled back to ``size`` by repeating its readable
    images in order: the processes' gathers (negatives, queues, the monitor) need the same shape on every rank. One
    process keeps its shorter batch instead; so a DDP run that skips images is not the one-process run's equal."""
    n = batch["image"].shape[0]
    take = torch.arange(size) % n
    return {k: (v.index_select(0, take) if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n else v)
            for k, v in batch.items()}
