"""Linear probes of a frozen backbone: the L-BFGS protocol on cached features and the SGD protocol on augmented images.

:func:`fit_logistic_lbfgs`
    Revisiting SSL (Kolesnikov, Zhai and Beyer 2019), as decided in method-details A6 and B 2.4: multinomial logistic
    regression on precomputed features (centre crop, no augmentation), fitted with full-batch L-BFGS; the L2 strength is
    chosen on a log grid against a held-out split of train, then the model is refitted on all of train with it and
    reported on test. The paper gives neither the grid nor the iteration cap; the defaults
    (``eval.linear.l2_grid`` = 1e-6 ... 1e-1, 500 iterations) are ours.

:func:`linear_probe_sgd`
    RELICv2 Appendix D.1 and its official evaluation code (``google-deepmind/relicv2``, method-details B 3.1): a linear
    layer on the frozen encoder, whose parameters and batch statistics are not updated; SGD with Nesterov momentum 0.9,
    no weight decay, lr = base_lr * batch / 256 (0.3 * 1024 / 256 = 1.2 in the paper) with a cosine decay to 0 and no
    warm-up, 100 epochs; random-resized-crop + flip for training, resize + centre crop for testing.

Both report top-1/top-5 accuracy in percent through :func:`evaluate_linear_head`.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Sized, Tuple, Union, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from selfsup.config import LinearEvalConfig
from selfsup.engine.optim import LARS
from selfsup.engine.supervised import Batch, EpochStats, LoopSettings, train_supervised
from selfsup.errors import DataError, NonFiniteLossError
from selfsup.eval.features import (
    autocast_for,
    channels_last,
    default_collate,
    eval_mode,
    extract_features,
    make_loader,
    to_device_batch,
)
from selfsup.metrics.accuracy import check_labels, mean_per_class_accuracy, topk_accuracy, topk_correct

log = logging.getLogger("selfsup.eval")

Device = Union[str, torch.device]


# --------------------------------------------------------------------------------------------------------------------
# Shared
# --------------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate_linear_head(head: Callable[[torch.Tensor], torch.Tensor], features: torch.Tensor, labels: torch.Tensor,
                         *, ks: Sequence[int] = (1, 5), batch_size: int = 16384,
                         device: Optional[Device] = None) -> Dict[str, float]:
    """Top-k accuracy (percent) of a linear classifier ``head`` (an ``nn.Linear`` or any callable ``(B, F) -> (B, C)``)
    on ``features``, evaluated in batches on ``device`` (default: that of ``features``)."""
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"{features.shape[0]} features but {labels.shape[0]} labels")
    device = torch.device(device) if device is not None else features.device
    if features.shape[0] == 0:
        return {f"top{k}": float("nan") for k in ks}
    logits = torch.cat([head(features[i:i + batch_size].to(device)).float()
                        for i in range(0, features.shape[0], batch_size)])
    return topk_accuracy(logits, labels.to(device), ks=ks)


# --------------------------------------------------------------------------------------------------------------------
# L-BFGS on cached features (Revisiting SSL; method-details A6, B 2.4)
# --------------------------------------------------------------------------------------------------------------------

def feature_stats(x: torch.Tensor, eps: float = 1e-6) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and (population) standard deviation of ``x``; a constant feature gets std 1 so that
    standardising leaves it at 0 instead of dividing by zero."""
    mean = x.mean(0)
    std = x.std(0, unbiased=False) if x.shape[0] > 1 else torch.ones_like(mean)
    std = torch.where(std > eps, std, torch.ones_like(std))
    return mean, std


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(fit, val)``: for every class, a seeded random ``round(val_fraction * n_c)`` of its examples go to val,
    keeping at least one in fit (a class with a single example stays in fit). Both are sorted."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    gen = torch.Generator().manual_seed(int(seed))
    labels = labels.cpu()
    fit: List[torch.Tensor] = []
    val: List[torch.Tensor] = []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n_val = min(int(round(val_fraction * idx.numel())), idx.numel() - 1)
        val.append(idx[:n_val])
        fit.append(idx[n_val:])
    empty = torch.empty(0, dtype=torch.long)
    return (torch.cat(fit).sort().values if fit else empty), (torch.cat(val).sort().values if val else empty)


