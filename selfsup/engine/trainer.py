"""The pretraining loop, on Lightning Fabric: :func:`pretrain`, and :func:`train_loop`, which reads in one sitting.

Fabric provides devices, DDP (single- and multi-node, gloo or NCCL), mixed precision and the TensorBoard logger
(:mod:`~selfsup.engine.launch`). The loop is ours because its guarantees are step-exact: a run killed at any point and
resumed with ``--resume`` reproduces the uninterrupted loss curve on the CPU (Lightning's Trainer restarts an
interrupted epoch and pickles arbitrary objects in its checkpoints), and 2 DDP processes compute the gradient of the
1-process loss (each rank takes its slice of the same global batch and view parameters, and losses gather embeddings
across ranks; ``tests/engine/test_ddp.py``). The loop calls named parts, each an object built once by :func:`_build`:

* **batches** (:class:`~selfsup.engine.batches.Batches`): the step's indices (one permutation per epoch), loading,
  device decoding, unreadable images counted (:mod:`~selfsup.engine.skips`) and refilled, masks, view parameters
  and views, all drawn from (seed, step) (:mod:`~selfsup.engine.seeds`);
* **the step** (:class:`~selfsup.engine.step.TrainStep`): schedules (:class:`~selfsup.engine.schedules.RunSchedule`),
  forward; then, once the loss is known finite, backward, clipping, the optimiser and the EMA targets;
* **the checkpoint guard** (:class:`~selfsup.engine.guard.CheckpointGuard`): atomic ``last.ckpt``, the verified
  ``last_good.ckpt`` and the non-finite one set aside; the run folder's lock and the stray temporary files
  (:mod:`~selfsup.engine.guard`); reading a checkpoint back to resume (:mod:`~selfsup.engine.resume`);
* **the step logger** (:class:`~selfsup.engine.steplog.StepLogger`): the progress bar, ``train_log.csv``, TensorBoard;
* **the monitor** (:class:`~selfsup.engine.monitor.QualityMonitor`): online classifier and periodic kNN;
* **snapshots** (:class:`~selfsup.engine.snapshots.Snapshots`): the backbone after given minutes or steps, and at the
  end;
* **stop rules** (:class:`~selfsup.engine.stopping.StopRules`): the step count, the time cap, signals, a NaN/inf loss
  (which stops the run before the update is applied);
* **the clock** (:class:`~selfsup.engine.clock.RunClock`): this invocation's and the whole run's training time.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

import torch
from torch import nn

from selfsup.config import Config, to_dict, to_yaml
from selfsup.data.datasets import build_dataset, decode_on
from selfsup.data.masks import MaskProvider
from selfsup.engine.batches import Batches
from selfsup.engine.clock import RunClock
from selfsup.engine.guard import CheckpointGuard, lock_run_folder
from selfsup.engine.launch import locks_the_run_folder, make_fabric
from selfsup.engine.monitor import QualityMonitor, build_monitor
from selfsup.engine.optim import build_optimizer
from selfsup.engine.resume import resume_run
from selfsup.engine.schedules import RunSchedule
from selfsup.engine.skips import SkippedImages
from selfsup.engine.snapshots import Snapshots
from selfsup.engine.step import TrainStep
from selfsup.engine.steplog import StepLogger
from selfsup.engine.stopping import StopRules
from selfsup.fileio import atomic_write_bytes
from selfsup.metafiles import make_output_dir
from selfsup.methods.base import Method, build_method

if TYPE_CHECKING:
    from lightning.fabric import Fabric

__all__ = ["RunResult", "pretrain", "train_loop"]


@dataclass
class RunResult:
    out_dir: Path
    step: int
    total_steps: int
    losses: List[float] = field(default_factory=list)  # this invocation's losses, one per step
    stopped_early: bool = False
    images_per_s: float = 0.0  # source images per second (global), excluding the first step
    data_wait_fraction: float = 0.0
    elapsed_s: float = 0.0
    monitor: Dict[str, float] = field(default_factory=dict)  # the last kNN / online-classifier test values
    monitor_fraction: float = 0.0  # share of this invocation's wall-clock time spent in the quality monitor
    skipped: int = 0  # distinct unreadable images skipped (data.skip_corrupt) over the whole run: all processes,
    # resumes included (dataset indices, not skip events: an image drawn in 5 epochs counts once)


def pretrain(cfg: Config, *, resume: Optional[str] = None, stop_at_step: Optional[int] = None,
             allow_changes: bool = False) -> RunResult:
    """Pretrain ``cfg.method`` on ``cfg.data``; see the module docstring for the guarantees.

    ``resume``: a checkpoint path, a run folder, or "auto" (``<out>/last.ckpt`` if it exists; if not, the run says
    so and starts at step 0). ``allow_changes``: resume even if the config differs from the checkpoint's.
    ``stop_at_step``: stop (with a checkpoint) once this many steps are done, as if killed there; for tests.
    """
    out_dir = make_output_dir(cfg.out, "out=")
    fabric = make_fabric(cfg, out_dir)  # reads and writes nothing in out_dir
    lock = lock_run_folder(out_dir) if locks_the_run_folder(fabric) else None
    try:
        if cfg.train.strategy == "ddp_spawn" and fabric.world_size > 1:
            return fabric.launch(_run_and_release, cfg, out_dir, resume, stop_at_step, allow_changes)
        fabric.launch()
        return _run_and_release(fabric, cfg, out_dir, resume, stop_at_step, allow_changes)
    finally:
        if lock is not None:
            lock.release()


def _run_and_release(fabric, *args) -> RunResult:
    """``_run``, then the process group is destroyed while the interpreter is fully alive. A process that exits with
    a live gloo group can abort (SIGABRT, "terminate called without an active exception") when gloo's worker threads
    release tensors during interpreter finalisation; CI saw it once in a spawned rank."""
    try:
        return _run(fabric, *args)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@dataclass
class Parts:
    """The named parts of one invocation's loop (see the module docstring), built by :func:`_build`."""

    fabric: Fabric
    batches: Batches
    step: TrainStep
    guard: CheckpointGuard
    logger: StepLogger
    snapshots: Snapshots
    stop: StopRules
    monitor: Optional[QualityMonitor]
    skips: SkippedImages
    clock: RunClock
    start_step: int
    total_steps: int


