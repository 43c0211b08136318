"""Quality monitored during pretraining: an online linear classifier and a periodic kNN probe (``monitor.*``).

A user of a one-hour run should see *while it runs* whether the representation learns, not only after a separate probe.
Two monitors, both read the online backbone's pooled features (the representation the probes evaluate) and both need
labels; on an unlabelled dataset they are switched off with one log line.

**Online linear classifier** (``monitor.online_linear``; solo-learn's and lightly's "online classifier"). Every step,
``BatchNorm1d(affine=False) -> Linear(F, C)`` is trained with cross-entropy on the *detached* backbone features of the
step's large views (the method hands them over in :attr:`~selfsup.methods.base.StepOutput.features`), with its own Adam
optimiser. It never sends a gradient into the backbone (the features are detached; ``tests/engine/test_monitor.py``
checks that the method's weights are bit-for-bit those of a run without it). Under DDP every rank gathers the features
and labels of the global batch and takes the same step, so the classifier is identical on every rank without a
gradient all-reduce. Choices: the non-affine BatchNorm standardises the features, whose scale drifts during pretraining,
so one constant learning rate (``monitor.online_lr``, Adam 1e-3) serves every backbone; it trains on augmented views, as
in solo-learn, and is reported on clean test images (below). Logged each step: ``online_loss`` and ``online_top1`` (the
batch accuracy on the augmented training views).

**Periodic kNN** (``monitor.knn_every_steps`` > 0; solo-learn's kNN callback, DINO's ``eval_knn``). Every N steps and
at the end, the backbone (in eval mode) embeds a fixed, seeded subset of ``monitor.knn_train_size`` labelled training
images (the memory bank) and ``monitor.knn_test_size`` test images (the queries), centre-cropped and normalised exactly
as the probes of :mod:`selfsup.eval` do, and the weighted kNN of :mod:`selfsup.metrics.knn` (k = ``monitor.knn_k``,
temperature ``eval.knn.temperature``) gives ``knn_top1``; the online classifier is scored on the same test features
(``online_test_top1``). Without a test split (a folder with no ``val``/``test``), the queries are other training images,
disjoint from the memory bank. This runs on rank 0 only; its cost is logged as ``monitor_fraction`` (monitor time over
run time) so that the overhead stays visible.

The monitor's state (classifier, its optimiser and the last kNN values) is saved in the checkpoint, so a resumed run
continues it exactly.
"""

from __future__ import annotations

import logging
import time
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from selfsup.config import Config
from selfsup.data.base import ImageDataset, collate
from selfsup.data.datasets import build_dataset
from selfsup.data.views import center_crop_resize, normalize
from selfsup.errors import ConfigError, DataError
from selfsup.methods.base import Method
from selfsup.methods.distributed import gather_no_grad
from selfsup.metrics import knn_scores, topk_accuracy

log = logging.getLogger("selfsup.engine")

__all__ = ["OnlineClassifier", "QualityMonitor", "build_monitor"]