def logistic_objective(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                       l2: float) -> torch.Tensor:
    """The penalised multinomial logistic loss: mean cross-entropy of ``x @ W.T + b`` + ``l2 / 2 * ||W||^2`` (the bias
    is not penalised)."""
    return F.cross_entropy(torch.addmm(bias, x, weight.T), y) + 0.5 * l2 * weight.pow(2).sum()


def fit_logistic(x: torch.Tensor, y: torch.Tensor, *, num_classes: int, l2: float, max_iter: int = 500,
                 init: Optional[Tuple[torch.Tensor, torch.Tensor]] = None, history_size: int = 20,
                 tolerance_grad: Optional[float] = None, tolerance_change: Optional[float] = None
                 ) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Minimise :func:`logistic_objective` over ``(W (C, F), b (C,))`` with full-batch ``torch.optim.LBFGS`` (strong
    Wolfe line search) for at most ``max_iter`` iterations, starting from zeros or from ``init``.

    Returns ``(W, b, iterations)`` (detached, in the dtype and on the device of ``x``). The loop stops earlier when the
    largest gradient entry is below ``tolerance_grad`` or the loss/step changes less than ``tolerance_change``
    (defaults: 1e-7 and 1e-10 in float32, where the latter means "the loss no longer changes"; 1e-10 and 1e-15 in
    float64).
    """
    wide = x.dtype == torch.float64
    if tolerance_grad is None:
        tolerance_grad = 1e-10 if wide else 1e-7
    if tolerance_change is None:
        tolerance_change = 1e-15 if wide else 1e-10
    if init is None:
        weight = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, device=x.device)
        bias = torch.zeros(num_classes, dtype=x.dtype, device=x.device)
    else:
        weight, bias = (t.detach().to(device=x.device, dtype=x.dtype).clone() for t in init)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=history_size,
                            tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=False)
        loss = logistic_objective(x, y, weight, bias, l2)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    iterations = int(opt.state[weight].get("n_iter", 0))
    return weight.detach(), bias.detach(), iterations


def fit_logistic_lbfgs(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                       num_classes: int, l2_grid: Sequence[float], val_fraction: float = 0.1, max_iter: int = 500,
                       seed: int = 0, device: Device = "cpu", dtype: torch.dtype = torch.float32,
                       return_model: bool = False, metric: str = "top1") -> Dict[str, Any]:
    """The L-BFGS linear evaluation of Revisiting SSL (method-details A6 and B 2.4) on cached features.

    1. **Standardisation** (ours; the paper does not say): every feature is centred and scaled by the mean and standard
       deviation of the *train* features (all of train, labels unused); test features use the same train statistics.
       This makes one L2 grid fit backbones whose feature scales differ by orders of magnitude.
    2. A stratified, seeded ``val_fraction`` of train is held out (the paper holds out about 50k ImageNet train images).
    3. For each L2 strength in ``l2_grid``, multinomial logistic regression is fitted on the rest with full-batch L-BFGS
       (:func:`fit_logistic`; loss = mean CE + l2 / 2 * ||W||^2, bias unpenalised) and its val top-1 recorded. The
       grid is walked from the strongest to the weakest penalty, each fit warm-started from the previous solution
       (a regularisation path; converged solutions do not depend on it).
    4. The strength with the best val top-1 wins (ties go to the larger L2, the simpler model); the model is refitted on
       all of train with it, warm-started from its val fit, and top-1/top-5 are reported on test.

    Runs on ``device`` (CUDA tensors work the same) in ``dtype`` (float32; float64 for tighter optima).
    ``metric="mean_per_class"`` chooses the strength by val mean per-class accuracy instead of top-1 (transfer to
    unbalanced datasets); ``mean_per_class`` on test is reported either way.

    Returns ``{"top1", "top5", "l2", "val_top1": {l2: acc}, "train_top1", "iterations": {l2: n}, "refit_iterations",
    "num_fit", "num_val"}``; with ``return_model`` also ``weight`` ``(C, F)`` and ``bias`` ``(C,)`` acting on
    standardised features, and the train ``mean`` and ``std`` (logits = ((x - mean) / std) @ weight.T + bias).
    """
    if metric not in ("top1", "mean_per_class"):
        raise ValueError(f"metric must be top1 or mean_per_class, got {metric!r}")
    if not l2_grid:
        raise ValueError("l2_grid needs at least one value")
    if any(float(v) < 0 for v in l2_grid):
        raise ValueError(f"l2_grid values must be >= 0, got {list(l2_grid)}")
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"features must be (N, F) with the same F, got {tuple(train_x.shape)} and "
                         f"{tuple(test_x.shape)}")
    if train_x.shape[0] != train_y.shape[0] or test_x.shape[0] != test_y.shape[0]:
        raise ValueError("features and labels differ in length")
    if train_x.shape[0] == 0:
        raise DataError("the linear probe needs at least one training example")
    check_labels(train_y, num_classes, "train labels")
    check_labels(test_y, num_classes, "test labels")
    device = torch.device(device)

    xtr = train_x.to(device=device, dtype=dtype)
    ytr = train_y.to(device=device, dtype=torch.long)
    mean, std = feature_stats(xtr)
    xtr = (xtr - mean) / std
    xte = (test_x.to(device=device, dtype=dtype) - mean) / std
    yte = test_y.to(device=device, dtype=torch.long)

    grid = sorted({float(v) for v in l2_grid}, reverse=True)  # strongest penalty first
    fit_idx, val_idx = stratified_split(train_y, val_fraction, seed)
    val_top1: Dict[float, float] = {}
    iterations: Dict[float, int] = {}
    solutions: Dict[float, Tuple[torch.Tensor, torch.Tensor]] = {}
    best_l2 = grid[0]
    if val_idx.numel():
        xf, yf = xtr[fit_idx.to(device)], ytr[fit_idx.to(device)]
        xv, yv = xtr[val_idx.to(device)], ytr[val_idx.to(device)]
        best_correct: float = -1
        init = None
        for l2 in grid:
            w, b, n_iter = fit_logistic(xf, yf, num_classes=num_classes, l2=l2, max_iter=max_iter, init=init)
            val_logits = torch.addmm(b, xv, w.T)
            correct: float = int(topk_correct(val_logits, yv, 1).sum())
            val_top1[l2] = 100.0 * correct / yv.numel()
            if metric == "mean_per_class":  # the selection score; ties still go to the larger l2
                correct = mean_per_class_accuracy(val_logits, yv, num_classes)
            iterations[l2] = n_iter
            solutions[l2] = (w, b)
            init = (w, b)
            log.info("L-BFGS probe: l2=%g val top-1 %.2f%% (%d iterations)", l2, val_top1[l2], n_iter)
            if correct > best_correct:  # strict: on ties the earlier, larger l2 stays
                best_correct, best_l2 = correct, l2
    elif len(grid) > 1:
        raise DataError(f"too few training examples ({train_x.shape[0]}) to hold out a validation split for "
                        "choosing the L2 strength")

    w, b, refit_iter = fit_logistic(xtr, ytr, num_classes=num_classes, l2=best_l2, max_iter=max_iter,
                                    init=solutions.get(best_l2))

    def head(z: torch.Tensor) -> torch.Tensor:
        return torch.addmm(b, z, w.T)

    test = evaluate_linear_head(head, xte, yte, ks=(1, 5))
    test["mean_per_class"] = mean_per_class_accuracy(head(xte), yte, num_classes) if yte.numel() else float("nan")
    train = evaluate_linear_head(head, xtr, ytr, ks=(1,))
    log.info("L-BFGS probe: l2=%g test top-1 %.2f%%, train top-1 %.2f%%", best_l2, test["top1"], train["top1"])
    out: Dict[str, Any] = {"top1": test["top1"], "top5": test["top5"], "mean_per_class": test["mean_per_class"],
                              "l2": best_l2, "val_top1": val_top1,
                              "train_top1": train["top1"], "iterations": iterations, "refit_iterations": refit_iter,
                              "num_fit": int(fit_idx.numel()), "num_val": int(val_idx.numel())}
    if return_model:
        out.update(weight=w, bias=b, mean=mean, std=std)
    return out


# --------------------------------------------------------------------------------------------------------------------
# SGD on augmented images (RELICv2 App. D.1; method-details B 3.1)
# --------------------------------------------------------------------------------------------------------------------

def cosine_lr(step: int, total_steps: int, peak_lr: float, final_lr: float = 0.0) -> float:
    """``final + (peak - final) (1 + cos(pi * step / total_steps)) / 2``: exactly the peak at step 0 (and before),
    ``final_lr`` after the last step, no warm-up."""
    if total_steps <= 0 or step <= 0:
        return peak_lr
    final = min(final_lr, peak_lr)
    t = min(step, total_steps) / total_steps
    return final + (peak_lr - final) * 0.5 * (1.0 + math.cos(math.pi * t))


@torch.no_grad()
def features_dim(backbone: nn.Module, dataset: Dataset, transform: Callable[[torch.Tensor], torch.Tensor],
                 device: Device = "cpu", collate_fn: Optional[Callable] = None) -> int:
    """``backbone.num_features`` when the backbone declares it, else the width of its output on two images of
    ``dataset`` (forward in eval mode, modes restored)."""
    n = getattr(backbone, "num_features", None)
    if isinstance(n, int) and n > 0:
        return n
    if len(cast(Sized, dataset)) == 0:  # map-style datasets have a length (Dataset does not declare it)
        raise DataError("cannot infer the feature width of the backbone from an empty dataset")
    batch = (collate_fn or default_collate)([dataset[i] for i in range(min(2, len(cast(Sized, dataset))))])
    with eval_mode(backbone):
        out = backbone(channels_last(transform(to_device_batch(batch["image"], device))))
    return int(out.flatten(1).shape[1])


def shuffled_loader(dataset: Dataset, batch_size: int, seed: int, collate_fn: Optional[Callable], device: Device,
                    num_workers: int = 0) -> DataLoader:
    """The training loader of the SGD probe and of fine-tuning: ``dataset`` reshuffled every epoch by a generator
    seeded with ``seed``, in batches of ``batch_size``, the last, smaller batch kept."""
    sampler = BatchSampler(RandomSampler(cast(Sized, dataset), generator=torch.Generator().manual_seed(int(seed))),
                           batch_size, drop_last=False)
    return make_loader(dataset, batch_size, collate_fn, device, num_workers, batch_sampler=sampler)


def augmented_batch(raw: Dict[str, torch.Tensor], num_classes: int, device: torch.device,
                    transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
                    generator: torch.Generator) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """``(transform(images on device, generator), labels on device)`` of a loader batch; None when it is empty. The
    labels are checked on the CPU copy (no device sync)."""
    images = raw["image"]
    if images.shape[0] == 0:
        return None
    y = torch.as_tensor(raw["label"]).long()
    check_labels(y, num_classes, "train labels")
    y = y.to(device, non_blocking=True)
    return transform(to_device_batch(images, device), generator), y


def linear_probe_sgd(backbone: nn.Module, train_ds: Dataset, test_ds: Dataset, *,
                     train_transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
                     test_transform: Callable[[torch.Tensor], torch.Tensor], num_classes: int,
                     cfg: LinearEvalConfig, device: Device = "cpu", seed: int = 0,
                     collate_fn: Optional[Callable] = None, progress: bool = True, amp: bool = False,
                     num_workers: int = 0, log_fn: Optional[Callable[[Dict[str, float]], None]] = None
                     ) -> Dict[str, Any]:
    """The SGD linear evaluation of RELICv2 (App. D.1) and of its official code (method-details B 3.1), trained by
    :func:`selfsup.engine.supervised.train_supervised`.

    - The backbone is frozen: kept in eval mode (BatchNorm uses and keeps its running statistics; the previous mode of
      every submodule is restored at the end) and run under ``no_grad`` at every step, so neither its parameters nor
      its buffers change. It must already be on ``device``.
    - A new ``nn.Linear(num_features, num_classes)``, weight ~ N(0, 0.01) from a generator seeded with ``seed``, bias 0.
      ``num_features`` is ``backbone.num_features`` if present, else inferred from a forward pass.
    - SGD with momentum ``cfg.momentum``, Nesterov when ``cfg.nesterov`` (the paper's setting), weight decay
      ``cfg.weight_decay`` (0 in the paper), lr = ``cfg.base_lr * cfg.batch_size / 256`` decayed per step by a cosine to
      ``cfg.final_lr`` (0; :func:`cosine_lr`), no warm-up; ``cfg.optimizer=lars`` uses LARS instead (SSLight's CNN
      probe, method-details B 1.5: trust coefficient ``cfg.trust_coefficient``, the bias excluded from the trust
      ratio and the decay, no Nesterov); ``cfg.epochs`` epochs, the train set reshuffled every epoch by a seeded
      generator; the last, smaller batch of an epoch is kept.
    - Train images go through ``train_transform(uint8 batch on device, generator)`` (random-resized-crop with
      ``cfg.crop_scale`` + flip + normalisation, the caller's; its random numbers come from a CPU generator seeded from
      ``seed``), test images through ``test_transform(uint8 batch)`` (resize + centre crop + normalisation).
    - ``amp``: bf16 autocast for the backbone forward on CUDA only; the head always trains in float32.

    ``progress`` shows a tqdm bar (images/s, ETA); ``log_fn``, if given, receives ``{"step", "epoch", "lr", "loss"}``
    after every optimiser step (``lr`` is the rate that step used).

    Returns ``{"top1", "top5", "train_loss" (mean over the last epoch), "train_top1" (last epoch, augmented),
    "epochs", "steps", "lr" (peak), "final_lr"}``. Raises :class:`NonFiniteLossError` if the loss diverges.
    """
    device = torch.device(device)
    n_train = len(cast(Sized, train_ds))  # map-style datasets have a length (Dataset does not declare it)
    if n_train == 0:
        raise DataError("the linear probe needs at least one training image")
    dim = features_dim(backbone, test_ds if len(cast(Sized, test_ds)) else train_ds, test_transform, device, collate_fn)

    head = nn.Linear(dim, num_classes)
    init_gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01, generator=init_gen)
        head.bias.zero_()
    head = head.to(device).train()

    peak_lr = cfg.base_lr * cfg.batch_size / 256.0
    if cfg.optimizer == "lars":  # SSLight's CNN probe: the trust ratio and decay skip the bias (1-D)
        opt: torch.optim.Optimizer = LARS(
            [{"params": [head.weight]},
             {"params": [head.bias], "lars_exclude": True, "weight_decay": 0.0}],
            lr=peak_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
            trust_coefficient=cfg.trust_coefficient)
    else:
        opt = torch.optim.SGD(head.parameters(), lr=peak_lr, momentum=cfg.momentum,
                              nesterov=bool(cfg.nesterov and cfg.momentum > 0), weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * math.ceil(n_train / cfg.batch_size)
    loader = shuffled_loader(train_ds, cfg.batch_size, int(seed) + 1, collate_fn, device, num_workers)
    aug_gen = torch.Generator().manual_seed(int(seed) + 2)

    def prepare(raw: Dict[str, torch.Tensor]) -> Optional[Batch]:  # the frozen backbone's features of the batch
        xy = augmented_batch(raw, num_classes, device, train_transform, aug_gen)
        if xy is None:
            return None
        with autocast_for(device, amp):
            feats = backbone(channels_last(xy[0]))
        return Batch(feats.float().flatten(1), xy[1])

    def nonfinite(value: float, epoch: int) -> Exception:
        return NonFiniteLossError(f"the linear probe's loss became non-finite in epoch {epoch + 1}; "
                                  f"lower eval.linear.base_lr (now {cfg.base_lr})")

    def on_epoch(e: EpochStats) -> None:
        log.info("linear probe epoch %d/%d: loss %.4f, train top-1 %.2f%%", e.epoch + 1, cfg.epochs, e.loss, e.top1)

    on_step = None if log_fn is None else lambda s: log_fn({"step": s.step, "epoch": s.epoch, "lr": s.lr,
                                                             "loss": s.loss.item()})
    settings = LoopSettings(epochs=cfg.epochs,
                            lr_schedule=lambda k, peak: cosine_lr(k, total_steps, peak, cfg.final_lr), accuracy=True,
                            check_finite="epoch", nonfinite=nonfinite, progress=progress, desc="linear probe",
                            examples_per_epoch=n_train)
    run = train_supervised(head, opt, loader, settings, prepare=prepare, train=[head], frozen=[backbone],
                           on_step=on_step, on_epoch=on_epoch)

    head.eval()
    xte, yte = extract_features(backbone, test_ds, preprocess=test_transform, batch_size=cfg.batch_size,
                                device=device, collate_fn=collate_fn, progress=progress, desc="test features",
                                amp=amp, num_workers=num_workers)
    check_labels(yte, num_classes, "test labels")
    test = evaluate_linear_head(head, xte, yte, ks=(1, 5), device=device)
    last = run.last
    return {"top1": test["top1"], "top5": test["top5"], "train_loss": last.loss if last else float("nan"),
            "train_top1": last.top1 if last else float("nan"), "epochs": cfg.epochs, "steps": run.steps,
            "lr": peak_lr, "final_lr": cosine_lr(run.steps, total_steps, peak_lr, cfg.final_lr)}
