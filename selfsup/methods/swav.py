"""SwAV (Caron et al. 2020) with SSLight's settings (Tan et al. ICLR'23; method-details B 1.2, 1.4).

Views: L large (global) views, which are also SwAV's assign crops (``CROPS_FOR_ASSIGN``), and S small (local) views.
Networks (B 1.4):
  * embedding ``z = normalize(projector(backbone(x)))``, projector ``Linear(d, 2048)-BN-ReLU-Linear(2048, 128)``; as in
    SSLight's ``MultiCropWrapper``, the backbone runs once per resolution group and the projector once on the features
    of all views together (its BatchNorm normalises over all views);
  * prototypes ``C = Linear(128, 3000, bias=False)``, re-normalised to unit rows (no gradient) at the start of every
    forward, so ``scores = z @ C.T`` are cosines. Their gradients are dropped during the first
    ``freeze_prototypes_epochs`` epochs (:meth:`SwAV.on_after_backward`), so the optimiser leaves them untouched then.
Codes (no gradient): for each large view, the Sinkhorn-Knopp assignment (:func:`selfsup.losses.sinkhorn`, eps 0.05, 3
iterations) of the whole global batch, with the queue's rows prepended once the queue is in use; the codes of the batch
are the last rows.
Loss (B 1.2): :func:`selfsup.losses.swav_multiview_loss`, each assign view's codes predicted by every other view at
T = 0.1, combined with SSLight's ``alpha`` (None: SwAV's plain mean over pairs).
Queue: ``queue_length`` (3840) embeddings per large view of earlier steps, newest first, a persistent buffer of shape
(L, queue_length, dim) (checkpointed and restored on resume). From epoch ``queue_start_epoch`` on it is filled every
step with the step's global-batch embeddings, and it takes part in the codes once it is full (SwAV's
``use_the_queue`` test: its last row is non-zero), i.e. ``queue_length / batch`` steps after ``queue_start_epoch``.

Choices and deviations:
  * Sinkhorn runs on the global batch, identically on every process: each process gathers the (detached) embeddings of
    the large views, scores them against the prototypes, runs Sinkhorn on all rows and keeps its own rows
    (SwAV's ``distributed_sinkhorn`` all-reduces the sums instead; the result is the same). The embeddings (128-d) are
    gathered rather than the 3000-d scores: cheaper, and the queue needs them anyway.
  * The queue holds *global*-batch embeddings and is identical on every process (SwAV keeps a per-process queue of
    ``queue_length / world`` local embeddings; the union is the same set of rows, and Sinkhorn does not depend on the
    order of its rows). Like SwAV and SSLight, ``queue_length`` is rounded down to a multiple of the global batch
    (``train.batch_size``): 3840 becomes 3072 at batch 1024.
  * The queue is written in :meth:`SwAV.after_optimizer_step` (SwAV writes it in the forward, right after reading it):
    the same contents at the next step, a step rejected for a non-finite loss leaves it untouched, and calling
    ``forward`` twice gives the same loss.
  * Scores, codes and the loss are computed in float32 with autocast disabled (see :mod:`selfsup.losses.swav`).
  * The prototypes start as normal vectors normalised to unit rows (uniform directions; SSLight draws N(0, 0.01) and
    normalises at the first step). The projector uses the library's MLP initialisation.
  * Given the codes, the loss is per sample, so each process computes it on its own slice; DDP's gradient averaging
    gives the gradient of the global-batch loss, and the returned value is shifted by a constant to the mean over
    processes (one scalar all-reduce), so every process reports the global loss.
  * The prototypes are frozen for whole epochs (SSLight's ``FREEZE_PROTOTYPES_EPOCHS``; SwAV counts iterations, 313 =
    one epoch at batch 4096), and their gradients are dropped after DDP's averaging, before any gradient clipping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.config import Config
from selfsup.errors import ConfigError
from selfsup.losses import sinkhorn, swav_multiview_loss
from selfsup.method_args import MLP_NORMS, at_least, check_alpha, positive
from selfsup.methods.base import (
    Method,
    StepContext,
    StepOutput,
    detached_features,
    drop_gradients,
    forward_by_resolution,
    register_method,
)
from selfsup.methods.distributed import all_reduce_mean, gather_no_grad, rank
from selfsup.models.heads import MLP
from selfsup.models.registry import create_backbone


@dataclass
class SwAVArgs:
    """SwAV's hyper-parameters (defaults: SSLight's ``swav_cnn_*.yaml``, method-details B 1.4)."""

    name: str = "swav"
    num_prototypes: int = 3000
    temperature: float = 0.1  # T of the swapped prediction
    epsilon: float = 0.05  # Sinkhorn entropy regularisation
    sinkhorn_iterations: int = 3
    queue_length: int = 3840  # per large view; 0 = no queue; rounded down to a multiple of train.batch_size
    queue_start_epoch: int = 15
    freeze_prototypes_epochs: int = 1
    projector_hidden: int = 2048
    projector_dim: int = 128
    head_norm: str = "batch"  # batch (SwAV) | none | layer
    alpha: Optional[float] = None  # SSLight re-balancing of large-large vs small-large pairs; None = plain mean

    def validate(self) -> None:
        at_least(self, ("num_prototypes", "sinkhorn_iterations", "projector_hidden", "projector_dim"))
        positive(self, ("temperature", "epsilon"))
        at_least(self, ("queue_length", "queue_start_epoch", "freeze_prototypes_epochs"), 0)
        if self.head_norm not in MLP_NORMS:
            raise ConfigError(f"method.head_norm must be one of {', '.join(MLP_NORMS)}, got '{self.head_norm}'")
        check_alpha(self.alpha)


@register_method("swav", args=SwAVArgs)
class SwAV(Method):
    queue: Tensor

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        a: SwAVArgs = cfg.method
        if cfg.views.large.count + cfg.views.small.count < 2:
            raise ConfigError("method swav needs at least 2 views: views.large.count + views.small.count >= 2")
        queue_length = a.queue_length - a.queue_length % cfg.train.batch_size
        if a.queue_length > 0 and queue_length == 0:
            raise ConfigError(f"method.queue_length must be 0 or >= train.batch_size={cfg.train.batch_size} "
                              f"(it is rounded down to a multiple of the batch), got {a.queue_length}")
        self.backbone = create_backbone(cfg.model, image_size=cfg.views.large.size)
        self.projector = MLP(self.backbone.num_features, a.projector_hidden, a.projector_dim, norm=a.head_norm)
        self.prototypes = nn.Linear(a.projector_dim, a.num_prototypes, bias=False)
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(torch.randn_like(self.prototypes.weight), dim=1))
        self.register_buffer("queue", torch.zeros(cfg.views.large.count, queue_length, a.projector_dim))
        self._step_embeddings: Optional[List[Tensor]] = None  # this step's global-batch large-view z, for the queue

    def embed(self, views) -> Tuple[List[Tensor], Optional[Tensor]]:
        """Unit-norm embeddings of every view (large first), float32; and the detached backbone features of the large
        views (:attr:`StepOutput.features`)."""
        large = forward_by_resolution(self.backbone, views.large)
        feats = large + forward_by_resolution(self.backbone, views.small)
        z = self.projector(torch.cat(feats, dim=0))
        with torch.autocast(device_type=z.device.type, enabled=False):
            return list(F.normalize(z.float(), dim=1).chunk(len(feats), dim=0)), detached_features(large)

    def scores(self, z: Tensor) -> Tensor:
        """Cosine scores ``z @ C.T`` against the prototypes, float32."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            return F.linear(z.float(), self.prototypes.weight.float())

    def queue_in_use(self, epoch: int) -> bool:
        """From ``queue_start_epoch``, once the queue is full (SwAV: its last row is non-zero)."""
        return (self.queue.shape[1] > 0 and epoch >= self.args.queue_start_epoch
                and bool(self.queue[:, -1].any()))

    @torch.no_grad()
    def codes(self, z_global: Tensor, use_queue: bool, view: int, batch: int) -> Tensor:
        """Sinkhorn codes of this process's ``batch`` rows of large view ``view``, computed over the global batch."""
        scores = self.scores(z_global)
        if use_queue:
            scores = torch.cat([self.scores(self.queue[view]), scores], dim=0)
        a: SwAVArgs = self.args
        q = sinkhorn(scores, epsilon=a.epsilon, iterations=a.sinkhorn_iterations)[-z_global.shape[0]:]
        return q[rank() * batch:(rank() + 1) * batch]

    def forward(self, views, ctx: StepContext) -> StepOutput:
        a: SwAVArgs = self.args
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        num_large, batch = len(views.large), views.large[0].shape[0]
        z, features = self.embed(views)
        scores = [self.scores(v) for v in z]
        z_global = [gather_no_grad(v.detach()) for v in z[:num_large]]
        use_queue = self.queue_in_use(ctx.epoch)
        codes = [self.codes(zg, use_queue, i, batch) for i, zg in enumerate(z_global)]
        local = swav_multiview_loss(scores[:num_large], scores[num_large:], codes, temperature=a.temperature,
                                    alpha=a.alpha)
        # this process's gradient, the global batch's value (see the module docstring)
        loss = local + (all_reduce_mean(local.detach()) - local.detach())
        self._step_embeddings = z_global
        return StepOutput(loss=loss, logs={"queue_in_use": float(use_queue)}, features=features)

    def on_after_backward(self, ctx: StepContext) -> None:
        if ctx.epoch < self.args.freeze_prototypes_epochs:
            drop_gradients(self.prototypes)

    @torch.no_grad()
    def after_optimizer_step(self, ctx: StepContext) -> Dict[str, float]:
        """From ``queue_start_epoch`` on: push the step's global-batch embeddings to the front of the queue."""
        if self._step_embeddings is not None and self.queue.shape[1] > 0 and ctx.epoch >= self.args.queue_start_epoch:
            for view, z in enumerate(self._step_embeddings):
                self.queue[view] = torch.cat([z.to(self.queue.dtype), self.queue[view]], dim=0)[:self.queue.shape[1]]
        self._step_embeddings = None
        return {}
