"""Vision transformers (timm): ``vit_tiny_16``, ``vit_tiny_32``, ``vit_small_16``.

timm's :class:`~timm.models.vision_transformer.VisionTransformer` (ViT-Ti/16: embed 192, depth 12, 3 heads, 5.5M
parameters; ViT-Ti/32; ViT-S/16: 384, 12, 6, 21.7M), see :class:`ViTBackbone`. The representation is the class token
after the final LayerNorm (pre-logits). ``model.patch_size`` overrides the name's patch size (4 for 32 px CPU runs) and
``model.drop_path_rate`` sets stochastic depth. ``model.stem`` and ``model.norm`` do not apply (a patch embedding, and
LayerNorm, which is per sample and so batch-independent like ``group``/``none``); ``model.width`` must stay 1 (the name
sets the size). Never pretrained: nothing is downloaded. Inputs must be multiples of the patch size.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer

from selfsup.config import ModelConfig
from selfsup.errors import ConfigError
from selfsup.models.base import Backbone, refuse_options
from selfsup.models.registry import register_family

__all__ = ["ViTSpec", "VIT_SPECS", "ViTBackbone", "LastBlocksTokens", "build_vit"]


@dataclass(frozen=True)
class ViTSpec:
    """A ViT size: patch side, embedding width, number of blocks and attention heads (MLP ratio 4, qkv bias)."""

    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int


VIT_SPECS: Dict[str, ViTSpec] = {
    "vit_tiny_16": ViTSpec(patch_size=16, embed_dim=192, depth=12, num_heads=3),
    "vit_tiny_32": ViTSpec(patch_size=32, embed_dim=192, depth=12, num_heads=3),
    "vit_small_16": ViTSpec(patch_size=16, embed_dim=384, depth=12, num_heads=6),
}


class ViTBackbone(Backbone):
    """A timm ViT without classifier. ``forward`` is the class token after the final LayerNorm (pre-logits), **not** the
    mean of the feature map; ``forward_features`` is the map of patch tokens ``(B, embed_dim, H/p, W/p)``.

    ``dynamic_img_size`` is on: the learned position embedding (a grid for the ``image_size`` the backbone was built
    for) is resampled bicubically to the grid of each input, so global and local views of different sizes share one
    module. Input sides must be multiples of the patch size, else a :class:`~selfsup.errors.ConfigError` names them. We
    do not use timm's ``dynamic_img_pad``: its partly zero border patches are unlike any patch of the other view sizes,
    and every size SSLight uses (224, 96, 128 with patches 16 and 32) divides anyway.
    """

    body: VisionTransformer

    def _check_size(self, x: torch.Tensor) -> None:
        p = self.reduction
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ConfigError(f"model.backbone={self.name} needs inputs whose sides are multiples of the patch size "
                              f"{p}, got {x.shape[-2]}x{x.shape[-1]} (change the view sizes or model.patch_size)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_size(x)
        tokens = self.body.forward_features(x)[:, self.body.num_prefix_tokens:]
        h, w = x.shape[-2] // self.reduction, x.shape[-1] // self.reduction
        return tokens.transpose(1, 2).reshape(x.shape[0], self.num_features, h, w)

    def forward_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [self.forward_features(x)]  # one resolution: the patch-token grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_size(x)
        return self.pre_logits(self.body(x))

    @property
    def tap_names(self) -> Tuple[str, ...]:  # type: ignore[override]
        return tuple(f"block{i + 1}" for i in range(len(self.body.blocks))) + ("pre_logits",)

    def forward_taps(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """The class token after every block, each through the final LayerNorm (DINO's ``get_intermediate_layers``),
        and ``pre_logits`` (equal to ``forward(x)``)."""
        self._check_size(x)
        b = self.body
        x = b.norm_pre(b.patch_drop(b._pos_embed(b.patch_embed(x))))
        taps: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        for i, block in enumerate(b.blocks):
            x = block(x)
            taps[f"block{i + 1}"] = b.norm(x)[:, 0]
        taps["pre_logits"] = self.pre_logits(b.forward_head(b.norm(x), pre_logits=True))
        return taps


class LastBlocksTokens(nn.Module):
    """``eval.vit_last_blocks = n``: a ViT's representation as the class tokens of its last ``n`` blocks (each through
    the final LayerNorm), concatenated in block order, ``n * embed_dim`` features (DINO's and SSLight's linear
    evaluation of ViT-Ti/S uses n = 4)."""

    def __init__(self, backbone: ViTBackbone, n: int) -> None:
        super().__init__()
        depth = len(backbone.body.blocks)
        if not 1 <= n <= depth:
            raise ConfigError(f"eval.vit_last_blocks={n}: model.backbone={backbone.name} has {depth} blocks")
        self.backbone, self.n = backbone, n
        self.names = [f"block{i + 1}" for i in range(depth - n, depth)]
        self.num_features = n * backbone.body.embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = self.backbone.forward_taps(x)
        return torch.cat([taps[name] for name in self.names], dim=1)


@register_family(VIT_SPECS, lambda name: f"{name}: timm VisionTransformer, {VIT_SPECS[name]}.")
def build_vit(name: str, cfg: ModelConfig, *, image_size: int, in_chans: int = 3,
              device: Optional[torch.device | str] = None) -> ViTBackbone:
    """A :data:`VIT_SPECS` ViT whose position embedding has the grid of ``image_size`` (see :class:`ViTBackbone`)."""
    refuse_options(cfg, name, "width", "stage_units", "last_relu")
    spec = VIT_SPECS[name]
    patch = cfg.patch_size if cfg.patch_size is not None else spec.patch_size
    if image_size % patch:
        raise ConfigError(f"image size {image_size} is not a multiple of the patch size {patch} of "
                          f"model.backbone={name}; set model.patch_size to a divisor of {image_size}")
    net = VisionTransformer(img_size=image_size, patch_size=patch, in_chans=in_chans, num_classes=0,
                            global_pool="token", embed_dim=spec.embed_dim, depth=spec.depth, num_heads=spec.num_heads,
                            dynamic_img_size=True, drop_path_rate=cfg.drop_path_rate, device=device)
    return ViTBackbone(net, name=name, num_features=spec.embed_dim, stem="patch", norm="layer", reduction=patch)
