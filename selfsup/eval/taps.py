"""Evaluation at every depth (Revisiting SSL Sec. 4.5 and 4.6, Fig. 5 and 7): probes on each named tap of a frozen
backbone, with fewer labels on request.

* **Taps** are the backbone's :meth:`~selfsup.models.base.Backbone.forward_taps` (ResNets/RevNet: after_root,
  block1..block4, pre_logits; VGG: block1..block5, fc6, pre_logits; Jigsaw/RPL: each averaged over 9 patches). One
  forward pass over the data extracts all of them (:class:`TapFeatures`).
* **Pooling**: a tap with more than ``eval.taps.max_dims`` values is max-pooled with kernel = stride =
  ``ceil(sqrt(h w c / max_dims))`` (ceil mode, like the reference's SAME padding), so it has about ``max_dims`` values
  (9000 in the paper); smaller taps are flattened as they are.
* **Probes** (``eval.taps.probes``): ``lbfgs`` is :func:`selfsup.eval.linear.fit_logistic_lbfgs` (standardised
  features, L2 chosen on a stratified val split, refit, test); ``mlp`` (one hidden layer of 1000 ReLU units) and
  ``sgd`` (linear) are trained by :func:`fit_probe_sgd` on the same standardised features.
* **Labels** (``eval.taps.fractions``): each fraction takes a class-balanced, seeded subset of the training labels
  (:func:`selfsup.data.subsets.class_balanced_subset`; the paper's low-data regimes are 10 % and 5 %). The features are
  extracted once for all fractions and probes.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from selfsup.config import Config, TapsEvalConfig
from selfsup.data.base import collate
from selfsup.data.subsets import class_balanced_subset
from selfsup.engine.devices import device_for
from selfsup.engine.supervised import LoopSettings, TensorBatches, train_supervised
from selfsup.errors import ConfigError, NonFiniteLossError
from selfsup.eval.features import extract_features
from selfsup.eval.linear import feature_stats, fit_logistic_lbfgs
from selfsup.eval.run import probe_data
from selfsup.models.heads import MLP
from selfsup.schedules import step_decay

__all__ = ["pool_tap", "TapFeatures", "fit_probe_sgd", "probe_taps", "run_taps"]


def pool_tap(x: torch.Tensor, max_dims: int) -> torch.Tensor:
    """``(B, C, h, w)`` -> ``(B, D)`` with ``D`` about ``max_dims`` or less (see the module docstring); 2-D as it is."""
    if x.ndim == 2:
        return x
    c, h, w = x.shape[1:]
    if c * h * w > max_dims:
        s = math.ceil(math.sqrt(c * h * w / max_dims))
        x = F.max_pool2d(x, kernel_size=s, stride=s, ceil_mode=True)
    return x.flatten(1)


class TapFeatures(nn.Module):
    """All requested taps of ``rep``, each pooled by :func:`pool_tap` and flattened, concatenated into one
    ``(B, sum of D_t)`` tensor (so the generic feature extractor can cache them); :meth:`split` cuts them apart."""

    def __init__(self, rep: nn.Module, max_dims: int, names: Optional[Sequence[str]] = None) -> None:
        super().__init__()
        available = tuple(getattr(rep, "tap_names", ("pre_logits",)))
        names = tuple(names) if names else available
        unknown = [n for n in names if n not in available]
        if unknown:
            raise ConfigError(f"eval.taps.names: {', '.join(unknown)} not among this backbone's taps "
                              f"({', '.join(available)})")
        self.rep, self.max_dims, self.names = rep, max_dims, names
        self.dims: Dict[str, int] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # nn.Module's stubs type unknown attributes Tensor | Module; forward_taps is the backbone's method
        taps = (self.rep.forward_taps(x)  # type: ignore[operator]
                if hasattr(self.rep, "forward_taps") else {"pre_logits": self.rep(x)})
        parts = [pool_tap(taps[n].float(), self.max_dims) for n in self.names]
        self.dims = OrderedDict((n, p.shape[1]) for n, p in zip(self.names, parts))
        return torch.cat(parts, dim=1)

    def split(self, features: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        start = 0
        for name, d in self.dims.items():
            out[name] = features[:, start:start + d]
            start += d
        return out


def fit_probe_sgd(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                  num_classes: int, hidden: Optional[int], cfg: TapsEvalConfig, seed: int = 0) -> Dict[str, float]:
    """A linear (``hidden`` None) or one-hidden-layer ReLU MLP probe trained with SGD on cached features,
    standardised with the train statistics: momentum 0.9, batch ``cfg.sgd_batch_size``, lr ``cfg.sgd_lr x batch /
    256`` with x0.1 at ``cfg.sgd_milestones``, ``cfg.sgd_epochs`` epochs, weight decay ``cfg.sgd_weight_decay``
    (:func:`selfsup.engine.supervised.train_supervised` over :class:`~selfsup.engine.supervised.TensorBatches`).
    Returns test ``top1`` and ``train_top1``."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean, std = feature_stats(train_x)
    xtr, xte = (train_x - mean) / std, (test_x - mean) / std
    dim = xtr.shape[1]
    if hidden:
        model: nn.Module = MLP(dim, hidden, num_classes, norm="none")
    else:
        model = nn.Linear(dim, num_classes)
    bs = min(cfg.sgd_batch_size, len(xtr))
    peak = cfg.sgd_lr * bs / 256.0
    opt = torch.optim.SGD(model.parameters(), lr=peak, momentum=0.9, weight_decay=cfg.sgd_weight_decay)

    def nonfinite(value: float, epoch: int) -> Exception:
        return NonFiniteLossError(f"the SGD probe's loss is {value} at epoch {epoch}; lower eval.taps.sgd_lr")

    settings = LoopSettings(epochs=cfg.sgd_epochs, schedule_unit="epoch", check_finite="step", nonfinite=nonfinite,
                            lr_schedule=lambda epoch, lr: step_decay(lr, epoch, cfg.sgd_milestones, 0.1))
    train_supervised(model, opt, TensorBatches(xtr, train_y, bs, gen), settings)
    model.eval()
    with torch.no_grad():
        top1 = (model(xte).argmax(1) == test_y).float().mean().item() * 100.0
        train_top1 = (model(xtr).argmax(1) == train_y).float().mean().item() * 100.0
    return {"top1": top1, "train_top1": train_top1}