class OnlineClassifier(nn.Module):
    """``BatchNorm1d(F, affine=False)`` then ``Linear(F, C)``: a linear classifier on standardised features."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(num_features, affine=False)
        self.linear = nn.Linear(num_features, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.norm(x))


class QualityMonitor:
    """The online classifier and the periodic kNN of one run (see the module docstring)."""

    def __init__(self, cfg: Config, train_set: ImageDataset, num_features: int, device: torch.device,
                 is_main: bool) -> None:
        m = cfg.monitor
        self.cfg, self.device, self.is_main = cfg, device, is_main
        if train_set.num_classes is None:  # build_monitor makes none for unlabelled data
            raise TypeError("QualityMonitor needs a labelled train_set (its num_classes is None)")
        self.num_classes = int(train_set.num_classes)
        self.classifier: Optional[OnlineClassifier] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        if m.online_linear:
            self.classifier = OnlineClassifier(num_features, self.num_classes).to(device)
            self.optimizer = torch.optim.Adam(self.classifier.parameters(), lr=m.online_lr)
        self.every = m.knn_every_steps
        self.last: Dict[str, float] = {}  # the latest kNN / online test values (for the progress bar)
        self.train_top1: Optional[float] = None  # running mean (EMA 0.9) of the online classifier's batch accuracy
        self.seconds = 0.0  # time spent in the monitor
        self._bank: Optional[Subset] = None
        self._queries: Optional[Subset] = None
        if self.every and is_main:
            self._bank, self._queries = knn_subsets(cfg, train_set)

    # ---------------------------------------------------------------------------------------------------- per step
    def after_step(self, features: Optional[Tensor], labels: Tensor, step: int, total_steps: int,
                   method: Method) -> Dict[str, float]:
        """The monitor's part of a pretraining step, once ``step`` steps are done: the online classifier's step
        (:meth:`train_step`), then the kNN of ``method.representation()`` when it is due (:meth:`due`)."""
        logs = self.train_step(features, labels)
        if self.due(step, total_steps):
            logs.update(self.evaluate(method.representation()))
        return logs

    def train_step(self, features: Optional[Tensor], labels: Tensor) -> Dict[str, float]:
        """One step of the online classifier on this rank's detached large-view features ``(L * B, F)`` (view-major)
        and the batch's labels ``(B,)``, gathered over the ranks. Returns ``online_loss`` and ``online_top1``."""
        if self.classifier is None or self.optimizer is None or features is None:  # the two are made together
            return {}
        t0 = time.perf_counter()
        x = features.detach().float().flatten(1)
        y = labels.to(x.device).repeat(x.shape[0] // labels.shape[0])
        x, y = gather_no_grad(x), gather_no_grad(y)
        self.classifier.train()
        with torch.enable_grad():
            logits = self.classifier(x)
            loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        top1 = (logits.detach().argmax(1) == y).float().mean().item() * 100.0
        self.train_top1 = top1 if self.train_top1 is None else 0.9 * self.train_top1 + 0.1 * top1
        self.seconds += time.perf_counter() - t0
        return {"online_loss": loss.item(), "online_top1": top1}

    def due(self, step: int, total_steps: int) -> bool:
        """Whether the kNN runs after ``step`` steps are done: every ``knn_every_steps`` and at the end."""
        return bool(self.every) and (step % self.every == 0 or step == total_steps)

    @torch.no_grad()
    def evaluate(self, backbone: nn.Module) -> Dict[str, float]:
        """kNN top-1 of the current backbone on the fixed subsets, and the online classifier's test top-1 (rank 0)."""
        if not self.is_main or self._bank is None or self._queries is None:  # the two are made together
            return {}
        t0 = time.perf_counter()
        was_training = backbone.training
        backbone.eval()
        try:
            bank_x, bank_y = self._embed(backbone, self._bank)
            query_x, query_y = self._embed(backbone, self._queries)
        finally:
            backbone.train(was_training)
        m, k = self.cfg.monitor, self.cfg.monitor.knn_k
        scores = knn_scores(bank_x, bank_y, query_x, ks=(k,), temperature=self.cfg.eval.knn.temperature,
                            num_classes=self.num_classes)[k]
        out = {"knn_top1": topk_accuracy(scores, query_y, ks=(1,))["top1"]}
        if self.classifier is not None:
            self.classifier.eval()
            out["online_test_top1"] = topk_accuracy(self.classifier(query_x), query_y, ks=(1,))["top1"]
        self.last = out
        self.seconds += time.perf_counter() - t0
        log.debug("monitor: %s (%d bank, %d queries, k=%d)", out, len(bank_y), len(query_y), m.knn_k)
        return out

    def _embed(self, backbone: nn.Module, subset: Subset):
        src: ImageDataset = subset.dataset  # type: ignore[assignment]
        size = self.cfg.eval.image_size or max(1, round(src.image_size * self.cfg.eval.crop_ratio))
        loader = DataLoader(subset, batch_size=self.cfg.eval.batch_size, shuffle=False, collate_fn=collate,
                            num_workers=self.cfg.data.workers)
        feats, labels = [], []
        for batch in loader:
            if batch["image"].shape[0] == 0:
                continue
            x = normalize(center_crop_resize(batch["image"].to(self.device), self.cfg.eval.crop_ratio, size),
                          src.mean, src.std)
            feats.append(backbone(x.contiguous(memory_format=torch.channels_last)).float().flatten(1))
            labels.append(batch["label"].to(self.device))
        return torch.cat(feats), torch.cat(labels)

    # ---------------------------------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict:
        state: dict = {"last": dict(self.last), "seconds": self.seconds}
        if self.classifier is not None and self.optimizer is not None:  # the two are made together
            state["classifier"] = self.classifier.state_dict()
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.last = {str(k): float(v) for k, v in state.get("last", {}).items()}
        self.seconds = float(state.get("seconds", 0.0))
        if self.classifier is not None and self.optimizer is not None and "classifier" in state:
            self.classifier.load_state_dict(state["classifier"])
            self.optimizer.load_state_dict(state["optimizer"])


def knn_subsets(cfg: Config, train_set: ImageDataset):
    """The fixed memory bank (training images) and queries (test images, else other training images), seeded."""
    m = cfg.monitor
    if hasattr(train_set, "centre_square"):  # pretraining's whole-image / still-encoded items: probe centre squares
        train_set = train_set.centre_square()
    gen = torch.Generator().manual_seed(cfg.seed)
    labelled = (train_set.labels >= 0).nonzero().flatten()
    order = labelled[torch.randperm(labelled.numel(), generator=gen)]
    bank = Subset(train_set, order[:m.knn_train_size].tolist())
    try:
        test_set = build_dataset(cfg.data, "test")
    except (DataError, ConfigError) as exc:
        test_set = None
        log.info("monitor: no test split (%s); kNN queries are held-out training images", exc)
    if test_set is not None and len(test_set):
        pick = torch.randperm(len(test_set), generator=gen)[:m.knn_test_size]
        queries = Subset(test_set, pick.tolist())
    else:
        rest = order[m.knn_train_size:m.knn_train_size + m.knn_test_size]
        if rest.numel() == 0:
            raise ConfigError(f"monitor.knn_train_size={m.knn_train_size} leaves no training images for kNN queries "
                              f"and there is no test split; lower it or set monitor.knn_every_steps=0")
        queries = Subset(train_set, rest.tolist())
    return bank, queries


def build_monitor(cfg: Config, train_set: ImageDataset, num_features: int, device: torch.device,
                  is_main: bool) -> Optional[QualityMonitor]:
    """A :class:`QualityMonitor`, or None when both monitors are off or the data has no labels (said once, as INFO
    when the kNN monitor was asked for, else at DEBUG: the online classifier is on by default)."""
    m = cfg.monitor
    if not (m.online_linear or m.knn_every_steps):
        return None
    if train_set.num_classes is None:
        if is_main:
            log.log(logging.INFO if m.knn_every_steps else logging.DEBUG,
                    "monitor: %s has no labels; the online classifier and kNN monitor are off", cfg.data.dataset)
        return None
    return QualityMonitor(cfg, train_set, num_features, device, is_main)
