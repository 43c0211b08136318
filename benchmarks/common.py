"""Shared by the benchmark scripts: schedule calibration for a wall-clock budget, the frozen-feature probes, the
raw-pixel baseline and the supervised baseline."""

from __future__ import annotations

import argparse
import copy
import csv
import platform
import shutil
import time
from pathlib import Path
from typing import Dict, Sequence

import torch

from selfsup.config import load_config, to_dict
from selfsup.data.views import train_crop_flip_sampler
from selfsup.engine.seeds import generator_for
from selfsup.engine.supervised import Batch, LoopResult, LoopSettings, StepInfo, train_supervised
from selfsup.engine.trainer import pretrain
from selfsup.eval.linear import fit_logistic_lbfgs
from selfsup.eval.run import features, load_backbone
from selfsup.metrics import knn_classify, topk_accuracy
from selfsup.schedules import warmup_cosine

CALIBRATION_STEPS = 40
CALIBRATION_WARMUP = 10  # steps left out of the timing: allocator and oneDNN warm-up, loader start


def machine(cfg=None) -> str:
    """The machine line of a result: architecture and the threads the runs use (``train.threads`` when a recipe or
    override sets it, which ``pretrain`` applies only when a run starts; otherwise torch's current count)."""
    threads = (cfg.train.threads if cfg is not None else None) or torch.get_num_threads()
    return f"{platform.machine()}, {threads} threads"


def calibrated_steps(cfg, budget_s: float, out: Path) -> int:
    """Steps that fit the budget, keeping 5% headroom: time a short run and scale.

    The step time is read off the run's own per-step log (``train_log.csv``, wall time after each step) between step
    ``CALIBRATION_WARMUP`` and the last, so it holds everything a step of the real run costs (data, the online
    classifier, logging) but not the warm-up of the first steps; timing from the second step on, as before,
    under-filled a 5-minute budget by 16% (SimCLR ran 4.0 minutes). The run's tail (its final kNN evaluation when
    ``monitor.knn_every_steps`` is set, and the final checkpoint) is spread over the steps between two of them, so
    that the cosine schedule still ends inside the budget.
    """
    probe = load_config(None, [], base=to_dict(cfg))
    probe.train.steps, probe.out, probe.train.progress = CALIBRATION_STEPS, str(out / "calibrate"), False
    probe.train.snapshot_minutes, probe.train.max_time_s = [], None
    res = pretrain(probe)
    with open(out / "calibrate" / "train_log.csv") as f:
        times = [float(row["time_s"]) for row in csv.DictReader(f)]
    shutil.rmtree(out / "calibrate", ignore_errors=True)
    step_s = (times[-1] - times[CALIBRATION_WARMUP - 1]) / (len(times) - CALIBRATION_WARMUP)
    tail_s = max(0.0, res.elapsed_s - times[-1])  # final kNN evaluation and checkpoint
    every = cfg.monitor.knn_every_steps or cfg.train.ckpt_every_steps
    step_s += tail_s / max(1, every)
    return max(10, int(0.95 * budget_s / step_s))


def probes(cfg, backbone, data):
    """L-BFGS linear probe on all training images and kNN (k = 20), on frozen centre-crop features."""
    xtr, ytr, xte, yte = features(cfg, backbone, data, progress=False)
    return _probe_features(cfg, xtr, ytr, xte, yte, data.train.num_classes)


def raw_pixel_probes(cfg, data):
    """The same probes on raw pixels in [0, 1] (one channel when the three are copies of a gray image)."""
    xtr, xte = data.train.images.float().flatten(1) / 255, data.test.images.float().flatten(1) / 255
    if torch.equal(data.train.images[:64, 0], data.train.images[:64, 1]):  # gray replicated to RGB
        xtr, xte = data.train.images[:, 0].float().flatten(1) / 255, data.test.images[:, 0].float().flatten(1) / 255
    return _probe_features(cfg, xtr, data.train.labels, xte, data.test.labels, data.train.num_classes)


def _probe_features(cfg, xtr, ytr, xte, yte, num_classes):
    lin = fit_logistic_lbfgs(xtr, ytr, xte, yte, num_classes=num_classes, l2_grid=cfg.eval.linear.l2_grid,
                             val_fraction=cfg.eval.linear.val_fraction, max_iter=cfg.eval.linear.max_iter,
                             seed=cfg.seed)
    knn = knn_classify(xtr, ytr, xte, yte, k=20, temperature=cfg.eval.knn.temperature, num_classes=num_classes)
    return {"linear_top1": lin["top1"], "linear_top5": lin["top5"], "l2": lin["l2"], "knn20_top1": knn["top1"]}


