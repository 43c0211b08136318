"""The run folder's checkpoints, kept so that a run can always continue from weights known to be good.

* **Nothing lost.** :class:`CheckpointGuard` writes ``last.ckpt`` atomically (:func:`selfsup.engine.checkpoint
  .save_checkpoint`), at step 0, every ``train.ckpt_every_steps`` steps or ``train.ckpt_every_minutes`` minutes, on
  SIGTERM/SIGINT and at the end (the loop asks: :meth:`~CheckpointGuard.due`, and the stop rules).
* **A good checkpoint is a verified one.** A checkpoint is written only if every tensor it holds is finite, and it
  becomes ``last_good.ckpt`` once the loss computed from its weights (the next step's) is finite too
  (:meth:`~CheckpointGuard.verified`). When a loss is not finite and ``last.ckpt`` holds the weights that produced it
  (a diverging update, finite but huge), that file is moved aside (``nonfinite_step<N>.ckpt``) and ``last_good.ckpt``
  takes its place (:meth:`~CheckpointGuard.poisoned`), so ``--resume`` continues from weights known to give a finite
  loss.
* **One writer.** A run holds its folder's lock (:func:`lock_run_folder`, taken by the process that is or becomes
  rank 0) from start to end: a second run into the same folder, resumed or not, is refused in one line. Under the
  lock, the temporary files that a killed run's atomic writes left behind are removed (:func:`remove_stray_temp_files`,
  only those names).

Reading a checkpoint back to resume (the config check, the fit of tensors and optimiser state) is
:func:`selfsup.engine.resume.resume_run`; the guard starts from its result.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import List, Optional

import torch
from torch import nn

from selfsup.engine.checkpoint import link_checkpoint, load_checkpoint, save_checkpoint
from selfsup.engine.clock import RunClock
from selfsup.engine.monitor import QualityMonitor
from selfsup.engine.resume import Resumed
from selfsup.engine.skips import SkippedImages
from selfsup.errors import CheckpointError, ConfigError, NonFiniteLossError
from selfsup.metafiles import RunLock

log = logging.getLogger("selfsup.engine")

__all__ = ["CheckpointGuard", "RunFolderBusy", "lock_run_folder", "remove_stray_temp_files"]


class CheckpointGuard:
    """``last.ckpt``, ``last_good.ckpt`` and ``nonfinite_step<N>.ckpt`` of one run (see the module docstring).

    A checkpoint holds ``method`` (EMA targets included), the optimiser, the step, the config, the training time, the
    skipped images and the monitor's state. ``pending`` is the step of ``last.ckpt`` while no loss computed from its
    weights has been seen finite (a resumed ``last.ckpt`` starts pending)."""

    def __init__(self, fabric, out_dir: Path, config: dict, total_steps: int, *, method: nn.Module, optimizer,
                 monitor: Optional[QualityMonitor], skips: SkippedImages, clock: RunClock,
                 resumed: Optional[Resumed], every_steps: int, every_minutes: float) -> None:
        self.fabric, self.config, self.total_steps = fabric, config, total_steps
        self.method, self.optimizer, self.monitor, self.skips, self.clock = method, optimizer, monitor, skips, clock
        self.every_steps, self.every_minutes = every_steps, every_minutes
        self.out_dir, self.ckpt_path, self.good_path = out_dir, out_dir / "last.ckpt", out_dir / "last_good.ckpt"
        self.pending: Optional[int] = None
        if resumed is not None and resumed.path.resolve() == self.ckpt_path.resolve():
            self.pending = resumed.step
        self.saved_at: Optional[float] = None  # the end of the last save after step 0

    def due(self, step: int, now: float) -> bool:
        """Whether the checkpoint cadence asks for one once ``step`` steps are done, at ``now``."""
        since = self.clock.t_start if self.saved_at is None else self.saved_at
        return step % self.every_steps == 0 or now - since >= 60 * self.every_minutes

    def save(self, step: int) -> None:
        """``last.ckpt`` after ``step`` steps (a collective: every process calls it). Weights or optimiser state that
        are not finite are never written: the run stops with :class:`NonFiniteLossError`."""
        self.skips.sync(self.fabric)
        if not _state_finite(self.method, self.optimizer):
            raise NonFiniteLossError(f"the weights or optimiser state are not finite after step {step}; the run "
                                     f"stopped without saving them. {self.good_message()}")
        if self.fabric.is_global_zero:
            state = {"step": step, "total_steps": self.total_steps, "method": self.method.state_dict(),
                     "optimizer": self.optimizer.state_dict(), "config": self.config,
                     "trained_s": self.clock.trained(), **self.skips.state()}
            if self.monitor is not None:
                state["monitor"] = self.monitor.state_dict()
            save_checkpoint(self.ckpt_path, state)
        self.pending = step
        self.fabric.barrier()
        if step > 0:  # the interval of train.ckpt_every_minutes counts from the loop's start, then from each save
            self.saved_at = time.perf_counter()

    def verified(self, step: int) -> None:
        """The loss from the weights of step ``step`` was finite: last.ckpt (if it holds them) is good."""
        if self.pending == step:
            if self.fabric.is_global_zero and self.ckpt_path.exists():
                link_checkpoint(self.ckpt_path, self.good_path)
            self.pending = None

    def poisoned(self, step: int, loss: torch.Tensor) -> NonFiniteLossError:
        """The loss at ``step`` is not finite: if last.ckpt holds the weights that produced it, move it aside and put
        the last verified checkpoint in its place (a collective). Returns the error that stops the run."""
        if self.fabric.is_global_zero and self.pending == step and self.ckpt_path.exists():
            self.ckpt_path.replace(self.out_dir / f"nonfinite_step{step}.ckpt")
            if self.good_path.exists():
                link_checkpoint(self.good_path, self.ckpt_path)
        self.fabric.barrier()
        return NonFiniteLossError(f"loss is {loss.item()} at step {step}; the run stopped before applying it. "
                                  f"{self.good_message()}")

    def good_message(self) -> str:
        """Where to continue from: the last good checkpoint (with its step), or that there is none."""
        return (f"Last good checkpoint: {self.ckpt_path} (step {_ckpt_step(self.ckpt_path)}); continue from it with "
                f"--resume --allow-changes and a lower optim.base_lr or a larger method.temperature."
                if self.ckpt_path.exists() else
                "No good checkpoint was written; start again with a lower optim.base_lr or a larger "
                "method.temperature.")


def _state_finite(method: nn.Module, optimizer) -> bool:
    """Every parameter, buffer and floating optimiser tensor is finite."""
    tensors = [t for t in method.state_dict().values() if t.is_floating_point()]
    for group in optimizer.state.values():
        tensors.extend(v for v in group.values() if torch.is_tensor(v) and v.is_floating_point())
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _ckpt_step(path: Path) -> str:
    try:
        return str(load_checkpoint(path)["step"])
    except CheckpointError:
        return "?"


class RunFolderBusy(ConfigError):
    """The run folder is locked by another process (or cannot be locked): this process wrote nothing in it."""


def lock_run_folder(out_dir: Path) -> RunLock:
    """Lock ``out_dir`` for this run (:class:`~selfsup.metafiles.RunLock`; a second process writing the same folder,
    resumed or not, is refused in one line), then remove the temporary files an interrupted run of it left behind
    (:func:`remove_stray_temp_files`): with the lock held, no live process can be writing them."""
    lock = RunLock(out_dir, "run folder")
    try:
        lock.acquire()
    except ConfigError as exc:
        raise RunFolderBusy(str(exc)) from None
    try:
        remove_stray_temp_files(out_dir)
    except BaseException:
        lock.release()
        raise
    return lock


# The files the trainer writes atomically (selfsup.fileio.atomic_replace: ``.<name>.<random>.tmp`` beside the target,
# which a kill -9 leaves behind): in the run folder, and in its snapshots/ folder.
_TEMP_PATTERNS = (
    ("", re.compile(r"\.(?:last\.ckpt|last_good\.ckpt|backbone\.safetensors|config\.yaml)\.[A-Za-z0-9_]+\.tmp")),
    ("snapshots", re.compile(r"\.backbone_(?:step\d+|\d[0-9.e+-]*min)\.safetensors\.[A-Za-z0-9_]+\.tmp")),
)


def remove_stray_temp_files(out_dir: Path) -> List[Path]:
    """Remove the temporary files of the trainer's own atomic writes that a killed run left in ``out_dir`` (and its
    ``snapshots/``); only regular files whose names match exactly, so no user file is touched. Call it with the run
    folder's lock held. Returns the files removed."""
    removed: List[Path] = []
    for sub, pattern in _TEMP_PATTERNS:
        folder = Path(out_dir) / sub if sub else Path(out_dir)
        try:
            entries = list(os.scandir(folder))
        except OSError:  # no snapshots yet, or unreadable: nothing of ours to remove
            continue
        for entry in entries:
            try:
                if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except OSError:
                continue
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run: %s", len(removed),
                 ", ".join(p.name for p in removed))
    return removed
