"""The pretraining loop, on Lightning Fabric.

Fabric provides devices, DDP (single- and multi-node, gloo or NCCL), mixed precision and the TensorBoard logger. The loop
itself is ours, about one screen, because the guarantees we need are step-exact:

* **Exact resume.** Everything random in a step is derived from (seed, step): the data order (one permutation per epoch,
  :class:`StepBatchSampler`), the view parameters (drawn for the global batch, then sliced per rank) and the method's own
  randomness (:class:`~selfsup.methods.base.StepContext`). A checkpoint holds the method (EMA targets included), the
  optimiser and the step, so a run killed at any point and resumed with ``--resume`` reproduces the uninterrupted loss
  curve on the CPU. Lightning's Trainer restarts an interrupted epoch and pickles arbitrary objects in its checkpoints.
* **DDP equals one process.** Each rank takes its slice of the same global batch and view parameters, and losses gather
  embeddings across ranks, so 2 processes compute the gradient of the 1-process loss (``tests/engine/test_ddp.py``).
* **Nothing lost.** Checkpoints are atomic, at step 0, every ``ckpt_every_steps`` steps or ``ckpt_every_minutes``
  minutes, on SIGTERM/SIGINT and at the end. A NaN/inf loss stops the run before the update is applied.
* **One writer.** A run holds its folder's lock (:func:`lock_run_folder`, taken by the process that is or becomes
  rank 0) from start to end: a second run into the same folder, resumed or not, is refused in one line. Under the
  lock, the temporary files that a killed run's atomic writes left behind are removed (only those names).
* **A good checkpoint is a verified one.** A checkpoint is written only if every tensor it holds is finite, and it
  becomes ``last_good.ckpt`` once the loss computed from its weights (the next step's) is finite too. When a loss is
  not finite and ``last.ckpt`` holds the weights that produced it (a diverging update, finite but huge), that file is
  moved aside (``nonfinite_step<N>.ckpt``) and ``last_good.ckpt`` takes its place, so ``--resume`` continues from
  weights known to give a finite loss.
* **Resume means continue exactly.** The checkpoint's config is compared with the run's, key by key; any difference
  in what shapes training (method, model, optimiser, views, data, batch, seed, schedule) is refused with one line
  naming the keys, unless ``allow_changes`` (CLI ``--allow-changes``). Keys that only steer logging, checkpoints,
  devices and evaluation (:data:`RESUME_FREE_KEYS`) may change freely.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from selfsup.config import Config, load_config, to_dict, to_yaml
from selfsup.data.datasets import build_dataset, collate, decode_on
from selfsup.data.images import decode_on_device
from selfsup.data.masks import MaskProvider
from selfsup.data.views import MultiViewSampler
from selfsup.engine.checkpoint import (link_checkpoint, load_checkpoint, optimizer_problem, save_backbone,
                                       save_checkpoint)
from selfsup.engine.ema import ema_update
from selfsup.engine.monitor import build_monitor
from selfsup.engine.optim import build_optimizer, clip_per_parameter
from selfsup.engine.schedules import (cosine_ema_momentum, cosine_schedule, scaled_lr, set_lr, set_weight_decay,
                                     warmup_cosine, warmup_step_decay)
from selfsup.errors import CheckpointError, ConfigError, DataError, NonFiniteLossError
from selfsup.fileio import atomic_write_bytes
from selfsup.metafiles import RunLock, make_output_dir
from selfsup.methods import Method, StepContext, build_method

log = logging.getLogger("selfsup.engine")

MONITOR_EVAL_KEYS = ("knn_top1", "online_test_top1")  # written to TensorBoard as monitor/* whenever measured


def derive_seed(*parts) -> int:
    """A 63-bit seed from any parts (ints, strings); stable across processes and Python's hash randomisation."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator_for(*parts) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


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
        epoch, perm = -1, None
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


