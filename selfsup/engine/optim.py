"""Optimisers: LARS as in BYOL/RELICv2 and SSLight, parameter groups, and the ``optim.*`` factory.

LARS (You et al. 2017), in the form of BYOL's ``utils/optimizers.py`` and SSLight's ``utils/optimizer.py``
(method-details B 1.3 and B 5.2). Per parameter ``p`` with gradient ``g``::

    d  = g + wd * p
    if not lars_exclude:  d *= eta * ||p|| / ||d||     (trust ratio 1 when either norm is 0)
    mu = momentum * mu + d
    p -= lr * mu

No Nesterov, no dampening; the trust ratio is computed on the decayed gradient. Biases and normalisation parameters are
excluded from both weight decay and the trust ratio (:func:`param_groups`).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List

import torch
import torch.nn as nn

from selfsup.config import OptimConfig
from selfsup.errors import ConfigError

__all__ = ["LARS", "param_groups", "build_optimizer", "OPTIMIZERS"]

OPTIMIZERS = ("lars", "sgd", "adamw")


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling with momentum (BYOL / SSLight form; see the module docstring).

    Group keys: ``lr``, ``weight_decay``, ``momentum``, ``trust_coefficient`` (eta, default 1e-3), ``lars_exclude``
    (skip the trust ratio). Parameters whose ``grad`` is None are skipped (their momentum is not decayed either).
    The momentum buffer starts at zero, so the first step uses ``mu = d`` (as ``torch.optim.SGD`` with dampening 0).
    """

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 1e-3, lars_exclude: bool = False) -> None:
        if lr < 0:
            raise ValueError(f"LARS lr must be >= 0, got {lr}")
        if momentum < 0:
            raise ValueError(f"LARS momentum must be >= 0, got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"LARS weight_decay must be >= 0, got {weight_decay}")
        if trust_coefficient <= 0:
            raise ValueError(f"LARS trust_coefficient must be > 0, got {trust_coefficient}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        lars_exclude=lars_exclude)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: List[torch.Tensor] = []
            grads: List[torch.Tensor] = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                params.append(p)
                grads.append(p.grad)
            if not params:
                continue
            wd = group["weight_decay"]
            # d = g + wd * p (a new list: the gradients themselves are left untouched)
            d = torch._foreach_add(grads, params, alpha=wd) if wd != 0 else [g.clone() for g in grads]
            if not group["lars_exclude"]:
                eta = group["trust_coefficient"]
                p_norms = torch._foreach_norm(params)
                d_norms = torch._foreach_norm(d)
                ratios = [torch.where((pn > 0) & (dn > 0), eta * pn / dn, torch.ones_like(pn))
                          for pn, dn in zip(p_norms, d_norms)]
                torch._foreach_mul_(d, ratios)
            bufs = []
            for p, di in zip(params, d):
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["momentum_buffer"] = buf
                bufs.append(buf)
            # mu = momentum * mu + d ; p -= lr * mu
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, d)
            torch._foreach_add_(params, bufs, alpha=-group["lr"])
        return loss


def param_groups(model: nn.Module, weight_decay: float, *, depthwise_no_decay: bool = False) -> List[Dict[str, Any]]:
    """Split the trainable parameters of ``model`` into optimiser groups (SSLight ``get_params``, BYOL's exclusions).

    * ``no_decay``: every parameter with ``ndim <= 1`` (biases, norm scales and shifts): ``weight_decay 0``,
      ``wd_factor 0``, ``lars_exclude True``.
    * ``depthwise`` (only if ``depthwise_no_decay``): 4-D kernels with ``shape[1] == 1`` (depthwise convs, SSLight's
      rule for MobileNetV2): ``weight_decay 0``, ``wd_factor 0``, ``lars_exclude False`` (the trust ratio still
      applies).
    * ``regular``: everything else: ``weight_decay``, ``wd_factor 1``, ``lars_exclude False``.

    Frozen parameters (``requires_grad False``) are skipped; empty groups are dropped. Each group has a ``name`` key.
    ``wd_factor`` lets :func:`selfsup.engine.schedules.set_weight_decay` change the decay while keeping no-decay groups
    at 0.
    """
    regular: List[nn.Parameter] = []
    no_decay: List[nn.Parameter] = []
    depthwise: List[nn.Parameter] = []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1:
            no_decay.append(p)
        elif depthwise_no_decay and p.ndim == 4 and p.shape[1] == 1:
            depthwise.append(p)
        else:
            regular.append(p)
    groups = [
        dict(name="regular", params=regular, weight_decay=weight_decay, wd_factor=1.0, lars_exclude=False),
        dict(name="no_decay", params=no_decay, weight_decay=0.0, wd_factor=0.0, lars_exclude=True),
        dict(name="depthwise", params=depthwise, weight_decay=0.0, wd_factor=0.0, lars_exclude=False),
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float, *,
                    depthwise_no_decay: bool = False) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg.name`` over :func:`param_groups` of ``model``, starting at learning rate ``lr``.

    * ``lars``: :class:`LARS` (``momentum``, ``trust_coefficient``); ``optim.nesterov`` is refused (LARS has none).
    * ``sgd``: ``torch.optim.SGD`` (``momentum``, ``nesterov``); weight decay is coupled (added to the gradient).
    * ``adamw``: ``torch.optim.AdamW`` (``betas``); weight decay is decoupled.
    """
    groups = param_groups(model, cfg.weight_decay, depthwise_no_decay=depthwise_no_decay)
    if not groups:
        raise ConfigError("the model has no trainable parameters to optimise")
    if cfg.name == "lars":
        if cfg.nesterov:
            raise ConfigError("optim.nesterov=true is not supported with optim.name=lars (LARS uses plain momentum)")
        return LARS(groups, lr=lr, momentum=cfg.momentum, trust_coefficient=cfg.trust_coefficient)
    if cfg.name == "sgd":
        if cfg.nesterov and cfg.momentum <= 0:
            raise ConfigError("optim.nesterov=true needs optim.momentum > 0")
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adamw":
        if len(cfg.betas) != 2:
            raise ConfigError(f"optim.betas needs 2 values, got {list(cfg.betas)}")
        return torch.optim.AdamW(groups, lr=lr, betas=(float(cfg.betas[0]), float(cfg.betas[1])))
    raise ConfigError(f"optim.name must be one of {', '.join(OPTIMIZERS)}; got '{cfg.name}'")


@torch.no_grad()
def clip_per_parameter(params, max_norm: float) -> None:
    """DINO's ``clip_gradients``: scale each parameter's gradient so that its own L2 norm is at most ``max_norm``
    (``coef = max_norm / (norm + 1e-6)``, applied when below 1); unlike global clipping, one large gradient does not
    shrink all the others."""
    for p in params:
        if p.grad is not None:  # min(coef, 1) as a tensor: no host sync per parameter on a GPU
            coef = max_norm / (torch.linalg.vector_norm(p.grad) + 1e-6)
            p.grad.mul_(coef.clamp(max=1.0))
