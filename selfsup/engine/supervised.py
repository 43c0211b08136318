"""One supervised training loop, :func:`train_supervised`: probes, fine-tuning and helper networks configure it.

Its callers, and what each one sets:

* :func:`selfsup.eval.linear.linear_probe_sgd`: a linear layer on a frozen encoder (the encoder runs in ``prepare``,
  so no gradient reaches it, and is held in eval mode through ``frozen``); SGD or LARS, cosine per step.
* :func:`selfsup.eval.finetune.finetune`: the encoder and a new classifier, two SGD groups, step or cosine per step.
* :func:`selfsup.eval.taps.fit_probe_sgd`: cached features (:class:`TensorBatches`), step decay per epoch.
* :func:`selfsup.saliency.train.train_saliency_net`: Adam, poly decay per epoch, its own loss (F-beta over the label
  sets); a step hook collects the predictions, an epoch hook folds them into the moving average.
* ``benchmarks/common.py``'s supervised baseline: a wall-clock budget, ended by a step hook.

The loop, read top to bottom (DINO's ``train_one_epoch``, several epochs at once)::

    for epoch in range(settings.epochs):
        lr <- lr_schedule(epoch, peak)                  # schedule_unit="epoch"
        for raw in data:                                # re-iterated (or data() called) every epoch
            batch = prepare(raw)                        # under no_grad; None skips the batch
            lr <- lr_schedule(step, peak)               # schedule_unit="step"
            loss = loss_fn(model(batch.inputs), batch.targets)
            [check_finite="step": raise on a non-finite loss, before the update]
            zero_grad, backward, optimizer.step
            mean loss (and top-1) of the epoch; progress bar; on_step(StepInfo) -> True stops the loop
        [check_finite="epoch": raise when the epoch's mean loss is non-finite]
        on_epoch(EpochStats)

``peak`` is each parameter group's learning rate when the loop starts, so groups with different rates (fine-tuning's
classifier and encoder) follow one schedule shape. The loop draws no random numbers of its own: every draw happens in
``data``, ``prepare`` or ``model``, in the order the caller's batches come, so a caller's results do not depend on it.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from selfsup.errors import ConfigError, NonFiniteLossError

__all__ = ["Batch", "LRSchedule", "LoopSettings", "StepInfo", "EpochStats", "LoopResult", "TensorBatches",
           "train_supervised"]

LRSchedule = Callable[[int, float], float]
"""``(step or epoch, peak) -> learning rate``, e.g. ``lambda k, peak: warmup_cosine(k, total, warmup, peak)``."""


class Batch(NamedTuple):
    """One prepared batch: ``inputs`` go to the model, ``targets`` to the loss, ``meta`` (indices, flips, ...) only to
    the hooks."""

    inputs: Any
    targets: Any
    meta: Any = None


@dataclass
class LoopSettings:
    """The numbers of one supervised run (the parts are :func:`train_supervised`'s arguments).

    ``lr_schedule`` sets every group's rate before each optimiser step (``schedule_unit="step"``, argument: the
    0-based count of steps taken) or at the start of each epoch (``"epoch"``, argument: the epoch); None keeps the
    optimiser's rates. ``accuracy``: also count the epoch's train top-1 (argmax of the model output = target).
    ``check_finite``: ``"step"`` checks every loss before its update (one device sync per step), ``"epoch"`` the
    epoch's mean loss, None neither; ``nonfinite(value, epoch)`` makes the error to raise (default: a
    :class:`NonFiniteLossError` naming ``desc``). ``progress`` shows one tqdm bar for the run, in examples (throughput
    in examples/s), with ``examples_per_epoch`` (when known) giving its length.
    """

    epochs: int
    lr_schedule: Optional[LRSchedule] = None
    schedule_unit: str = "step"
    accuracy: bool = False
    check_finite: Optional[str] = None
    nonfinite: Optional[Callable[[float, int], Exception]] = None
    progress: bool = False
    desc: str = "train"
    examples_per_epoch: Optional[int] = None

    def validate(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"{self.desc}: epochs must be >= 0, got {self.epochs}")
        if self.schedule_unit not in ("step", "epoch"):
            raise ConfigError(f"{self.desc}: schedule_unit must be step or epoch, got {self.schedule_unit!r}")
        if self.check_finite not in (None, "step", "epoch"):
            raise ConfigError(f"{self.desc}: check_finite must be step, epoch or None, got {self.check_finite!r}")


@dataclass
class StepInfo:
    """What ``on_step`` sees after an optimiser step: ``step`` (steps taken so far, this one included), ``epoch``
    (0-based), ``lrs`` (the rate of each group in this step), the detached ``loss`` and ``outputs``, and the batch."""

    step: int
    epoch: int
    lrs: List[float]
    loss: Tensor
    outputs: Any
    batch: Batch

    @property
    def lr(self) -> float:
        """The first group's rate in this step."""
        return self.lrs[0]