class _StepLog:
    """``train_log.csv``: one row per step, appended; rows at or after a resumed step are dropped first.

    The rows kept from an earlier log are those whose step is an integer below the resumed step and above the row
    before (a row that a kill cut short, e.g. ``"5"`` of ``"57,..."``, or a damaged line is dropped, never kept as a
    wrong step); only the known columns are kept."""

    FIELDS = ["step", "loss", "lr", "weight_decay", "ema_momentum", "images_per_s", "data_wait", "time_s",
              "online_loss", "online_top1", "knn_top1", "online_test_top1", "monitor_fraction", "skipped",
              "pretext_top1"]

    def __init__(self, path: Path, start_step: int) -> None:
        self.path = path
        rows = self._earlier(path, start_step) if start_step > 0 else []
        try:
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.FIELDS)
                w.writeheader()
                w.writerows(rows)
            self.file = open(path, "a", newline="")
        except OSError as exc:
            raise DataError(f"cannot write the training log {path}: {exc.strerror or exc}") from None
        self.writer = csv.DictWriter(self.file, fieldnames=self.FIELDS)

    def _earlier(self, path: Path, start_step: int) -> List[Dict[str, str]]:
        rows: List[Dict[str, str]] = []
        last = -1
        try:
            with open(path, newline="", errors="replace") as f:
                for r in csv.DictReader(f):
                    try:
                        step = int(r.get("step") or "")
                    except (TypeError, ValueError):
                        continue
                    if last < step < start_step:
                        rows.append({k: v if isinstance(v := r.get(k), str) else "" for k in self.FIELDS})
                        last = step
        except (OSError, csv.Error):  # no log, or damaged from here on: keep the rows read so far
            pass
        return rows

    def write(self, row: Dict[str, float]) -> None:
        self.writer.writerow({k: row.get(k, "") for k in self.FIELDS})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16 autocast on CUDA devices that support it, full fp32 elsewhere (bf16 on CPUs without it is slow)."""
    if precision != "auto":
        return "32-true" if precision == "32" else precision
    if accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def check_devices(t) -> None:
    """One-line errors for devices this machine does not have (Fabric would raise deep inside its setup)."""
    if t.num_nodes > 1:  # other machines' devices cannot be checked from here, but the launcher's variables can
        launched = any(k in os.environ for k in ("NODE_RANK", "GROUP_RANK", "SLURM_NODEID", "LOCAL_RANK"))
        if not launched:
            raise ConfigError(f"train.num_nodes={t.num_nodes} needs a multi-node launcher (torchrun --nnodes, "
                              f"srun, ...) that sets NODE_RANK / SLURM_NODEID; none is set here")
        return
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if t.accelerator in ("cuda", "gpu") and gpus == 0:
        raise ConfigError(f"train.accelerator={t.accelerator}, but this machine has no CUDA GPU "
                          f"(use train.accelerator=cpu or auto)")
    if t.accelerator == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("train.accelerator=mps, but MPS is not available on this machine")
    on_gpu = t.accelerator in ("cuda", "gpu") or (t.accelerator == "auto" and gpus > 0)
    if on_gpu and t.devices > gpus:
        raise ConfigError(f"train.devices={t.devices}, but this machine has {gpus} GPU(s)")
    cores = os.cpu_count() or 1
    if not on_gpu and t.accelerator != "mps" and t.devices > cores:
        raise ConfigError(f"train.devices={t.devices} CPU processes, but this machine has {cores} cores")


def make_fabric(cfg: Config, out_dir: Path):
    from lightning.fabric import Fabric
    from lightning.fabric.loggers import TensorBoardLogger

    t = cfg.train
    check_devices(t)
    loggers = [TensorBoardLogger(root_dir=str(out_dir), name="tensorboard", version="")]
    return Fabric(accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
                  precision=resolve_precision(t.precision, t.accelerator), loggers=loggers)


def pretrain(cfg: Config, *, resume: Optional[str] = None, stop_at_step: Optional[int] = None,
             allow_changes: bool = False) -> RunResult:
    """Pretrain ``cfg.method`` on ``cfg.data``; see the module docstring for the guarantees.

    ``resume``: a checkpoint path, a run folder, or "auto" (``<out>/last.ckpt`` if it exists; if not, the run says
    so and starts at step 0). ``allow_changes``: resume even if the config differs from the checkpoint's.
    ``stop_at_step``: stop (with a checkpoint) once this many steps are done, as if killed there; for tests.
    """
    out_dir = make_output_dir(cfg.out, "out=")
    fabric = make_fabric(cfg, out_dir)  # reads and writes nothing in out_dir
    lock = lock_run_folder(out_dir) if _locks_the_run_folder(fabric) else None
    try:
        if cfg.train.strategy == "ddp_spawn" and fabric.world_size > 1:
            return fabric.launch(_run_and_release, cfg, out_dir, resume, stop_at_step, allow_changes)
        fabric.launch()
        return _run_and_release(fabric, cfg, out_dir, resume, stop_at_step, allow_changes)
    finally:
        if lock is not None:
            lock.release()


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


def _locks_the_run_folder(fabric) -> bool:
    """Whether this process takes the run folder's lock: the one that is, or after ``fabric.launch`` becomes, global
    rank 0 (only rank 0 writes in the folder). The processes Fabric starts (ddp_spawn's workers; the copies of this
    command that the subprocess launcher starts, with LOCAL_RANK set) and the other ranks of an externally launched
    run (torchrun, SLURM) do not, or a multi-process run would lock itself out."""
    env = getattr(fabric.strategy, "cluster_environment", None)
    if env is None:  # one device: one process
        return True
    try:
        from lightning.fabric.plugins.environments import LightningEnvironment

        if isinstance(env, LightningEnvironment):  # its global rank is only set at launch: read LOCAL/NODE_RANK
            return env.local_rank() == 0 and env.node_rank() == 0
        return env.global_rank() == 0  # torchrun (RANK), SLURM (SLURM_PROCID), ...: from the launcher's variables
    except Exception:  # noqa: BLE001 - an environment that cannot tell yet: a single process is the common case
        return True


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


def _run_and_release(fabric, *args) -> RunResult:
    """``_run``, then the process group is destroyed while the interpreter is fully alive. A process that exits with
    a live gloo group can abort (SIGABRT, "terminate called without an active exception") when gloo's worker threads
    release tensors during interpreter finalisation; CI saw it once in a spawned rank."""
    try:
        return _run(fabric, *args)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _run(fabric, cfg: Config, out_dir: Path, resume: Optional[str], stop_at_step: Optional[int],
         allow_changes: bool = False) -> RunResult:
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    world, rank = fabric.world_size, fabric.global_rank
    fabric.seed_everything(cfg.seed, verbose=False)
    if fabric.is_global_zero:
        atomic_write_bytes(out_dir / "config.yaml", to_yaml(cfg).encode())

    dataset = build_dataset(cfg.data, "train", for_views=True, device_decode=decode_on(cfg.data, fabric.device))
    mask_provider = MaskProvider(cfg.views, dataset, cfg.data.dataset)  # errors here: no masks, stale cache
    steps_per_epoch = len(dataset) // t.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"the dataset has {len(dataset)} images, fewer than train.batch_size={t.batch_size}")
    total_steps = t.steps if t.steps is not None else max(1, math.ceil(t.epochs * steps_per_epoch))
    o = cfg.optim
    warmup = o.warmup_steps if o.warmup_steps is not None else round(o.warmup_epochs * steps_per_epoch)
    warmup = min(warmup, total_steps)
    peak_lr = scaled_lr(o.base_lr, t.batch_size)

    method: Method = build_method(cfg)
    if world > 1 and t.sync_bn and fabric.device.type == "cuda":
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    if t.channels_last:
        method = method.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(method, o, lr=peak_lr, depthwise_no_decay=o.depthwise_no_decay)
    monitor = build_monitor(cfg, dataset, method.backbone.num_features, fabric.device, fabric.is_global_zero)

    start_step = 0
    trained_s = 0.0  # wall-clock seconds of training before this invocation (resumed runs), for the snapshots
    skipped_known: Set[int] = set()  # distinct unreadable images (dataset indices) known skipped: all processes
    skipped_floor = 0  # a checkpoint's "skipped" count (older checkpoints hold the count alone, no indices)
    ckpt_path = out_dir / "last.ckpt"
    good_path = out_dir / "last_good.ckpt"
    pending: Optional[int] = None  # the step of last.ckpt while no loss from its weights has been seen finite
    if resume:
        path = ckpt_path if resume == "auto" else Path(resume)
        if path.is_dir():
            path = path / "last.ckpt"
        if resume == "auto" and not path.exists():
            if fabric.is_global_zero:
                log.warning("nothing to resume: %s does not exist; starting at step 0", path)
        else:
            state = load_checkpoint(path)
            changed = _check_compatible(state, cfg, path, allow_changes)
            _load_state(method, optimizer, state, path, changed, o.name)
            if monitor is not None and "monitor" in state:
                try:
                    monitor.load_state_dict(state["monitor"])
                except Exception:  # noqa: BLE001 - a state that does not fit (or is damaged) is dropped, whole
                    log.warning("the monitor's saved state does not fit its new settings; it starts afresh")
                    monitor = build_monitor(cfg, dataset, method.backbone.num_features, fabric.device,
                                            fabric.is_global_zero)
            start_step = int(state["step"])
            pending = start_step if path.resolve() == ckpt_path.resolve() else None
            trained_s = float(state.get("trained_s", 0.0))
            skipped_known = set(state.get("skipped_indices", []))
            skipped_floor = int(state.get("skipped", 0))
            if fabric.is_global_zero:
                log.info("resumed from %s at step %d", path, start_step)
    if t.compile:
        method.backbone.compile()
    model, optimizer = fabric.setup(method, optimizer)
    inner: Method = model.module if hasattr(model, "module") else method
    sampler = MultiViewSampler(cfg.views, dataset.mean, dataset.std)

    batch_sampler = StepBatchSampler(len(dataset), t.batch_size, rank=rank, world_size=world, seed=cfg.seed,
                                     start_step=start_step, total_steps=total_steps)
    loader = DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate, num_workers=cfg.data.workers,
                        pin_memory=fabric.device.type == "cuda", persistent_workers=False)
    local_batch = t.batch_size // world

    config_dict, config_yaml = to_dict(cfg), to_yaml(cfg)

    def checkpoint(step: int) -> None:
        nonlocal pending, skipped_known
        skipped_known = _union(fabric, skipped_known | skipped)  # a collective: every process calls it
        skipped.clear()
        if not _state_finite(inner, optimizer):
            raise NonFiniteLossError(f"the weights or optimiser state are not finite after step {step}; the run "
                                     f"stopped without saving them. {_good_message()}")
        if fabric.is_global_zero:
            state = {"step": step, "total_steps": total_steps, "method": inner.state_dict(),
                     "optimizer": optimizer.state_dict(), "config": config_dict,
                     "trained_s": trained_s + time.perf_counter() - t_start,
                     "skipped": max(skipped_floor, len(skipped_known)), "skipped_indices": sorted(skipped_known)}
            if monitor is not None:
                state["monitor"] = monitor.state_dict()
            save_checkpoint(ckpt_path, state)
        pending = step
        fabric.barrier()

    def verified(step: int) -> None:
        """The loss from the weights of step ``step`` was finite: last.ckpt (if it holds them) is good."""
        nonlocal pending
        if pending == step:
            if fabric.is_global_zero and ckpt_path.exists():
                link_checkpoint(ckpt_path, good_path)
            pending = None

    def _good_message() -> str:
        return (f"Last good checkpoint: {ckpt_path} (step {_ckpt_step(ckpt_path)}); continue from it with --resume "
                f"--allow-changes and a lower optim.base_lr or a larger method.temperature."
                if ckpt_path.exists() else
                "No good checkpoint was written; start again with a lower optim.base_lr or a larger "
                "method.temperature.")

    def set_aside_poisoned(step: int) -> None:
        """The loss at ``step`` is not finite: if last.ckpt holds the weights that produced it, move it aside and put
        the last verified checkpoint in its place."""
        if fabric.is_global_zero and pending == step and ckpt_path.exists():
            ckpt_path.replace(out_dir / f"nonfinite_step{step}.ckpt")
            if good_path.exists():
                link_checkpoint(good_path, ckpt_path)
        fabric.barrier()

    step_log = _StepLog(out_dir / "train_log.csv", start_step) if fabric.is_global_zero else None
    stop = {"signal": None}
    previous_handlers = _install_signal_handlers(stop) if fabric.is_global_zero else {}
    progress = _progress_bar(t.progress and fabric.is_global_zero, start_step, total_steps)

    result = RunResult(out_dir=out_dir, step=start_step, total_steps=total_steps)
    model.train()
    step = start_step
    t_start = last_ckpt_time = time.perf_counter()
    snapshots = sorted(m for m in t.snapshot_minutes if 60 * m > trained_s)  # those still ahead
    monitor_start = monitor.seconds if monitor is not None else 0.0
    wait_total = busy_total = 0.0
    skipped: Set[int] = set()  # unreadable images (dataset indices) this process skipped since the last checkpoint
    timed_images, timed_time = 0, 0.0
    ahead = _Prefetch(lambda s: sampler.sample_params(t.batch_size, generator_for(cfg.seed, "views", s)))
    try:
        if start_step == 0:  # the initial weights: a run that diverges at once still has a good checkpoint
            checkpoint(0)
        it = iter(loader)
        ahead.start(step)
        while step < total_steps:
            t0 = time.perf_counter()
            batch = next(it)
            if "items" in batch:  # data.decode=device: the batch's JPEGs are decoded together on the device
                batch = decode_on_device(batch, dataset, fabric.device)
            t1 = time.perf_counter()
            if batch.get("skipped", 0):  # the indices asked for that did not come back (after decode_on_device)
                skipped.update(_missing(batch_sampler.indices(step), batch["index"]))
            if cfg.data.skip_corrupt and _any_flag(fabric, batch["image"].shape[0] == 0):
                raise DataError(f"no readable image in the batch of step {step}: "
                                f"{max(skipped_floor, len(skipped_known | skipped))} unreadable images skipped so far "
                                f"out of {len(dataset)} in data.root={cfg.data.root}; fix or remove them")
            if world > 1 and 0 < batch["image"].shape[0] < local_batch:
                batch = _refill(batch, local_batch)  # every rank must gather equal shapes
            images = batch["image"].to(fabric.device, non_blocking=True)
            rows = slice(rank * local_batch, rank * local_batch + images.shape[0])  # this rank's part of the step
            masks = mask_provider(batch, images, generator_for(cfg.seed, "masks", step), t.batch_size, rows)
            params = ahead.take(step, step + 1 if step + 1 < total_steps else None)[rows]
            views = sampler(images, masks, params, batch["size"])  # boxes placed in each image's own size
            if t.channels_last:
                views.large = [v.contiguous(memory_format=torch.channels_last) for v in views.large]
                views.small = [v.contiguous(memory_format=torch.channels_last) for v in views.small]

            if o.schedule == "step":
                lr = warmup_step_decay(step, steps_per_epoch, warmup, peak_lr, o.milestones, o.gamma)
            else:
                lr = warmup_cosine(step, total_steps, warmup, peak_lr, peak_lr * o.min_lr_ratio)
            set_lr(optimizer, lr)
            if o.weight_decay_end is not None:
                set_weight_decay(optimizer, cosine_schedule(step, total_steps, o.weight_decay, o.weight_decay_end))
            ctx = StepContext(step=step, total_steps=total_steps, epoch=step // steps_per_epoch,
                              generator=generator_for(cfg.seed, "method", step),
                              steps_per_epoch=steps_per_epoch)
            torch.manual_seed(derive_seed(cfg.seed, "global", step, rank))
            with fabric.autocast():
                out = model(views, ctx)
            loss = out.loss
            if not _all_finite(fabric, loss):
                set_aside_poisoned(step)
                raise NonFiniteLossError(
                    f"loss is {loss.item()} at step {step}; the run stopped before applying it. {_good_message()}")
            verified(step)
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            inner.on_after_backward(ctx)
            if o.clip_grad is not None and o.clip_grad_mode == "per_param":
                clip_per_parameter(inner.parameters(), o.clip_grad)
            elif o.clip_grad is not None:
                fabric.clip_gradients(model, optimizer, max_norm=o.clip_grad, error_if_nonfinite=False)
            optimizer.step()
            logs: Dict[str, float] = {"loss": loss.item(), "lr": lr}
            if o.weight_decay_end is not None:
                logs["weight_decay"] = optimizer.param_groups[0]["weight_decay"]
            if inner.ema is not None:
                m = (cosine_ema_momentum(step, total_steps, inner.ema.base) if inner.ema.schedule == "cosine"
                     else inner.ema.base)
                for online, target in inner.ema_pairs():
                    ema_update(target, online, m)
                logs["ema_momentum"] = m
            logs.update(inner.after_optimizer_step(ctx))
            logs.update({k: float(v) for k, v in out.logs.items()})
            step += 1
            result.losses.append(logs["loss"])

            t2 = time.perf_counter()
            if monitor is not None:  # after t2: the monitor's time is not the method's throughput
                logs.update(monitor.train_step(out.features, batch["label"]))
                if monitor.due(step, total_steps):
                    logs.update(monitor.evaluate(inner.representation()))
                logs["monitor_fraction"] = (monitor.seconds - monitor_start) / max(time.perf_counter() - t_start,
                                                                                   1e-9)
            wait_total += t1 - t0
            busy_total += t2 - t0
            if step > start_step + 1:  # the first step pays for warm-up allocations
                timed_images += t.batch_size
                timed_time += t2 - t0
            logs["images_per_s"] = timed_images / timed_time if timed_time > 0 else t.batch_size / (t2 - t0)
            logs["data_wait"] = wait_total / busy_total
            if skipped or skipped_known or skipped_floor:  # distinct images; other processes' since the last
                logs["skipped"] = max(skipped_floor, len(skipped_known | skipped))  # checkpoint join at the next
            if fabric.is_global_zero:
                step_log.write({"step": step - 1, **logs, "time_s": round(t2 - t_start, 3)})
                if step % t.log_every_steps == 0 or step == total_steps:
                    fabric.log_dict({f"train/{k}": v for k, v in logs.items() if k not in MONITOR_EVAL_KEYS},
                                    step=step)
                if any(k in logs for k in MONITOR_EVAL_KEYS):  # kNN steps need not fall on a logging step
                    fabric.log_dict({f"monitor/{k}": logs[k] for k in MONITOR_EVAL_KEYS if k in logs}, step=step)
                progress.update(1)
                progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{lr:.3g}",
                                     img_s=f"{logs['images_per_s']:.0f}", wait=f"{100 * logs['data_wait']:.0f}%",
                                     **_monitor_postfix(monitor),
                                     **({"skipped": int(logs["skipped"])} if "skipped" in logs else {}),
                                     **({"pretext": f"{logs['pretext_top1']:.0f}%"} if "pretext_top1" in logs else {}))

            while snapshots and trained_s + t2 - t_start >= 60 * snapshots[0]:
                if fabric.is_global_zero:
                    _save_snapshot(out_dir, snapshots[0], inner.backbone, config_yaml, step, t.batch_size,
                                   trained_s + t2 - t_start)
                snapshots.pop(0)
            if t.snapshot_every_steps and step % t.snapshot_every_steps == 0 and fabric.is_global_zero:
                _save_snapshot(out_dir, None, inner.backbone, config_yaml, step, t.batch_size,
                               trained_s + t2 - t_start)
            done = step == total_steps
            timed_out = t.max_time_s is not None and t2 - t_start >= t.max_time_s
            halted = stop_at_step is not None and step >= stop_at_step
            signalled = _any_flag(fabric, stop["signal"] is not None)
            if (done or timed_out or halted or signalled or step % t.ckpt_every_steps == 0
                    or t2 - last_ckpt_time >= 60 * t.ckpt_every_minutes):
                checkpoint(step)
                last_ckpt_time = time.perf_counter()
            if signalled:
                raise KeyboardInterrupt
            if not done and (timed_out or halted):
                result.stopped_early = True
                break
    finally:
        ahead.close()
        progress.close()
        if step_log is not None:
            step_log.close()
        _restore_signal_handlers(previous_handlers)

    result.step = step
    result.elapsed_s = time.perf_counter() - t_start
    result.images_per_s = timed_images / timed_time if timed_time > 0 else 0.0
    result.data_wait_fraction = wait_total / busy_total if busy_total > 0 else 0.0
    skipped_known = _union(fabric, skipped_known | skipped)
    result.skipped = max(skipped_floor, len(skipped_known))
    if monitor is not None:
        result.monitor = dict(monitor.last)
        result.monitor_fraction = (monitor.seconds - monitor_start) / max(result.elapsed_s, 1e-9)
    if fabric.is_global_zero:
        save_backbone(out_dir / "backbone.safetensors", inner.backbone, config_yaml)
    fabric.barrier()
    return result


def snapshot_path(out_dir: Path, minutes: Optional[float], step: Optional[int] = None) -> Path:
    name = f"backbone_{minutes:g}min" if minutes is not None else f"backbone_step{step:08d}"
    return Path(out_dir) / "snapshots" / f"{name}.safetensors"


def _save_snapshot(out_dir: Path, minutes: Optional[float], backbone: nn.Module, config_yaml: str, step: int,
                   batch: int, seconds: float) -> None:
    """The online backbone after ``minutes`` of training (the first step that ends past the mark; ``None``: at step
    ``step``, ``train.snapshot_every_steps``), with the step, the images seen and the exact training time in the
    safetensors metadata."""
    path = snapshot_path(out_dir, minutes, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_backbone(path, backbone, config_yaml, extra={"step": str(step), "images_seen": str(step * batch),
                                                     "trained_s": f"{seconds:.3f}"})
    (log.info if minutes is not None else log.debug)("snapshot after %.1f min (step %d): %s", seconds / 60, step, path)


RESUME_FREE_KEYS = ("out", "name", "train.progress", "train.max_time_s", "train.log_every_steps",
                    "train.ckpt_every_steps", "train.ckpt_every_minutes", "train.threads", "train.snapshot_minutes",
                    "train.snapshot_every_steps",
                    "train.accelerator", "train.devices", "train.num_nodes", "train.strategy", "train.compile",
                    "data.workers", "data.root", "data.test_root", "data.skip_corrupt", "eval.", "monitor.")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_compatible(state: dict, cfg: Config, path: Path, allow_changes: bool) -> List[str]:
    """The keys (outside :data:`RESUME_FREE_KEYS`) whose value differs between the checkpoint's config and ``cfg``;
    any such key is a one-line :class:`CheckpointError` unless ``allow_changes``.

    A key the checkpoint's config lacks (an option added to selfsup after the checkpoint was written) counts as its
    default: new options default to the behaviour before them, so a run continued at the default is unchanged."""
    old, new = _flatten(state["config"]), _flatten(to_dict(cfg))  # a dict: load_checkpoint checked the structure
    defaults = _flatten(to_dict(load_config(None, [f"method.name={cfg.method.name}"])))
    old = {**{k: v for k, v in defaults.items() if k not in old}, **old}
    changed = [k for k in sorted(set(old) | set(new))
               if old.get(k, "<unset>") != new.get(k, "<unset>")
               and not any(k == f or (f.endswith(".") and k.startswith(f)) for f in RESUME_FREE_KEYS)]
    if changed and not allow_changes:
        shown = ", ".join(f"{k} ({old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r})" for k in changed[:6])
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        raise CheckpointError(f"{path}: the config differs from the checkpoint's in {shown}{more}; resume with the "
                              f"same values, start a new run (out=...), or pass --allow-changes")
    if changed:
        log.warning("resuming %s with changed %s (--allow-changes)", path, ", ".join(changed))
    return changed


def _load_state(method: nn.Module, optimizer, state: dict, path: Path, changed: List[str], optim_name: str) -> None:
    """Load the method and optimiser state; a structure that does not fit is a one-line error naming the file and the
    first tensors or fields that differ. The optimiser's settings (momentum, betas, ...) stay those of the current
    config, as its learning rate and weight decay do: ``load_state_dict`` would bring back the checkpoint's, and a
    change allowed by ``--allow-changes`` would silently not happen."""
    why = f" (changed: {', '.join(changed)})" if changed else ""
    head = f"cannot resume from {path}{why}"
    never = "so it cannot be resumed, even with --allow-changes; start a new run (out=...)"
    saved, now = state["method"], method.state_dict()
    missing = [k for k in now if k not in saved]
    extra = [k for k in saved if k not in now]
    if missing or extra:  # another architecture (e.g. model.backbone): name the tensors
        parts = ([f"{len(missing)} of the model's tensors are missing from it ({', '.join(missing[:3])}"
                  f"{', ...' if len(missing) > 3 else ''})"] if missing else []) + \
                ([f"it holds {len(extra)} tensors the model does not have ({', '.join(extra[:3])}"
                  f"{', ...' if len(extra) > 3 else ''})"] if extra else [])
        raise CheckpointError(f"{head}: {'; '.join(parts)}, {never}")
    differ = [(k, tuple(saved[k].shape), tuple(v.shape)) for k, v in now.items()
              if tuple(saved[k].shape) != tuple(v.shape)]
    if differ:  # e.g. method.projector_dim or model.width
        shown = "; ".join(f"{k}: {a} in the checkpoint, {b} now" for k, a, b in differ[:3])
        more = f"; and {len(differ) - 3} more" if len(differ) > 3 else ""
        raise CheckpointError(f"{head}: its tensor shapes differ from the model's ({shown}{more}), {never}")
    saved_optim = state["config"].get("optim")
    saved_name = saved_optim.get("name") if isinstance(saved_optim, dict) else None
    problem = (optimizer_problem(state["optimizer"])
               or _optimizer_misfit(optimizer, state["optimizer"], saved_name, optim_name))
    if problem:
        raise CheckpointError(f"{head}: {problem}, {never}")
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    try:
        method.load_state_dict(saved)
        optimizer.load_state_dict(state["optimizer"])
    except KeyError as exc:
        raise CheckpointError(f"{head}: the field {exc.args[0]!r} is missing from its optimiser state, "
                              f"{never}") from None
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{head}: {first[:200]}") from None
    for group, settings in zip(optimizer.param_groups, fresh):
        group.update(settings)


def _optimizer_misfit(optimizer, saved: dict, saved_name: Any, name: str) -> Optional[str]:
    """Why the checkpoint's optimiser state (structure already checked) does not fit ``optimizer`` (None if it fits):
    another optimiser (``optim.name``), other groups, or state tensors of other shapes. Settings a group lacks (an
    older torch's) do not matter: the current config's settings are put back after loading."""
    if saved_name is not None and saved_name != name:
        return f"its optimiser state is optim.name={saved_name}'s, not {name}'s ('optimizer')"
    groups, now = saved["param_groups"], optimizer.param_groups
    if len(groups) != len(now):
        return f"'optimizer.param_groups' has {len(groups)} parameter groups, the current optimiser {len(now)}"
    ids = [p for g in groups for p in g["params"]]
    if len(set(ids)) != len(ids):
        return "'optimizer.param_groups' lists a parameter twice"
    params = {}
    for n, (old, new) in enumerate(zip(groups, now)):
        if len(old["params"]) != len(new["params"]):
            return (f"'optimizer.param_groups[{n}]' holds {len(old['params'])} parameters, the current optimiser's "
                    f"{len(new['params'])}")
        params.update(zip(old["params"], new["params"]))
    for pid, slots in saved["state"].items():
        if pid not in params:
            return f"'optimizer.state' holds parameter id {pid!r}, which no parameter group lists"
        shape = tuple(params[pid].shape)
        for name, value in slots.items():
            if torch.is_tensor(value) and value.ndim > 0 and tuple(value.shape) != shape:
                return f"'optimizer.state[{pid}].{name}' has shape {tuple(value.shape)}, its parameter {shape}"
    return None


def _state_finite(method: nn.Module, optimizer) -> bool:
    """Every parameter, buffer and floating optimiser tensor is finite."""
    tensors = [t for t in method.state_dict().values() if t.is_floating_point()]
    for group in optimizer.state.values():
        tensors.extend(v for v in group.values() if torch.is_tensor(v) and v.is_floating_point())
    return all(bool(torch.isfinite(t).all()) for t in tensors)


class _Prefetch:
    """Draws the next step's view parameters in a background thread while this step runs: at a global batch of 4096
    the draw costs about 11 ms of CPU a step, which would otherwise sit between GPU steps. Each step's draw comes from
    its own generator (seed, "views", step), so the result is the same as drawing it in line, resumed runs included."""

    def __init__(self, draw) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.draw = draw
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="selfsup-views")
        self.future = None
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


def _ckpt_step(path: Path) -> str:
    try:
        return str(load_checkpoint(path)["step"])
    except CheckpointError:
        return "?"


def _all_finite(fabric, loss: torch.Tensor) -> bool:
    finite = torch.isfinite(loss.detach()).float()
    if fabric.world_size > 1:
        finite = fabric.all_reduce(finite, reduce_op="min")
    return bool(finite.item() > 0)


def _missing(asked: Iterable[int], got: torch.Tensor) -> Set[int]:
    """The indices of ``asked`` that are not in ``got`` (a batch's ``index``): the images skipped as unreadable."""
    kept = set(got.tolist())
    return {int(i) for i in asked if int(i) not in kept}


def _union(fabric, indices: Set[int]) -> Set[int]:
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


def _any_flag(fabric, flag: bool) -> bool:
    if fabric.world_size == 1:
        return flag
    t = torch.tensor(float(flag), device=fabric.device)
    return bool(fabric.all_reduce(t, reduce_op="max").item() > 0)


def _install_signal_handlers(stop: dict) -> dict:
    """SIGTERM/SIGINT set a flag; the loop checkpoints at the end of the step and exits (nothing is lost)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.getsignal(sig)

        def handler(signum, frame, _sig=sig):
            if stop["signal"] is not None:  # a second signal: stop now
                signal.signal(_sig, previous[_sig])
                raise KeyboardInterrupt
            stop["signal"] = signum

        signal.signal(sig, handler)
    return previous


def _restore_signal_handlers(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _monitor_postfix(monitor) -> Dict[str, str]:
    """``knn=84.1% lin=85.3%``: the latest kNN and online-classifier test top-1 (before the first kNN: the online
    classifier's running training accuracy)."""
    if monitor is None:
        return {}
    last = monitor.last
    out = {}
    if "knn_top1" in last:
        out["knn"] = f"{last['knn_top1']:.1f}%"
    if "online_test_top1" in last:
        out["lin"] = f"{last['online_test_top1']:.1f}%"
    elif monitor.train_top1 is not None:
        out["lin_train"] = f"{monitor.train_top1:.1f}%"
    return out


def _progress_bar(enabled: bool, start: int, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, unit="step", desc="pretrain", dynamic_ncols=True,
                mininterval=1.0)
