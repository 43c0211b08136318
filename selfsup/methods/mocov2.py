"""MoCo-v2 (He et al. 2020; Chen et al. 2020) with SSLight's optional multi-crop (Tan et al. ICLR'23; method-details
B 1.2, 1.4).

Views: exactly 2 large (global) views and any number S of small (local) views; S = 0 is plain MoCo-v2.
Networks (B 1.4):
  * query encoder = backbone + projector ``Linear(d, 2048)-ReLU-Linear(2048, 128)`` (no BatchNorm: ``head_norm=none``);
    as in SSLight's ``MultiCropWrapper``, the backbone runs once per resolution group and the projector once on the
    features of all query views together;
  * key encoder = a frozen copy of both, moved by the engine with a *constant* momentum 0.999 after every optimiser step
    (``EMASpec(schedule="constant")``; MoCo updates it at the start of the next forward, which is the same sequence);
  * queue = ``queue_size`` (65536) unit-norm keys of earlier steps, a persistent buffer (checkpointed and restored on
    resume) with its write pointer ``queue_ptr``.
Loss (B 1.2): the key is the key encoder on large view 0; the queries are the query encoder on large view 1 and every
small view; :func:`selfsup.losses.moco_multiview_loss` (InfoNCE against the key and the queue, T = 0.2) combined with
SSLight's ``alpha`` (None: the plain mean over the 1 + S queries = SSLight's baseline weights 1/7, 6/7 for S = 6).
One-directional, as in MoCo-v2 and SSLight. ``symmetric=True`` is the symmetrised form (MoCo-v2+ in solo-learn, and
MoCo-v3): both large views give a key and a query, so the pairs are (large 1, key 0), (large 0, key 1) and every small
view against both keys; the key encoder then runs on both large views (one batched forward).
After the optimiser step, the step's keys of the whole global batch (gathered across processes) are written into the
queue, oldest first out (FIFO), so the queue is identical on every process.

Choices and deviations:
  * No shuffled BN. MoCo shuffles the key batch across GPUs so that the key encoder's BatchNorm statistics cannot leak
    which query matches which key. Here the key encoder runs on this process's key batch (its BatchNorm uses that
    batch's statistics; under multi-GPU DDP with ``train.sync_bn`` it becomes SyncBatchNorm over the global batch, as in
    MoCo-v3, which dropped the shuffle). The projector has no BatchNorm, as in MoCo-v2.
  * The queue starts as random unit vectors drawn from a generator seeded with ``cfg.seed`` (MoCo: ``randn``,
    normalised), identical on every process.
  * ``queue_size`` need not be a multiple of the global batch (MoCo asserts it is): the write wraps around the end of
    the queue, and a batch larger than the queue leaves its newest ``queue_size`` keys.
  * The loss is per query, so each process computes it on its own slice (only the keys are gathered, for the queue).
    DDP's gradient averaging then gives exactly the gradient of the global-batch loss; the returned value is shifted by
    a constant to the mean over processes (one scalar all-reduce), so every process reports the global loss.
  * Symmetric form: one queue holds the keys of both views (2B per step, so it spans half as many steps). solo-learn
    keeps one queue per view and pairs each query with the other view's queue; with one queue every query sees the
    same negatives, and a checkpoint's queue buffer has the same shape in both forms.
  * The heads use the library's MLP initialisation (truncated normal, std 1/sqrt(fan_in)); SSLight uses std 0.02.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.config import Config
from selfsup.errors import ConfigError
from selfsup.losses import moco_multiview_loss
from selfsup.method_args import MLP_NORMS, at_least, check_alpha
from selfsup.methods.base import (
    EMASpec,
    Method,
    StepContext,
    StepOutput,
    detached_features,
    forward_by_resolution,
    frozen_copy,
    register_method,
)
from selfsup.methods.distributed import all_reduce_mean, gather_no_grad
from selfsup.models.heads import MLP
from selfsup.models.registry import create_backbone


@dataclass
class MoCoV2Args:
    """MoCo-v2's hyper-parameters (defaults: SSLight's ``moco_cnn_*.yaml``, method-details B 1.4)."""

    name: str = "mocov2"
    temperature: float = 0.2  # T
    queue_size: int = 65536  # K negatives
    momentum: float = 0.999  # key encoder EMA momentum, constant
    projector_hidden: int = 2048
    projector_dim: int = 128
    head_norm: str = "none"  # none (MoCo-v2) | batch | layer
    alpha: Optional[float] = None  # SSLight: weight of the global query; None = plain mean over queries
    symmetric: bool = False  # both large views give a key and a query (MoCo-v2+ / MoCo-v3); False = SSLight's MoCo

    def validate(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}")
        if self.queue_size < 1:
            raise ConfigError(f"method.queue_size must be >= 1, got {self.queue_size}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ConfigError(f"method.momentum must be in [0, 1], got {self.momentum}")
        if self.head_norm not in MLP_NORMS:
            raise ConfigError(f"method.head_norm must be one of {', '.join(MLP_NORMS)}, got '{self.head_norm}'")
        at_least(self, ("projector_hidden", "projector_dim"))
        check_alpha(self.alpha)


@register_method("mocov2", args=MoCoV2Args)
class MoCoV2(Method):
    queue: Tensor
    queue_ptr: Tensor

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        a: MoCoV2Args = cfg.method
        if cfg.views.large.count != 2:
            raise ConfigError(f"views.large.count must be 2 for method mocov2 (key from view 0, query from view 1), "
                              f"got {cfg.views.large.count}")
        self.backbone = create_backbone(cfg.model, image_size=cfg.views.large.size)
        self.projector = MLP(self.backbone.num_features, a.projector_hidden, a.projector_dim, norm=a.head_norm)
        self.key_backbone = frozen_copy(self.backbone)
        self.key_projector = frozen_copy(self.projector)
        self.ema = EMASpec(base=a.momentum, schedule="constant")
        init = torch.randn(a.queue_size, a.projector_dim, generator=torch.Generator().manual_seed(cfg.seed))
        self.register_buffer("queue", F.normalize(init, dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))  # next row to overwrite
        self._step_keys: Optional[Tensor] = None  # this step's global-batch keys, enqueued after the step

    def ema_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.key_backbone), (self.projector, self.key_projector)]

    def queries(self, views: Sequence[Sequence[Tensor]]) -> Tuple[List[Tensor], Optional[Tensor]]:
        """Query embeddings (un-normalised): backbone once per resolution group, projector once on all of them; and the
        detached backbone features of the first group (the large query views, :attr:`StepOutput.features`)."""
        groups = [forward_by_resolution(self.backbone, group) for group in views]
        feats = [f for group in groups for f in group]
        if not feats:
            return [], None
        return (list(self.projector(torch.cat(feats, dim=0)).chunk(len(feats), dim=0)),
                detached_features(groups[0]))

    @torch.no_grad()
    def key(self, x: Tensor) -> Tensor:
        """Unit-norm keys of the key encoder."""
        return F.normalize(self.key_projector(self.key_backbone(x)).float(), dim=-1)

    def forward(self, views, ctx: StepContext) -> StepOutput:
        a: MoCoV2Args = self.args
        if a.symmetric:
            queries, features = self.queries([views.large, views.small])
            keys = self.key(torch.cat(list(views.large), dim=0)).chunk(2, dim=0)
            local = moco_multiview_loss(queries[:2], queries[2:], keys, self.queue, temperature=a.temperature,
                                        alpha=a.alpha)
            key = torch.cat(keys, dim=0)
        else:
            queries, features = self.queries([views.large[1:], views.small])
            key = self.key(views.large[0])
            local = moco_multiview_loss([None, *queries[:1]], queries[1:], key, self.queue, temperature=a.temperature,
                                        alpha=a.alpha)
        # this process's gradient, the global batch's value (see the module docstring)
        loss = local + (all_reduce_mean(local.detach()) - local.detach())
        self._step_keys = gather_no_grad(key)
        return StepOutput(loss=loss, features=features)

    @torch.no_grad()
    def after_optimizer_step(self, ctx: StepContext) -> Dict[str, float]:
        """Enqueue the step's global-batch keys (FIFO)."""
        if self._step_keys is not None:
            self.enqueue(self._step_keys)
            self._step_keys = None
        return {}

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` (N, D) at the pointer, wrapping around the end; the pointer moves by N (mod queue size)."""
        size, n = self.queue.shape[0], keys.shape[0]
        kept = keys[-size:]  # a batch larger than the queue: only its newest keys survive
        start = int(self.queue_ptr) + n - kept.shape[0]
        rows = (start + torch.arange(kept.shape[0], device=self.queue.device)) % size
        self.queue[rows] = kept.to(self.queue.dtype)
        self.queue_ptr.fill_((int(self.queue_ptr) + n) % size)
