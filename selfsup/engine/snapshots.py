"""The online backbone saved during and after pretraining, as safetensors with the run's config in the metadata.

* ``snapshots/backbone_<M>min.safetensors``: after ``M`` minutes of training (``train.snapshot_minutes``; the whole
  run's training time, resumes included: the first step that ends past the mark), for curves of quality over time.
* ``snapshots/backbone_step<N>.safetensors``: every ``train.snapshot_every_steps`` steps.
* ``backbone.safetensors``: at the end of each invocation, for evaluation and export.

Rank 0 writes them, atomically (:func:`selfsup.engine.checkpoint.save_backbone`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

from torch import nn

from selfsup.engine.checkpoint import save_backbone
from selfsup.engine.clock import RunClock

log = logging.getLogger("selfsup.engine")

__all__ = ["Snapshots", "snapshot_path"]


def snapshot_path(out_dir: Path, minutes: Optional[float], step: Optional[int] = None) -> Path:
    name = f"backbone_{minutes:g}min" if minutes is not None else f"backbone_step{step:08d}"
    return Path(out_dir) / "snapshots" / f"{name}.safetensors"


class Snapshots:
    """The snapshots of one invocation: those of ``minutes`` still ahead of the run's training time, and every
    ``every_steps`` steps (0: none)."""

    def __init__(self, fabric, out_dir: Path, backbone: nn.Module, config_yaml: str, *, minutes: List[float],
                 every_steps: int, batch_size: int, clock: RunClock) -> None:
        self.fabric, self.out_dir, self.backbone, self.config_yaml = fabric, out_dir, backbone, config_yaml
        self.every_steps, self.batch_size, self.clock = every_steps, batch_size, clock
        self.minutes = sorted(m for m in minutes if 60 * m > clock.trained_before)  # those still ahead

    def after(self, step: int, now: float) -> None:
        """Take the snapshots due once ``step`` steps are done, at ``now`` (``time.perf_counter()``)."""
        trained = self.clock.trained(now)
        while self.minutes and trained >= 60 * self.minutes[0]:
            if self.fabric.is_global_zero:
                self._save(self.minutes[0], step, trained)
            self.minutes.pop(0)
        if self.every_steps and step % self.every_steps == 0 and self.fabric.is_global_zero:
            self._save(None, step, trained)

    def save_final(self) -> None:
        """``backbone.safetensors`` (rank 0)."""
        if self.fabric.is_global_zero:
            save_backbone(self.out_dir / "backbone.safetensors", self.backbone, self.config_yaml)

    def _save(self, minutes: Optional[float], step: int, seconds: float) -> None:
        """The online backbone after ``minutes`` of training (the first step that ends past the mark; ``None``: at step
        ``step``, ``train.snapshot_every_steps``), with the step, the images seen and the exact training time in the
        safetensors metadata."""
        path = snapshot_path(self.out_dir, minutes, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_backbone(path, self.backbone, self.config_yaml,
                      extra={"step": str(step), "images_seen": str(step * self.batch_size),
                             "trained_s": f"{seconds:.3f}"})
        (log.info if minutes is not None else log.debug)("snapshot after %.1f min (step %d): %s", seconds / 60, step,
                                                         path)