@dataclass
class EpochStats:
    """One epoch: the mean loss over its examples, train top-1 in percent (nan unless ``accuracy``), examples seen,
    optimiser steps in the epoch and in the run so far."""

    epoch: int
    loss: float
    top1: float
    seen: int
    epoch_steps: int
    steps: int


@dataclass
class LoopResult:
    """The run: optimiser ``steps``, the ``last`` epoch's statistics (None when no epoch ran) and whether a step hook
    ``stopped`` it early."""

    steps: int
    last: Optional[EpochStats]
    stopped: bool


class TensorBatches:
    """Batches of cached tensors (features and labels): every pass draws a permutation from ``generator`` and yields
    ``Batch(x[idx], y[idx], idx)`` for consecutive slices of ``batch_size``. The incomplete last batch is dropped unless
    it is the only one (fewer examples than ``batch_size``)."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator) -> None:
        if len(x) != len(y):
            raise ValueError(f"{len(x)} inputs but {len(y)} targets")
        self.x, self.y, self.batch_size, self.generator = x, y, batch_size, generator

    def __len__(self) -> int:
        return max(1, len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = torch.randperm(len(self.x), generator=self.generator)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield Batch(self.x[idx], self.y[idx], idx)


@contextlib.contextmanager
def _modes(train: Sequence[nn.Module], frozen: Sequence[nn.Module]) -> Iterator[None]:
    """``train`` modules in train mode and ``frozen`` ones in eval mode for the loop; every submodule's previous mode
    is restored afterwards, also when the loop raises."""
    saved = [(m, m.training) for top in (*train, *frozen) for m in top.modules()]
    try:
        for m in train:
            m.train()
        for m in frozen:
            m.eval()
        yield
    finally:
        for m, training in saved:
            m.training = training


def _set_lr(optimizer: torch.optim.Optimizer, schedule: Optional[LRSchedule], at: int, peaks: List[float]) -> None:
    if schedule is not None:
        for group, peak in zip(optimizer.param_groups, peaks):
            group["lr"] = schedule(at, peak)


class _EpochMeter:
    """The epoch's loss sum (weighted by batch size) and correct count, kept on the device: no sync until the end."""

    def __init__(self) -> None:
        self.loss_sum: Optional[Tensor] = None
        self.correct: Optional[Tensor] = None
        self.seen = 0
        self.steps = 0

    def add(self, loss: Tensor, outputs: Any, targets: Any, n: int, accuracy: bool) -> None:
        if self.loss_sum is None:
            self.loss_sum = torch.zeros((), device=loss.device)
            self.correct = torch.zeros((), device=loss.device, dtype=torch.long)
        self.loss_sum += loss * n
        if accuracy:
            self.correct += (outputs.argmax(1) == targets).sum()
        self.seen += n
        self.steps += 1

    def stats(self, epoch: int, steps: int, accuracy: bool) -> EpochStats:
        total = float(self.loss_sum) if self.loss_sum is not None else 0.0
        correct = float(self.correct) if self.correct is not None else 0.0
        top1 = 100.0 * correct / max(self.seen, 1) if accuracy else float("nan")
        return EpochStats(epoch, total / max(self.seen, 1), top1, self.seen, self.steps, steps)


def _nonfinite(settings: LoopSettings, value: float, epoch: int) -> Exception:
    if settings.nonfinite is not None:
        return settings.nonfinite(value, epoch)
    return NonFiniteLossError(f"{settings.desc}: the loss became {value} in epoch {epoch + 1}; lower the learning rate")