def probe_taps(train: "OrderedDict[str, torch.Tensor]", train_y: torch.Tensor,
               test: "OrderedDict[str, torch.Tensor]", test_y: torch.Tensor, *, num_classes: int, cfg: Config,
               progress: bool = True) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``{probe: {fraction: {tap: test top-1}}}`` for every probe, label fraction and tap (fractions as strings)."""
    t = cfg.eval.taps
    jobs = [(p, f, n) for p in t.probes for f in t.fractions for n in train]
    out: Dict[str, Dict[str, Dict[str, float]]] = {p: {f"{f:g}": {} for f in t.fractions} for p in t.probes}
    subsets = {f: class_balanced_subset(train_y, f, seed=t.seed) for f in t.fractions}
    bar = tqdm(jobs, desc="tap probes", unit="probe", disable=not progress, dynamic_ncols=True)
    for probe, frac, name in bar:
        bar.set_postfix(probe=probe, labels=f"{frac:g}", tap=name)
        idx = subsets[frac]
        xtr, ytr = train[name][idx], train_y[idx]
        if probe == "lbfgs":
            lin = cfg.eval.linear
            res = fit_logistic_lbfgs(xtr, ytr, test[name], test_y, num_classes=num_classes, l2_grid=lin.l2_grid,
                                     val_fraction=lin.val_fraction, max_iter=lin.max_iter, seed=t.seed)
            top1 = float(res["top1"])
        else:
            top1 = fit_probe_sgd(xtr, ytr, test[name], test_y, num_classes=num_classes,
                                 hidden=t.mlp_hidden if probe == "mlp" else None, cfg=t, seed=t.seed)["top1"]
        out[probe][f"{frac:g}"][name] = top1
    return out


def run_taps(cfg: Config, rep: nn.Module, data=None, progress: bool = True) -> dict:
    """Extract every tap of ``rep`` on ``cfg.data`` (train and test splits) and run :func:`probe_taps`. Returns
    ``{"taps", "dims", "results", "num_train", "num_test"}``."""
    t = cfg.eval.taps
    if data is None:
        if t.limit is not None:
            cfg = copy.deepcopy(cfg)
            cfg.data.limit = min(t.limit, cfg.data.limit or t.limit)
        data = probe_data(cfg)
    dev = device_for(cfg)
    tapper = TapFeatures(rep, t.max_dims, t.names).to(dev)
    kw = dict(preprocess=data.preprocess(cfg), batch_size=cfg.eval.batch_size, device=dev, collate_fn=collate,
              progress=progress)
    xtr, ytr = extract_features(tapper, data.train, desc="train taps", **kw)
    xte, yte = extract_features(tapper, data.test, desc="test taps", **kw)
    train, test = tapper.split(xtr.cpu()), tapper.split(xte.cpu())
    results = probe_taps(train, ytr.cpu(), test, yte.cpu(), num_classes=data.train.num_classes, cfg=cfg,
                         progress=progress)
    return {"taps": list(tapper.names), "dims": dict(tapper.dims), "results": results, "num_train": len(ytr),
            "num_test": len(yte), "max_dims": t.max_dims}
