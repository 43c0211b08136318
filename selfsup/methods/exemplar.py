"""Exemplar (Dosovitskiy et al. 2014; Doersch & Zisserman 2017's triplet form) as studied in Revisiting SSL
(method-details A6, B 2.3): every image is its own class, seen through several heavily augmented copies.

Views: ``views.large.count`` copies per image (the reference: 8 Inception-style crops), no small views. Each image is
turned to grayscale with probability ``method.grayscale_p`` (2/3), **one decision per image shared by all its copies**
(the reference's ``to_gray`` comes before the crops); set ``views.grayscale_p=0`` so the view sampler adds no other
grayscale. Every copy is then standardised on its own (TF's per-image standardisation).
Network: the backbone and a linear logits layer of ``method.embedding_dim`` (1000) outputs, the embedding.
Loss: :func:`selfsup.losses.semi_hard_triplet_loss` with margin 0.5 on squared L2 distances between embeddings
L2-normalised **over the feature axis**. Choice: the public TF code normalises over the batch axis
(``tf.nn.l2_normalize(logits, axis=0)``), which we read as a bug (it makes one image's embedding depend on the rest of
the batch); method-details A6. Labels are the image's index in the batch, so triplets are formed within each process's
batch (the reference did the same per core).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.config import Config
from selfsup.data.pretext import random_grayscale, standardize
from selfsup.errors import ConfigError
from selfsup.losses import semi_hard_triplet_loss
from selfsup.methods.base import Method, StepContext, StepOutput, register_method, require_large_views_only
from selfsup.models.registry import create_backbone


@dataclass
class ExemplarArgs:
    name: str = "exemplar"
    embedding_dim: int = 1000  # the "logits" layer the triplet loss reads
    margin: float = 0.5
    grayscale_p: float = 2.0 / 3.0  # per image, shared by its copies

    def validate(self) -> None:
        if self.embedding_dim < 1:
            raise ConfigError(f"method.embedding_dim must be >= 1, got {self.embedding_dim}")
        if self.margin < 0:
            raise ConfigError(f"method.margin must be >= 0, got {self.margin}")
        if not 0.0 <= self.grayscale_p <= 1.0:
            raise ConfigError(f"method.grayscale_p must be in [0, 1], got {self.grayscale_p}")


@register_method("exemplar", args=ExemplarArgs)
class Exemplar(Method):
    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        require_large_views_only(cfg, "exemplar")
        if cfg.views.large.count < 2:
            raise ConfigError(f"method exemplar needs at least 2 copies per image (views.large.count), "
                              f"got {cfg.views.large.count}")
        self.backbone = create_backbone(cfg.model, image_size=cfg.views.large.size)
        self.logits = nn.Linear(self.backbone.num_features, cfg.method.embedding_dim)

    def forward(self, views, ctx: StepContext) -> StepOutput:
        a: ExemplarArgs = self.args
        copies = len(views.large)
        b = views.large[0].shape[0]
        gray = torch.rand(b, generator=ctx.generator).lt(a.grayscale_p)
        x = torch.cat([standardize(random_grayscale(v, a.grayscale_p, decide=gray)) for v in views.large], dim=0)
        h = self.backbone(x)
        z = F.normalize(self.logits(h).float(), dim=1)
        labels = torch.arange(b, device=x.device).repeat(copies)
        loss = semi_hard_triplet_loss(z, labels, margin=a.margin)
        with torch.no_grad():  # pretext accuracy: is each copy's nearest other embedding a copy of the same image?
            d = torch.cdist(z, z).fill_diagonal_(float("inf"))
            acc = (labels[d.argmin(1)] == labels).float().mean().item() * 100.0
        return StepOutput(loss=loss, logs={"pretext_top1": acc}, features=h.detach())
