"""Rotation (Gidaris et al. 2018) as studied in Revisiting SSL (method-details B 2.3): predict which of four rotations
was applied.

Views: the large views only (``views.small.count`` must be 0); the recipes use one, with Revisiting's Inception-style
crop, flip and mild colour distortion. Every view of every image is rotated by 0, 90, 180 and 270 degrees
counter-clockwise (:func:`selfsup.data.pretext.rotations`), all four in the batch, so B images give 4B inputs; the
learning rate is scaled by images, not by rotated copies (``optim.base_lr * batch_size / 256``), as the reference.
Network: the backbone and a linear logits layer on its pre-logits (the reference's 1x1-conv "logits", with bias), 4
outputs. Loss: 4-way cross-entropy. ``pretext_top1`` (accuracy of the rotation prediction in the step) is logged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.config import Config
from selfsup.data.pretext import rotations
from selfsup.methods.base import Method, StepContext, StepOutput, register_method, require_large_views_only
from selfsup.metrics.accuracy import topk_accuracy
from selfsup.models.registry import create_backbone


@dataclass
class RotationArgs:
    name: str = "rotation"

    def validate(self) -> None:
        pass


@register_method("rotation", args=RotationArgs)
class Rotation(Method):
    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        require_large_views_only(cfg, "rotation")
        self.backbone = create_backbone(cfg.model, image_size=cfg.views.large.size)
        self.logits = nn.Linear(self.backbone.num_features, 4)

    def forward(self, views, ctx: StepContext) -> StepOutput:
        x = torch.cat(list(views.large), dim=0)  # (L * B, C, S, S), view after view
        rotated, labels = rotations(x)
        h = self.backbone(rotated)
        logits = self.logits(h)
        loss = F.cross_entropy(logits, labels)
        upright = h[: x.shape[0]].detach()  # rotation 0 of every view: the monitor's features, (L * B, F)
        pretext = topk_accuracy(logits.detach(), labels, ks=(1,))["top1"]
        return StepOutput(loss=loss, logs={"pretext_top1": pretext}, features=upright)
