"""Fine-tuning a pretrained encoder with a new linear classifier: semi-supervised (1% / 10% of the labels) and plain.

Protocols (``eval.finetune``; presets in ``selfsup/recipes/eval/``):

RELICv2, App. D.2 (after Zhai et al. 2019, SimCLR, BYOL, SwAV)
    The encoder is initialised from the pretrained representation and a randomly initialised linear layer is put on its
    pooled features (``head: backbone``). Both train with cross-entropy, SGD with Nesterov momentum 0.9 and *separate
    learning rates* for the linear layer and the encoder (as SwAV's ``eval_semisup``), 20 epochs, the rates multiplied
    by 0.2 at epochs 12 and 16 (``schedule: step``). 1%: batch 2048, rates 10 (head) and 0.04 (encoder), no weight
    decay. 10%: batch 512, rates 0.3 and 0.004, weight decay 1e-5. Training images: random-resized crop + flip; test
    images: the probes' centre crop.

SSLight, App. B
    The classifier sits on the *second layer of the pretrained MLP head* (``head: projector``, as in DINO, SimCLRv2 and
    PAWS), SGD Nesterov 0.9, batch 1024, lr 0.03 x batch / 256 for all parameters, cosine decay to 1e-6; 60 epochs for
    1% and 30 for 10%.

Plain fine-tuning
    ``labels: 1.0``: the same loop on all training labels.

Choices where the papers leave room (each tested):
  * "The second layer of the MLP head" is read as the output of the head's second ``Linear`` together with the norm
    and activation that follow it when it is a hidden layer: for DINO's 3-layer head that is Linear-BN-GELU-Linear-
    BN-GELU (the 2nd hidden representation, SimCLRv2's "middle layer"); for a 2-layer projector (Linear-BN-ReLU-Linear)
    it is the projector's output. ``head_layers`` keeps another number of Linear layers. The kept layers are fine-tuned
    with the encoder's learning rate.
  * The papers' learning rates are used as given at their batch size (RELICv2 calls 10 / 0.04 "base" rates at batch
    2048; scaled by 2048/256 they would be 80 and 0.32, which diverges). The recipes store them as absolute rates.
  * Weight decay applies to every trained parameter (RELICv2 "uses a weight decay of 1e-5, but no other
    regularisation"); BatchNorm layers train in train mode, updating their running statistics.
  * The linear layer starts at weight ~ N(0, 0.01), bias 0 (as the linear probes); the step schedule counts whole epochs
    (torch's ``MultiStepLR`` stepped per epoch: epochs 0-11 at the initial rate, 12-15 x 0.2, 16-19 x 0.04).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, Optional, Sized, Union, cast

import torch
from torch import nn
from torch.utils.data import Dataset

from selfsup.config import FinetuneEvalConfig
from selfsup.engine.supervised import Batch, EpochStats, LoopSettings, train_supervised
from selfsup.errors import ConfigError, DataError, NonFiniteLossError
from selfsup.eval.features import autocast_for, channels_last, extract_features
from selfsup.eval.linear import augmented_batch, evaluate_linear_head, features_dim, shuffled_loader
from selfsup.metrics.accuracy import check_labels, mean_per_class_accuracy
from selfsup.schedules import step_decay

log = logging.getLogger("selfsup.eval")

Device = Union[str, torch.device]


def finetune_lr(step: int, steps_per_epoch: int, total_steps: int, peak: float, cfg: FinetuneEvalConfig) -> float:
    """The learning rate of optimiser step ``step`` (0-based) for a group whose initial rate is ``peak``.

    ``step``: ``peak * gamma ** #{m in milestones : epoch >= m}`` with ``epoch = step // steps_per_epoch``.
    ``cosine``: ``final + (peak - final) * (1 + cos(pi * step / total_steps)) / 2`` (``final = min(final_lr, peak)``).
    """
    if cfg.schedule == "step":
        return step_decay(peak, step // max(steps_per_epoch, 1), cfg.milestones, cfg.gamma)
    final = min(cfg.final_lr, peak)
    t = min(max(step, 0), total_steps) / max(total_steps, 1)
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * t))


def head_prefix(mlp: nn.Sequential, num_linear: int) -> nn.Sequential:
    """The first ``num_linear`` Linear layers of ``mlp`` with the modules that follow each one up to the next Linear
    (its norm and activation); the pretrained modules themselves, not copies."""
    linear_at = [i for i, m in enumerate(mlp) if isinstance(m, nn.Linear)]
    if num_linear > len(linear_at):
        raise ConfigError(f"eval.finetune.head_layers={num_linear}, but the pretrained head has only "
                          f"{len(linear_at)} Linear layers")
    end = linear_at[num_linear] if num_linear < len(linear_at) else len(mlp)
    return nn.Sequential(*list(mlp)[:end])


class Trunk(nn.Module):
    """The network under the classifier: the backbone's pooled features, then (optionally) the kept head layers."""

    def __init__(self, backbone: nn.Module, head: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        out = None
        if head is not None:
            linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
            out = linears[-1].out_features if linears else None
        self.num_features = out if out is not None else getattr(backbone, "num_features", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.backbone(x).flatten(1)
        return self.head(z) if self.head is not None else z


def finetune(trunk: nn.Module, train_ds: Dataset, test_ds: Dataset, *,
             train_transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
             test_transform: Callable[[torch.Tensor], torch.Tensor], num_classes: int, cfg: FinetuneEvalConfig,
             device: Device = "cpu", seed: int = 0, collate_fn: Optional[Callable] = None, progress: bool = True,
             amp: bool = False, num_workers: int = 0,
             log_fn: Optional[Callable[[Dict[str, float]], None]] = None) -> Dict[str, Any]:
    """Train ``trunk`` (on ``device`` already) and a new ``nn.Linear`` classifier on ``train_ds``; report on
    ``test_ds``.

    Two SGD parameter groups: the classifier at ``cfg.head_lr``, everything in ``trunk`` at ``cfg.encoder_lr``; both
    follow :func:`finetune_lr` per step. ``cfg.epochs`` epochs over ``train_ds`` (reshuffled each epoch by a generator
    seeded from ``seed``; the last, smaller batch kept), trained by :func:`selfsup.engine.supervised.train_supervised`.
    ``amp``: bf16 autocast on CUDA only.

    Returns ``{"top1", "top5", "mean_per_class", "train_loss", "train_top1" (last epoch), "epochs", "steps",
    "num_train"}``; raises
    :class:`NonFiniteLossError` when the loss diverges.
    """
    device = torch.device(device)
    n_train = len(cast(Sized, train_ds))  # map-style datasets have a length (Dataset does not declare it)
    if n_train == 0:
        raise DataError("fine-tuning needs at least one labelled training image")
    dim = features_dim(trunk, test_ds if len(cast(Sized, test_ds)) else train_ds, test_transform, device, collate_fn)
    classifier = nn.Linear(dim, num_classes)
    with torch.no_grad():
        classifier.weight.normal_(0.0, 0.01, generator=torch.Generator().manual_seed(int(seed)))
        classifier.bias.zero_()
    classifier = classifier.to(device)

    groups = [{"params": [p for p in classifier.parameters()], "lr": cfg.head_lr},
              {"params": [p for p in trunk.parameters() if p.requires_grad], "lr": cfg.encoder_lr}]
    opt = torch.optim.SGD(groups, lr=cfg.head_lr, momentum=cfg.momentum,
                          nesterov=bool(cfg.nesterov and cfg.momentum > 0), weight_decay=cfg.weight_decay)
    batch_size = min(cfg.batch_size, n_train)
    steps_per_epoch = math.ceil(n_train / batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    loader = shuffled_loader(train_ds, batch_size, int(seed) + 1, collate_fn, device, num_workers)
    aug_gen = torch.Generator().manual_seed(int(seed) + 2)

    def prepare(raw: Dict[str, torch.Tensor]) -> Optional[Batch]:
        xy = augmented_batch(raw, num_classes, device, train_transform, aug_gen)
        return None if xy is None else Batch(channels_last(xy[0]), xy[1])

    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast_for(device, amp):
            feats = trunk(x)
        return classifier(feats.float().flatten(1))

    def nonfinite(value: float, epoch: int) -> Exception:
        return NonFiniteLossError(f"the fine-tuning loss became non-finite in epoch {epoch + 1}; lower "
                                  f"eval.finetune.head_lr / encoder_lr (now {cfg.head_lr} / {cfg.encoder_lr})")

    def on_epoch(e: EpochStats) -> None:
        log.debug("fine-tune epoch %d/%d: loss %.4f, train top-1 %.2f%%", e.epoch + 1, cfg.epochs, e.loss, e.top1)

    on_step = None if log_fn is None else lambda s: log_fn({"step": s.step, "epoch": s.epoch, "lr_head": s.lrs[0],
                                                             "lr_encoder": s.lrs[1], "loss": s.loss.item()})
    settings = LoopSettings(epochs=cfg.epochs, accuracy=True, check_finite="epoch", nonfinite=nonfinite,
                            lr_schedule=lambda k, peak: finetune_lr(k, steps_per_epoch, total_steps, peak, cfg),
                            progress=progress, desc="fine-tune", examples_per_epoch=n_train)
    run = train_supervised(forward, opt, loader, settings, prepare=prepare, train=[trunk, classifier],
                           on_step=on_step, on_epoch=on_epoch)

    model = nn.Sequential(trunk, nn.Flatten(1), classifier)
    logits, yte = extract_features(model, test_ds, preprocess=test_transform, batch_size=max(batch_size, 256),
                                   device=device, collate_fn=collate_fn, progress=progress, desc="test",
                                   amp=amp, num_workers=num_workers)
    check_labels(yte, num_classes, "test labels")
    test = evaluate_linear_head(nn.Identity(), logits, yte, ks=(1, 5))
    last = run.last
    return {"top1": test["top1"], "top5": test["top5"],
            "mean_per_class": mean_per_class_accuracy(logits, yte, num_classes),
            "train_loss": last.loss if last else float("nan"), "train_top1": last.top1 if last else float("nan"),
            "epochs": cfg.epochs, "steps": run.steps, "num_train": n_train}


def pretrained_head(method: nn.Module) -> nn.Sequential:
    """The MLP head a method puts on the backbone: ``projector`` (SimCLR, MoCo-v2, SwAV, BYOL, RELIC, RELICv2) or
    DINO's ``head.mlp`` (before its L2 normalisation and prototype layer)."""
    for path in ("projector", "head.mlp"):
        obj: object = method
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.Sequential):
            return obj
    raise ConfigError(f"eval.finetune.head=projector: method {type(method).__name__} has no MLP head to keep")

