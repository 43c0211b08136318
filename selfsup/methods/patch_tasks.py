"""Jigsaw (Noroozi & Favaro 2016) and Relative Patch Location (Doersch et al. 2015) as studied in Revisiting SSL
(method-details A6, B 2.3). Both cut every image into a 3x3 grid of patches, embed each patch with the same network,
and classify an arrangement of the embeddings.

Views: one large view per image (``views.large.count=1``, no small views) is the crop the grid is cut from; the
recipes make it the reference's "resize, then random crop" (a fixed-area square crop, no colour jitter). Then, in the
method, on the whole batch at once (:mod:`selfsup.data.pretext`):

* grayscale with probability ``method.grayscale_p`` (2/3), decided per image (the reference's ``to_gray`` precedes the
  crop; the paper's text says per patch, the code per image, which we follow);
* a 3x3 grid of cells of ``views.large.size // 3`` pixels with a ``method.patch_size`` square at a random position
  inside each cell: the random gap against edge-continuity shortcuts (reference: 64 px patches in 85 px cells);
* per-patch standardisation ``(x - mean) / max(std, 1/sqrt(N))``.

Network: the backbone on all 9B patches, and a linear "logits" layer of ``method.embedding_dim`` (1000) per patch;
then a head ``Linear(., head_hidden) - BN - ReLU - Dropout(0.5) - Linear(., classes)`` (reference: 4096 hidden).

* **Jigsaw**: ``method.perms_per_batch`` (8) of the 100 shipped permutations
  (:func:`selfsup.data.pretext.jigsaw_permutations`) are drawn per step, shared by the batch; every image is used with
  each of them. Position ``i`` of the head's input holds the embedding of cell ``perm[i]`` (the 9 embeddings
  concatenated in permuted order, 9E); 100-way cross-entropy on the permutation's index.
* **RPL**: each of the 8 neighbours ``i`` of the centre cell (row-major 0, 1, 2, 3, 5, 6, 7, 8) is paired with the
  centre: ``concat[e_i, e_4]`` (2E), 8-way cross-entropy on ``i``'s position in that list.

Representation (:class:`PatchAverage`): the image is resized to ``3 * patch_size`` and cut into its 9 cells (no gap,
no grayscale), each is standardised, and the backbone's outputs are averaged over the 9 (reference: 192 px crop, 64 px
patches). Every probe, the kNN monitor and the evaluation at every tap read this average.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.config import Config
from selfsup.data.pretext import RPL_NEIGHBOURS, grid_patches, jigsaw_permutations, random_grayscale, standardize
from selfsup.errors import ConfigError
from selfsup.method_args import at_least
from selfsup.methods.base import Method, StepContext, StepOutput, register_method, require_large_views_only
from selfsup.metrics.accuracy import topk_accuracy
from selfsup.models.base import Backbone
from selfsup.models.heads import MLP
from selfsup.models.registry import create_backbone


class PatchAverage(nn.Module):
    """A patch task's representation of whole images: the mean of ``backbone`` over the 9 cells of the image resized to
    ``3 * patch_size`` (each cell standardised). Exposes ``num_features``, ``tap_names`` and ``forward_taps`` (each tap
    averaged over the 9 patches) like a backbone."""

    def __init__(self, backbone: Backbone, patch_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.patch_size = patch_size
        self.num_features = backbone.num_features
        self.tap_names = backbone.tap_names

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        side = 3 * self.patch_size
        if x.shape[-1] != side or x.shape[-2] != side:
            x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        p = standardize(grid_patches(x, self.patch_size, jitter=False))
        return p.flatten(0, 1)  # (B * 9, C, P, P), image-major

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.backbone(self.patches(x))
        return h.view(x.shape[0], 9, -1).mean(1)

    def forward_taps(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        taps = self.backbone.forward_taps(self.patches(x))
        return OrderedDict((k, v.view(x.shape[0], 9, *v.shape[1:]).mean(1)) for k, v in taps.items())


@dataclass
class PatchTaskArgs:
    name: str = ""
    patch_size: int = 64  # reference: 64 px patches in 85 px cells of a 255 px crop
    grayscale_p: float = 2.0 / 3.0  # per image
    embedding_dim: int = 1000  # per-patch "logits" layer
    head_hidden: int = 4096
    head_dropout: float = 0.5

    def validate(self) -> None:
        at_least(self, ("patch_size", "embedding_dim", "head_hidden"))
        if not 0.0 <= self.grayscale_p <= 1.0:
            raise ConfigError(f"method.grayscale_p must be in [0, 1], got {self.grayscale_p}")
        if not 0.0 <= self.head_dropout < 1.0:
            raise ConfigError(f"method.head_dropout must be in [0, 1), got {self.head_dropout}")


class PatchTask(Method):
    """What Jigsaw and RPL share: the patch pipeline, the per-patch embedding and the head; subclasses arrange the
    embeddings (:meth:`arrange`)."""

    num_classes: int
    parts: int  # embeddings per head input

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        a: PatchTaskArgs = cfg.method
        require_large_views_only(cfg, a.name)
        if cfg.views.large.count != 1:
            raise ConfigError(f"method {a.name} cuts its patches from one view per image; set views.large.count=1 "
                              f"(got {cfg.views.large.count})")
        cell = cfg.views.large.size // 3
        if a.patch_size > cell:
            raise ConfigError(f"method.patch_size={a.patch_size} does not fit the {cell} px cells of "
                              f"views.large.size={cfg.views.large.size} (needs views.large.size >= {3 * a.patch_size})")
        self.backbone = create_backbone(cfg.model, image_size=self.input_size(cfg))
        self.embed = nn.Linear(self.backbone.num_features, a.embedding_dim)
        self.head = MLP(self.parts * a.embedding_dim, a.head_hidden, self.num_classes, norm="batch",
                        dropout=a.head_dropout)

    @classmethod
    def input_size(cls, cfg: Config) -> int:
        return cfg.method.patch_size

    @classmethod
    def wrap_representation(cls, cfg: Config, backbone: Backbone) -> nn.Module:
        return PatchAverage(backbone, cfg.method.patch_size)

    def arrange(self, e: torch.Tensor, ctx: StepContext):  # pragma: no cover - abstract
        """``e (B, 9, E)`` -> head inputs ``(N, parts * E)`` and labels ``(N,)``."""
        raise NotImplementedError

    def forward(self, views, ctx: StepContext) -> StepOutput:
        a: PatchTaskArgs = self.args
        x = random_grayscale(views.large[0], a.grayscale_p, ctx.generator)
        p = standardize(grid_patches(x, a.patch_size, jitter=True, generator=ctx.generator))  # (B, 9, C, P, P)
        b = p.shape[0]
        h = self.backbone(p.flatten(0, 1))  # (B * 9, F)
        inputs, labels = self.arrange(self.embed(h).view(b, 9, -1), ctx)
        logits = self.head(inputs)
        loss = F.cross_entropy(logits, labels)
        features = h.detach().view(b, 9, -1).mean(1)  # the patch-averaged representation (of jittered patches)
        pretext = topk_accuracy(logits.detach(), labels, ks=(1,))["top1"]
        return StepOutput(loss=loss, logs={"pretext_top1": pretext}, features=features)


@dataclass
class JigsawArgs(PatchTaskArgs):
    name: str = "jigsaw"
    perms_per_batch: int = 8  # permutations drawn per step from the 100, shared by the batch

    def validate(self) -> None:
        super().validate()
        if not 1 <= self.perms_per_batch <= 100:
            raise ConfigError(f"method.perms_per_batch must be in [1, 100], got {self.perms_per_batch}")


@register_method("jigsaw", args=JigsawArgs)
class Jigsaw(PatchTask):
    num_classes = 100
    parts = 9
    permutations: torch.Tensor  # (100, 9) buffer, registered in __init__

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.register_buffer("permutations", jigsaw_permutations().clone(), persistent=False)

    def arrange(self, e: torch.Tensor, ctx: StepContext):
        k = self.args.perms_per_batch
        chosen = torch.randperm(len(self.permutations), generator=ctx.generator)[:k].to(e.device)
        perms = self.permutations[chosen]  # (k, 9): position i holds cell perm[i]
        shuffled = e[:, perms]  # (B, k, 9, E)
        inputs = shuffled.transpose(0, 1).flatten(2)  # (k, B, 9E), permutation-major
        labels = chosen.repeat_interleave(e.shape[0])
        return inputs.flatten(0, 1), labels


@dataclass
class RelPatchArgs(PatchTaskArgs):
    name: str = "relpatch"


@register_method("relpatch", args=RelPatchArgs)
class RelPatch(PatchTask):
    num_classes = 8
    parts = 2

    def arrange(self, e: torch.Tensor, ctx: StepContext):
        b = e.shape[0]
        neighbours = torch.tensor(RPL_NEIGHBOURS, device=e.device)
        pairs = torch.cat([e[:, neighbours], e[:, 4:5].expand(b, 8, e.shape[-1])], dim=-1)  # (B, 8, 2E)
        labels = torch.arange(8, device=e.device).repeat(b)
        return pairs.flatten(0, 1), labels
