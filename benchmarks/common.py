"""Shared by the benchmark scripts: schedule calibration for a wall-clock budget, and the frozen-feature probes."""

from __future__ import annotations

import shutil
from pathlib import Path

from selfsup.config import load_config, to_dict
from selfsup.engine.trainer import pretrain
from selfsup.eval.knn import knn_classify
from selfsup.eval.linear import fit_logistic_lbfgs
from selfsup.eval.run import features


def calibrated_steps(cfg, budget_s: float, out: Path) -> int:
    """Steps that fit the budget: time a short run (its first step excluded) and scale, keeping 5% headroom."""
    probe = load_config(None, [], base=to_dict(cfg))
    probe.train.steps, probe.out, probe.train.progress = 12, str(out / "calibrate"), False
    res = pretrain(probe)
    shutil.rmtree(out / "calibrate", ignore_errors=True)
    steps_per_s = res.images_per_s / cfg.train.batch_size
    return max(10, int(0.95 * budget_s * steps_per_s))


def probes(cfg, backbone, data):
    xtr, ytr, xte, yte = features(cfg, backbone, data, progress=False)
    k = data.train.num_classes
    lin = fit_logistic_lbfgs(xtr, ytr, xte, yte, num_classes=k, l2_grid=cfg.eval.linear.l2_grid,
                             val_fraction=cfg.eval.linear.val_fraction, max_iter=cfg.eval.linear.max_iter,
                             seed=cfg.seed)
    knn = knn_classify(xtr, ytr, xte, yte, k=20, temperature=cfg.eval.knn.temperature, num_classes=k)
    return {"linear_top1": lin["top1"], "linear_top5": lin["top5"], "l2": lin["l2"], "knn20_top1": knn["top1"]}
