"""What a pretraining run reports per step: the progress bar, ``train_log.csv`` and TensorBoard (rank 0 writes them).

:class:`StepLogger` takes each step's values (the loss and schedules from :class:`~selfsup.engine.step.TrainStep`,
the monitor's), adds the throughput (source images per second over the global batch, excluding the first step, which
pays for warm-up allocations), the share of time spent waiting for data, the monitor's share of the run's time and
the distinct images skipped, and writes them: every step to ``train_log.csv`` (:class:`StepLog`), every
``train.log_every_steps`` steps (and the last) to TensorBoard as ``train/*``, the kNN values as ``monitor/*`` whenever
measured, and a postfix on the progress bar.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Dict, List, Optional

from selfsup.engine.clock import RunClock
from selfsup.engine.monitor import QualityMonitor
from selfsup.engine.skips import SkippedImages
from selfsup.errors import DataError

__all__ = ["MONITOR_EVAL_KEYS", "StepLogger", "Throughput"]

MONITOR_EVAL_KEYS = ("knn_top1", "online_test_top1")  # written to TensorBoard as monitor/* whenever measured


class StepLog:
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


class Throughput:
    """Source images per second (global) and the share of step time spent waiting for data, over this invocation."""

    def __init__(self, batch_size: int, start_step: int) -> None:
        self.batch_size, self.start_step = batch_size, start_step
        self.wait_total = self.busy_total = 0.0
        self.timed_images, self.timed_time = 0, 0.0

    def add(self, step: int, t0: float, t1: float, t2: float) -> None:
        """Step ``step - 1`` started at ``t0``, had its data at ``t1`` and ended at ``t2``."""
        self.wait_total += t1 - t0
        self.busy_total += t2 - t0
        if step > self.start_step + 1:  # the first step pays for warm-up allocations
            self.timed_images += self.batch_size
            self.timed_time += t2 - t0

    def images_per_s(self, t0: Optional[float] = None, t2: Optional[float] = None) -> float:
        """Over the timed steps; before any (the first step), the last step's (``t0`` to ``t2``) if given, else 0."""
        if self.timed_time > 0:
            return self.timed_images / self.timed_time
        return self.batch_size / (t2 - t0) if t0 is not None and t2 is not None else 0.0

    def data_wait(self) -> float:
        return self.wait_total / self.busy_total if self.busy_total > 0 else 0.0


class StepLogger:
    """The step log of one invocation (see the module docstring); every process measures, rank 0 writes."""

    def __init__(self, fabric, out_dir: Path, *, start_step: int, total_steps: int, batch_size: int,
                 log_every_steps: int, progress: bool, monitor: Optional[QualityMonitor], skips: SkippedImages,
                 clock: RunClock) -> None:
        self.fabric, self.total_steps, self.log_every = fabric, total_steps, log_every_steps
        self.monitor, self.skips, self.clock = monitor, skips, clock
        self.monitor_start = monitor.seconds if monitor is not None else 0.0
        self.throughput = Throughput(batch_size, start_step)
        self.csv = StepLog(out_dir / "train_log.csv", start_step) if fabric.is_global_zero else None
        self.progress = _progress_bar(progress and fabric.is_global_zero, start_step, total_steps)

    def write(self, step: int, logs: Dict[str, float], t0: float, t1: float, t2: float) -> None:
        """Log step ``step - 1`` (``step`` steps are done), which started at ``t0``, had its data at ``t1`` and whose
        update ended at ``t2`` (the monitor's time after ``t2`` is not the method's throughput)."""
        if self.monitor is not None:
            logs["monitor_fraction"] = self.monitor_fraction()
        self.throughput.add(step, t0, t1, t2)
        logs["images_per_s"] = self.throughput.images_per_s(t0, t2)
        logs["data_wait"] = self.throughput.data_wait()
        if self.skips.any():  # distinct images; other processes' since the last checkpoint join at the next
            logs["skipped"] = self.skips.count()
        if self.csv is not None:  # rank 0 (fabric.is_global_zero): the process that writes
            self._publish(self.csv, step, logs, t2)

    def _publish(self, csv: StepLog, step: int, logs: Dict[str, float], t2: float) -> None:
        csv.write({"step": step - 1, **logs, "time_s": round(self.clock.elapsed(t2), 3)})
        if step % self.log_every == 0 or step == self.total_steps:
            self.fabric.log_dict({f"train/{k}": v for k, v in logs.items() if k not in MONITOR_EVAL_KEYS}, step=step)
        if any(k in logs for k in MONITOR_EVAL_KEYS):  # kNN steps need not fall on a logging step
            self.fabric.log_dict({f"monitor/{k}": logs[k] for k in MONITOR_EVAL_KEYS if k in logs}, step=step)
        self.progress.update(1)
        self.progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.3g}",
                                  img_s=f"{logs['images_per_s']:.0f}", wait=f"{100 * logs['data_wait']:.0f}%",
                                  **_monitor_postfix(self.monitor),
                                  **({"skipped": int(logs["skipped"])} if "skipped" in logs else {}),
                                  **({"pretext": f"{logs['pretext_top1']:.0f}%"} if "pretext_top1" in logs else {}))

    def monitor_fraction(self) -> float:
        """The monitor's share of this invocation's wall-clock time so far."""
        if self.monitor is None:
            raise ValueError("this run has no quality monitor")
        return (self.monitor.seconds - self.monitor_start) / max(self.clock.elapsed(time.perf_counter()), 1e-9)

    def close(self) -> None:
        self.progress.close()
        if self.csv is not None:
            self.csv.close()


def _monitor_postfix(monitor: Optional[QualityMonitor]) -> Dict[str, str]:
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