def supervised(cfg, data, budget_s: float, snapshot_minutes: Sequence[float] = ()) -> dict:
    """The same backbone + a linear classifier trained with labels (cross-entropy, random-resized-crop + flip, SGD
    Nesterov momentum 0.9, lr 0.1 x B/256 with warm-up and cosine, weight decay 5e-4) for the same wall-clock budget,
    calibrated like the pretraining. ``snapshot_minutes``: copies of the backbone after that many minutes (returned in
    ``snapshots``, for learning curves); ``backbone`` is the final one. Trained by
    :func:`selfsup.engine.supervised.train_supervised`, one batch per step index (batch and crops drawn from
    generators seeded by the step)."""
    torch.manual_seed(cfg.seed)
    backbone = load_backbone(cfg, None).to(memory_format=torch.channels_last)
    head = torch.nn.Linear(backbone.num_features, data.train.num_classes)
    model = torch.nn.Sequential(backbone, head)
    params = [p for p in model.parameters()]
    aug = train_crop_flip_sampler(data.size, (0.25, 1.0), data.train.mean, data.train.std)
    images, labels = data.train.images, data.train.labels
    bs = cfg.train.batch_size
    peak = 0.1 * bs / 256

    def prepare(k: int) -> Batch:
        idx = torch.randint(0, len(images), (bs,), generator=generator_for(cfg.seed, "sup", k))
        x = aug.sample(images[idx], None, generator_for(cfg.seed, "supaug", k)).large[0]
        return Batch(x.contiguous(memory_format=torch.channels_last), labels[idx])

    def run(steps: int, total: int, on_step) -> LoopResult:
        settings = LoopSettings(epochs=1, lr_schedule=lambda k, lr: warmup_cosine(k, total, max(1, total // 20), lr))
        return train_supervised(model, opt, range(steps), settings, prepare=prepare, train=[model], on_step=on_step)

    # calibration: step 0 untimed (allocations, first-call overheads), then 8 timed steps of a 1000-step schedule
    opt = torch.optim.SGD(params, lr=peak, momentum=0.9, weight_decay=5e-4, nesterov=True)
    marks: Dict[int, float] = {}
    run(9, 1000, lambda s: marks.__setitem__(s.step, time.perf_counter()) if s.step in (1, 9) else None)
    rate = 8 / (marks[9] - marks[1])
    total = max(10, int(0.95 * budget_s * rate))
    torch.manual_seed(cfg.seed)  # restart cleanly after calibration
    backbone.load_state_dict(load_backbone(cfg, None).state_dict())
    head.reset_parameters()
    opt = torch.optim.SGD(params, lr=peak, momentum=0.9, weight_decay=5e-4, nesterov=True)
    budget = _Budget(budget_s, snapshot_minutes, backbone)
    result = run(total, total, budget.on_step)
    elapsed = time.perf_counter() - budget.t0
    model.eval()
    pre = data.preprocess(cfg)
    with torch.no_grad():
        logits = torch.cat([model(pre(data.test.images[i:i + 1000]).contiguous(memory_format=torch.channels_last))
                            for i in range(0, len(data.test), 1000)])
    acc = topk_accuracy(logits, data.test.labels, ks=(1, 5))
    return {"classifier_top1": acc["top1"], "classifier_top5": acc["top5"], "steps": result.steps,
            "elapsed_s": elapsed, "last_loss": budget.last, "backbone": backbone, "snapshots": budget.snapshots}


class _Budget:
    """The supervised baseline's step hook: the last loss, copies of the backbone at ``snapshot_minutes`` and the stop
    once ``budget_s`` seconds have passed since it was made."""

    def __init__(self, budget_s: float, snapshot_minutes: Sequence[float], backbone: torch.nn.Module) -> None:
        self.budget_s, self.pending, self.backbone = budget_s, sorted(snapshot_minutes), backbone
        self.snapshots: Dict[float, torch.nn.Module] = {}
        self.last = float("nan")
        self.t0 = time.perf_counter()

    def on_step(self, info: StepInfo) -> bool:
        self.last = info.loss.item()
        elapsed = time.perf_counter() - self.t0
        while self.pending and elapsed >= 60 * self.pending[0]:
            self.snapshots[self.pending.pop(0)] = copy.deepcopy(self.backbone)
        return elapsed > self.budget_s


def mean_offdiagonal(g: torch.Tensor) -> float:
    """Mean of a square matrix's off-diagonal entries (of a cosine Gram matrix: 1.0 = every row points one way)."""
    return g[~torch.eye(len(g), dtype=torch.bool, device=g.device)].mean().item()


def row_entropy(p: torch.Tensor) -> float:
    """Mean entropy (nats) of the rows of ``p``, each a distribution (ln K = uniform over K)."""
    return float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())


def short_run(doc: str, method: str, default_steps: int, default_out: str):
    """The command line of the collapse diagnostics (``diagnostics/dino_collapse.py``,
    ``diagnostics/swav_collapse.py``): ``RECIPE --steps N [--out DIR] [key=value ...]`` -> the config of a short run of
    ``method`` without progress bar or kNN monitor."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("recipe")
    ap.add_argument("--steps", type=int, default=default_steps)
    ap.add_argument("--out", default=default_out)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()
    cfg = load_config(args.recipe, [f"train.steps={args.steps}", f"out={args.out}", "train.progress=false",
                                    "monitor.knn_every_steps=0", *args.overrides])
    if cfg.method.name != method:
        raise SystemExit(f"{args.recipe} is not a {method} recipe (method.name={cfg.method.name})")
    return cfg