def _run(fabric, cfg: Config, out_dir: Path, resume: Optional[str], stop_at_step: Optional[int],
         allow_changes: bool = False) -> RunResult:
    parts = _build(fabric, cfg, out_dir, resume, stop_at_step, allow_changes)
    result = RunResult(out_dir=out_dir, step=parts.start_step, total_steps=parts.total_steps)
    result.step = train_loop(parts, result)
    return _finish(parts, result)


def train_loop(p: Parts, result: RunResult) -> int:
    """Steps ``p.start_step .. p.total_steps - 1`` (or until a stop rule ends the run); each step's loss is appended
    to ``result.losses``. Returns the number of steps done.

    Per step: the prepared batch, the forward, the NaN rule (before the update: the weights stay those of a finite
    loss), the update, the monitor, the logs, the snapshots, and the stop rules with the checkpoint they ask for."""
    step = p.start_step
    p.clock.start()
    p.stop.arm()
    try:
        if step == 0:  # the initial weights: a run that diverges at once still has a good checkpoint
            p.guard.save(0)
        p.batches.start(step)
        while step < p.total_steps:
            t0 = time.perf_counter()
            batch = p.batches.next(step)
            fwd = p.step.forward(batch.views, step)
            if not p.stop.finite(fwd.out.loss):
                raise p.guard.poisoned(step, fwd.out.loss)
            p.guard.verified(step)  # the weights of `step` gave a finite loss
            logs = p.step.update(fwd)
            step += 1
            result.losses.append(logs["loss"])

            t2 = time.perf_counter()
            if p.monitor is not None:  # after t2: the monitor's time is not the method's throughput
                logs.update(p.monitor.after_step(fwd.out.features, batch.labels, step, p.total_steps, p.step.method))
            p.logger.write(step, logs, t0, batch.loaded_at, t2)
            p.snapshots.after(step, t2)
            stop = p.stop.check(step, t2)
            if stop.any or p.guard.due(step, t2):
                p.guard.save(step)
            if stop.signalled:
                raise KeyboardInterrupt
            if stop.early:
                result.stopped_early = True
                break
    finally:
        p.batches.close()
        p.logger.close()
        p.stop.close()
    return step


