"""Pretraining as ``selfsup pretrain`` runs it: :func:`selfsup.engine.trainer.pretrain`, then the run's curves
(``<out>/curves.png``: loss, lr, monitored accuracies), drawn also for a killed or diverged run, up to its last step."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Tuple

from selfsup.config import Config
from selfsup.errors import SelfsupError


def pretrain_with_curves(cfg: Config, resume: Optional[str] = None, allow_changes: bool = False
                         ) -> Tuple[Any, Optional[Path]]:
    """The run's result (what :func:`~selfsup.engine.trainer.pretrain` returns) and the curves' PNG (None when the run
    logged nothing)."""
    from selfsup.engine.guard import RunFolderBusy
    from selfsup.engine.trainer import pretrain

    busy = False
    try:
        result = pretrain(cfg, resume=resume, allow_changes=allow_changes)
    except RunFolderBusy:  # another process is writing the folder: its curves are its own to draw
        busy = True
        raise
    finally:  # also for a killed or diverged run: the curves up to its last step
        curves = None if busy else draw_curves(Path(cfg.out), cfg.name)
    return result, curves


def draw_curves(out: Path, name: str) -> Optional[Path]:
    """``<out>/curves.png`` from ``<out>/train_log.csv`` (loss, lr, monitored accuracies), if the run logged a step."""
    from selfsup.eval.plots import plot_curves

    log_csv = out / "train_log.csv"
    if not log_csv.is_file() or log_csv.stat().st_size == 0:
        return None
    try:  # plot_curves reads the log through metafiles.read_csv_log: a damaged log is one DataError line
        return plot_curves(log_csv, out / "curves.png", title=f"{name}: pretraining loss")
    except (SelfsupError, ValueError, OSError) as exc:  # a damaged or foreign log: the run's own outcome matters more
        logging.getLogger("selfsup").warning("could not draw %s: %s", out / "curves.png", exc)
        return None
