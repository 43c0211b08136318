"""Training one saliency network (DeepUSPS's refinement rounds and fusion, RELICv2 Appendix B.2.1).

:func:`train_saliency_net` trains a fresh :class:`~selfsup.saliency.network.SaliencyNet` with the one supervised loop
(:func:`selfsup.engine.supervised.train_supervised`) on the soft-thresholded F-beta loss; in a refinement round its
hooks (:class:`_Refinement`) fold each epoch's training predictions, smoothed by :func:`guided_filter`, into the moving
average that becomes the next round's targets (:mod:`selfsup.saliency.fit` says how the rounds chain).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.config import Config
from selfsup.data.augment import normalize
from selfsup.engine.devices import device_for
from selfsup.engine.supervised import Batch, EpochStats, LoopSettings, StepInfo, train_supervised
from selfsup.errors import ConfigError
from selfsup.losses.fbeta import fbeta_loss
from selfsup.saliency.network import SaliencyNet, build_saliency_net

__all__ = ["guided_filter", "epoch_batches", "train_saliency_net"]


def guided_filter(p: Tensor, guide: Tensor, radius: int, eps: float) -> Tensor:
    """He et al.'s guided filter of maps ``p (B, H, W)`` by gray images ``guide (B, H, W)``: edge-aware smoothing that
    follows the image's edges (box filters of side ``2 radius + 1``, regulariser ``eps``)."""
    k = 2 * radius + 1

    def box(x: Tensor) -> Tensor:
        return F.avg_pool2d(x.unsqueeze(1), k, stride=1, padding=radius, count_include_pad=False).squeeze(1)

    mean_i, mean_p = box(guide), box(p)
    cov_ip = box(guide * p) - mean_i * mean_p
    var_i = box(guide * guide) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def _gray(images: Tensor) -> Tensor:
    x = images.float() / 255.0
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def epoch_batches(n: int, batch_size: int, g: torch.Generator) -> List[Tensor]:
    """A seeded permutation split into ``n // batch_size`` near-equal batches (none smaller than ``batch_size``, so
    BatchNorm never sees a batch of one)."""
    perm = torch.randperm(n, generator=g)
    return list(torch.tensor_split(perm, max(1, n // batch_size)))


class _Refinement:
    """The step and epoch hooks of a refinement round: the mean loss per epoch and, with ``track_mva``, the training
    predictions (flips undone; every entry is rewritten each epoch), smoothed and folded into the moving average after
    every epoch."""

    def __init__(self, s, gray: Tensor, track_mva: bool) -> None:
        self.s, self.gray, self.total = s, gray, 0.0
        self.losses: List[float] = []
        self.mva = torch.zeros(gray.shape) if track_mva else None
        self.preds = torch.zeros(gray.shape) if track_mva else None

    def on_step(self, info: StepInfo) -> None:
        self.total += float(info.loss)
        if self.preds is not None:
            idx, flip = info.batch.meta
            pd = info.outputs.float().cpu()
            self.preds[idx] = torch.where(flip, pd.flip(-1), pd)

    def on_epoch(self, stats: EpochStats) -> None:
        self.losses.append(self.total / stats.epoch_steps)
        self.total = 0.0
        if self.mva is not None and self.preds is not None:
            s = self.s
            smooth = (guided_filter(self.preds, self.gray, s.smooth_radius, s.smooth_eps).clamp_(0, 1)
                      if s.smoothing == "guided" else self.preds)
            self.mva.mul_(s.mva_momentum).add_(smooth, alpha=1 - s.mva_momentum)


def train_saliency_net(cfg: Config, images: Tensor, targets: Sequence[Tensor], thresholds: Sequence[float],
                       beta2: float, epochs: int, lr: float, seed: int, mean, std, track_mva: bool,
                       desc: str = "saliency", progress: bool = True
                       ) -> Tuple[SaliencyNet, Optional[Tensor], List[float]]:
    """Train a fresh network on uint8 ``images (N, 3, S, S)`` against ``targets`` (float ``(N, S, S)`` in [0, 1], one
    per label set, each binarised at its threshold; the loss is averaged over the sets). Returns the network, the
    bias-corrected moving average of its smoothed training predictions (``track_mva``) and the mean loss per epoch.

    :func:`selfsup.engine.supervised.train_supervised` with Adam and poly decay per epoch (``lr * (1 - epoch /
    epochs) ** saliency.poly_power``); each epoch draws a permutation (:func:`epoch_batches`), then per batch a random
    horizontal flip of each image and its targets, all from one generator seeded with ``seed``. A non-finite loss
    stops the fit at once."""
    s = cfg.saliency
    device = device_for(cfg)
    n, size = images.shape[0], images.shape[-1]
    net = build_saliency_net(cfg, size, seed).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=s.weight_decay)
    g = torch.Generator().manual_seed(seed)
    hooks = _Refinement(s, _gray(images), track_mva)

    def prepare(idx: Tensor) -> Batch:
        flip = (torch.rand(len(idx), generator=g) < 0.5).view(-1, 1, 1)
        x = images[idx].float().div_(255.0)
        x = torch.where(flip.unsqueeze(1), x.flip(-1), x).to(device)
        flipped = [torch.where(flip, t[idx].flip(-1), t[idx]).to(device) for t in targets]
        return Batch(normalize(x, mean, std), flipped, (idx, flip))

    def loss_fn(p: Tensor, flipped: List[Tensor]) -> Tensor:
        # a tensor: with no targets the division by zero raises first
        return cast(Tensor, sum(fbeta_loss(p, t, thr, beta2) for t, thr in zip(flipped, thresholds)) / len(targets))

    def nonfinite(value: float, epoch: int) -> Exception:
        return ConfigError(f"{desc}: the saliency loss is {value} at epoch {epoch}; lower the learning "
                           "rate (saliency.round_lr / saliency.fuse_lr)")

    settings = LoopSettings(epochs=epochs, schedule_unit="epoch", check_finite="step", nonfinite=nonfinite,
                            lr_schedule=lambda epoch, peak: peak * (1 - epoch / epochs) ** s.poly_power,
                            progress=progress, desc=desc, examples_per_epoch=n)
    train_supervised(lambda x: torch.sigmoid(net(x)), opt, lambda: epoch_batches(n, s.batch_size, g), settings,
                     loss_fn=loss_fn, prepare=prepare, train=[net], on_step=hooks.on_step, on_epoch=hooks.on_epoch)
    mva = hooks.mva
    if mva is not None:
        mva /= 1 - s.mva_momentum ** epochs
    net.eval()
    return net, mva, hooks.losses