def _build(fabric, cfg: Config, out_dir: Path, resume: Optional[str], stop_at_step: Optional[int],
           allow_changes: bool) -> Parts:
    """Seed, write ``config.yaml``, build the data, the method, its optimiser and the monitor, resume into them,
    hand them to Fabric, and build the loop's parts. The order is that of the random draws (initialisation included),
    which exact resume and the demo's numbers depend on."""
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    fabric.seed_everything(cfg.seed, verbose=False)
    if fabric.is_global_zero:
        atomic_write_bytes(out_dir / "config.yaml", to_yaml(cfg).encode())

    dataset = build_dataset(cfg.data, "train", for_views=True, device_decode=decode_on(cfg.data, fabric.device))
    mask_provider = MaskProvider(cfg.views, dataset, cfg.data.dataset)  # errors here: no masks, stale cache
    schedule = RunSchedule(cfg, len(dataset))
    method = _build_method(fabric, cfg)
    optimizer = build_optimizer(method, cfg.optim, lr=schedule.peak_lr, depthwise_no_decay=cfg.optim.depthwise_no_decay)
    new_monitor = functools.partial(build_monitor, cfg, dataset, method.backbone.num_features, fabric.device,
                                    fabric.is_global_zero)
    monitor = new_monitor()
    resumed = resume_run(resume, cfg, out_dir, method, optimizer, monitor, new_monitor, allow_changes=allow_changes,
                         is_main=fabric.is_global_zero) if resume else None
    if resumed is not None:
        monitor = resumed.monitor
    if t.compile:
        method.backbone.compile()
    model, optimizer = fabric.setup(method, optimizer)
    inner: Method = model.module if hasattr(model, "module") else method

    start_step = resumed.step if resumed is not None else 0
    skips = resumed.skips if resumed is not None else SkippedImages()
    clock = RunClock(resumed.trained_s if resumed is not None else 0.0)
    total = schedule.total_steps
    batches = Batches(fabric, cfg, dataset, mask_provider, skips, start_step=start_step, total_steps=total)
    guard = CheckpointGuard(fabric, out_dir, to_dict(cfg), total, method=inner, optimizer=optimizer, monitor=monitor,
                            skips=skips, clock=clock, resumed=resumed, every_steps=t.ckpt_every_steps,
                            every_minutes=t.ckpt_every_minutes)
    logger = StepLogger(fabric, out_dir, start_step=start_step, total_steps=total, batch_size=t.batch_size,
                        log_every_steps=t.log_every_steps, progress=t.progress, monitor=monitor, skips=skips,
                        clock=clock)
    snapshots = Snapshots(fabric, out_dir, inner.backbone, to_yaml(cfg), minutes=t.snapshot_minutes,
                          every_steps=t.snapshot_every_steps, batch_size=t.batch_size, clock=clock)
    stop = StopRules(fabric, total, t.max_time_s, stop_at_step, clock)
    model.train()
    return Parts(fabric=fabric, batches=batches, step=TrainStep(fabric, cfg, model, inner, optimizer, schedule),
                 guard=guard, logger=logger, snapshots=snapshots, stop=stop, monitor=monitor, skips=skips,
                 clock=clock, start_step=start_step, total_steps=total)


def _build_method(fabric, cfg: Config) -> Method:
    """The method (its initialisation draws from the seeded global generator), with SyncBatchNorm under multi-GPU DDP
    (``train.sync_bn``) and channels-last weights (``train.channels_last``)."""
    method: Method = build_method(cfg)
    if fabric.world_size > 1 and cfg.train.sync_bn and fabric.device.type == "cuda":
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    if cfg.train.channels_last:
        method = method.to(memory_format=torch.channels_last)
    return method


def _finish(p: Parts, result: RunResult) -> RunResult:
    """The result's totals (the skipped images joined over the processes, a collective) and ``backbone.safetensors``."""
    result.elapsed_s = p.clock.elapsed()
    result.images_per_s = p.logger.throughput.images_per_s()
    result.data_wait_fraction = p.logger.throughput.data_wait()
    p.skips.sync(p.fabric)
    result.skipped = p.skips.count()
    if p.monitor is not None:
        result.monitor = dict(p.monitor.last)
        result.monitor_fraction = (p.monitor.seconds - p.logger.monitor_start) / max(result.elapsed_s, 1e-9)
    p.snapshots.save_final()
    p.fabric.barrier()
    return result
