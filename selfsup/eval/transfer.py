"""Transfer of a pretrained encoder to another labelled dataset (RELICv2 App. D.3, after SimCLR and BYOL).

The target is the dataset of the config's ``data.*`` (override it: ``selfsup eval transfer -c RUN
data.dataset=fashion_mnist``), so any two datasets selfsup reads make a transfer pair. The encoder is the run's; the
target's own normalisation statistics are used.

``eval.transfer.mode=linear``
    Frozen features (centre crop), multinomial logistic regression with L-BFGS; the L2 strength is swept over
    ``eval.linear.l2_grid`` on a held-out, class-stratified ``val_fraction`` of the target's train split, the best is
    refitted on all of train (train + val) and reported on test (SimCLR/BYOL's linear transfer protocol).

``eval.transfer.mode=finetune``
    Every (learning rate, weight decay, epochs) of ``eval.transfer.lrs x weight_decays x epochs`` fine-tunes a fresh
    copy of the pretrained encoder with a new linear classifier (:func:`selfsup.eval.finetune.finetune`) on train
    minus val and is scored on val; the best setting is refitted on all of train and reported on test.

Choices where the papers leave room: one learning rate for encoder and classifier, a cosine decay to 0 without
warm-up, SGD with Nesterov momentum 0.9 (RELICv2 sweeps Nesterov, momentum and warm-up too; the grid is ours and any
of its axes can be widened from the command line). ``eval.transfer.metric`` is ``top1`` or ``mean_per_class`` (the
metric of Pets, Flowers, Caltech-101 and Aircraft); the selection on val uses the same metric as the report.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import Subset

from selfsup.config import Config, FinetuneEvalConfig
from selfsup.data.base import collate
from selfsup.data.views import train_crop_flip_sampler
from selfsup.eval.finetune import Trunk, finetune
from selfsup.eval.linear import fit_logistic_lbfgs, stratified_split

log = logging.getLogger("selfsup.eval")


def transfer_grid(cfg: Config) -> List[Tuple[float, float, int]]:
    """The fine-tuning settings tried: every (lr, weight decay, epochs), in that nesting order."""
    t = cfg.eval.transfer
    return list(itertools.product(t.lrs, t.weight_decays, t.epochs))


def finetune_settings(cfg: Config, lr: float, weight_decay: float, epochs: int) -> FinetuneEvalConfig:
    t = cfg.eval.transfer
    return FinetuneEvalConfig(labels=1.0, head="backbone", epochs=epochs, batch_size=t.batch_size, head_lr=lr,
                              encoder_lr=lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=weight_decay,
                              schedule="cosine", final_lr=0.0, crop_scale=list(t.crop_scale))


def run_transfer(cfg: Config, checkpoint: Optional[str], progress: bool = True, data=None,
                 feats=None) -> Dict[str, Any]:
    """Linear or fine-tune transfer of ``checkpoint``'s encoder (random init when None) to ``cfg.data``."""
    from selfsup.engine.devices import device_for
    from selfsup.eval.run import check_probe_labels, features, load_backbone, probe_data

    t = cfg.eval.transfer
    data = data or probe_data(cfg)
    check_probe_labels(cfg, data.train, data.test)  # a one-class target would score 100% (also for given data)
    num_classes = data.train.num_classes
    if t.mode == "linear":
        backbone = load_backbone(cfg, checkpoint)
        xtr, ytr, xte, yte = feats if feats is not None else features(cfg, backbone, data, progress)
        res = fit_logistic_lbfgs(xtr, ytr, xte, yte, num_classes=num_classes, l2_grid=cfg.eval.linear.l2_grid,
                                 val_fraction=t.val_fraction, max_iter=cfg.eval.linear.max_iter, seed=cfg.seed,
                                 device=device_for(cfg), metric=t.metric)
        return {"mode": "linear", "metric": t.metric, "score": res[t.metric], "top1": res["top1"],
                "top5": res["top5"], "mean_per_class": res["mean_per_class"], "chosen": {"l2": res["l2"]},
                "val": {f"l2={k:g}": v for k, v in res["val_top1"].items()}, "dataset": cfg.data.dataset}

    dev = device_for(cfg)
    crop = train_crop_flip_sampler(data.size, tuple(t.crop_scale), data.train.mean, data.train.std)

    def train_transform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return crop.sample(images, None, generator).large[0]

    def fresh() -> nn.Module:
        return Trunk(load_backbone(cfg, checkpoint)).to(dev)

    def fit(settings: FinetuneEvalConfig, train_ds, eval_ds) -> Dict[str, Any]:
        return finetune(fresh(), train_ds, eval_ds, train_transform=train_transform,
                        test_transform=data.preprocess(cfg), num_classes=num_classes, cfg=settings, device=dev,
                        seed=cfg.seed, collate_fn=collate, progress=progress)

    fit_idx, val_idx = stratified_split(data.train.labels, t.val_fraction, cfg.seed)
    fit_ds, val_ds = Subset(data.train, fit_idx.tolist()), Subset(data.train, val_idx.tolist())
    val_scores: Dict[str, float] = {}
    best: Optional[Tuple[float, Tuple[float, float, int]]] = None
    for lr, wd, epochs in transfer_grid(cfg):
        score = float(fit(finetune_settings(cfg, lr, wd, epochs), fit_ds, val_ds)[t.metric])
        val_scores[f"lr={lr:g},wd={wd:g},epochs={epochs}"] = score
        log.info("transfer fine-tune lr=%g wd=%g epochs=%d: val %s %.2f%%", lr, wd, epochs, t.metric, score)
        if best is None or score > best[0]:  # strict: ties keep the earlier (smaller lr, weaker decay) setting
            best = (score, (lr, wd, epochs))
    assert best is not None
    lr, wd, epochs = best[1]
    res = fit(finetune_settings(cfg, lr, wd, epochs), data.train, data.test)
    return {"mode": "finetune", "metric": t.metric, "score": res[t.metric], "top1": res["top1"], "top5": res["top5"],
            "mean_per_class": res["mean_per_class"], "chosen": {"lr": lr, "weight_decay": wd, "epochs": epochs},
            "val": val_scores, "dataset": cfg.data.dataset}