def train_supervised(model: Callable[[Any], Any], optimizer: torch.optim.Optimizer,
                     data: Union[Iterable[Any], Callable[[], Iterable[Any]]],
                     settings: LoopSettings, *, loss_fn: Callable[[Any, Any], Tensor] = F.cross_entropy,
                     prepare: Optional[Callable[[Any], Optional[Batch]]] = None,
                     train: Sequence[nn.Module] = (), frozen: Sequence[nn.Module] = (),
                     on_step: Optional[Callable[[StepInfo], Optional[bool]]] = None,
                     on_epoch: Optional[Callable[[EpochStats], None]] = None) -> LoopResult:
    """Train ``model`` (any callable ``inputs -> outputs``) with ``optimizer`` for ``settings.epochs`` passes over
    ``data`` (the loop in the module docstring): a re-iterable (a ``DataLoader``, :class:`TensorBatches`, a list) or
    a function that returns the epoch's batches (called at the start of every epoch, after its learning rate is set).

    ``prepare(raw) -> Batch | None`` turns what ``data`` yields into a batch on the model's device (augmentation,
    normalisation, a frozen encoder's features); it runs under ``no_grad`` and None skips the item. Without it,
    ``data`` yields :class:`Batch` es or ``(inputs, targets)`` pairs. ``loss_fn(outputs, targets)`` defaults to the
    cross-entropy. Only the optimiser's parameters are updated; ``train`` modules are put in train mode and
    ``frozen`` ones in eval mode for the loop, and their modes restored afterwards. ``on_step`` returning True ends
    the run after that step (its epoch's statistics still go to ``on_epoch``). The device is the caller's: ``prepare``
    (or ``data``) puts the batches there, and the epoch's sums stay on the loss's device until the epoch ends (one
    sync per epoch unless ``check_finite="step"`` or a hook reads a value).
    """
    settings.validate()
    peaks = [group["lr"] for group in optimizer.param_groups]
    per_step = settings.lr_schedule if settings.schedule_unit == "step" else None
    total = settings.examples_per_epoch * settings.epochs if settings.examples_per_epoch is not None else None
    steps, last, stopped = 0, None, False
    with _modes(train, frozen), tqdm(total=total, desc=settings.desc, unit="img", unit_scale=True,
                                     disable=not settings.progress, dynamic_ncols=True, leave=False) as bar:
        for epoch in range(settings.epochs):
            if settings.schedule_unit == "epoch":
                _set_lr(optimizer, settings.lr_schedule, epoch, peaks)
            meter = _EpochMeter()
            for raw in (data() if callable(data) else data):
                if prepare is not None:
                    with torch.no_grad():
                        batch = prepare(raw)
                    if batch is None:
                        continue
                else:
                    batch = raw if isinstance(raw, Batch) else Batch(*raw)
                _set_lr(optimizer, per_step, steps, peaks)
                outputs = model(batch.inputs)
                loss = loss_fn(outputs, batch.targets)
                if settings.check_finite == "step" and not torch.isfinite(loss):
                    raise _nonfinite(settings, loss.item(), epoch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
                loss, outputs = loss.detach(), _detach(outputs)
                n = len(batch.inputs)
                meter.add(loss, outputs, batch.targets, n, settings.accuracy)
                bar.update(n)
                if on_step is not None and on_step(StepInfo(steps, epoch, [g["lr"] for g in optimizer.param_groups],
                                                            loss, outputs, batch)):
                    stopped = True
                    break
            last = meter.stats(epoch, steps, settings.accuracy)
            if settings.check_finite == "epoch" and not math.isfinite(last.loss):
                raise _nonfinite(settings, last.loss, epoch)
            postfix = {"epoch": epoch + 1, "loss": f"{last.loss:.3f}"}
            if settings.accuracy:
                postfix["top1"] = f"{last.top1:.1f}"
            bar.set_postfix(postfix)
            if on_epoch is not None:
                on_epoch(last)
            if stopped:
                break
    return LoopResult(steps, last, stopped)


def _detach(outputs: Any) -> Any:
    return outputs.detach() if isinstance(outputs, Tensor) else outputs
