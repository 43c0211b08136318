"""Heads on top of the representation: the BYOL/RELICv2 projector and predictor MLPs.

RELICv2 (method-details A2) uses BYOL's heads: projector ``Linear(d, 4096)-BN-ReLU-Linear(4096, 256)`` and a predictor
of the same shape on the 256-d projection. ``MLP(d, 4096, 256)`` builds either.

DINO (SSLight B 1.4) uses :class:`DINOHead`: a 3-layer GELU MLP to a 256-d bottleneck, L2 normalisation, and a
weight-normalised Linear to ``out_dim`` prototypes.
"""

from __future__ import annotations

import math
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

from selfsup.errors import ConfigError
from selfsup.method_args import MLP_NORMS

__all__ = ["MLP", "MLP_NORMS", "MLP_ACTIVATIONS", "DINOHead"]

MLP_ACTIVATIONS = ("relu", "gelu")


class MLP(nn.Sequential):
    """``[Linear(.., hidden) - norm - ReLU] * (num_layers - 1) - Linear(hidden, out_dim)``.

    * ``norm="batch"`` (BYOL, RELICv2): BatchNorm1d after each hidden Linear; those Linears have no bias (BN's shift
      replaces it). ``norm="layer"``: LayerNorm instead, also bias-free and independent of the batch. ``norm="none"``:
      no normalisation, and the hidden Linears have a bias. The output Linear always has a bias.
    * ``activation``: ``"relu"`` (BYOL) or ``"gelu"`` (DINO's head).
    * ``num_layers`` counts the Linear layers (2 = BYOL's projector); >= 2 repeats the hidden block.
    * Linear weights: truncated normal with std ``1/sqrt(fan_in)`` (cut at 2 std), biases 0 (Haiku's default
      ``hk.Linear`` initialiser, which BYOL's and RELICv2's heads use).

    Being an ``nn.Sequential``, the layers are indexable: ``mlp[0]`` is the first Linear, ``mlp[-1]`` the output Linear.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, *, norm: str = "batch", num_layers: int = 2,
                 activation: str = "relu", dropout: float = 0.0) -> None:
        if norm not in MLP_NORMS:
            raise ConfigError(f"MLP norm must be one of {', '.join(MLP_NORMS)}; got '{norm}'")
        if activation not in MLP_ACTIVATIONS:
            raise ConfigError(f"MLP activation must be one of {', '.join(MLP_ACTIVATIONS)}; got '{activation}'")
        if num_layers < 2:
            raise ConfigError(f"MLP num_layers must be >= 2, got {num_layers}")
        for key, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if value < 1:
                raise ConfigError(f"MLP {key} must be >= 1, got {value}")
        layers: List[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim, bias=norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(hidden_dim))
            elif norm == "layer":
                layers.append(nn.LayerNorm(hidden_dim))
            layers.append(nn.ReLU(inplace=True) if activation == "relu" else nn.GELU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        super().__init__(*layers)
        self.in_dim = in_dim
        self.hidden_dim = hidden_dim
        self.out_dim = out_dim
        self.norm = norm
        self.num_layers = num_layers
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Linear: truncated normal std 1/sqrt(fan_in), bias 0; norms: weight 1, bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                std = 1.0 / math.sqrt(m.in_features)
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)):
                m.reset_parameters()


class DINOHead(nn.Module):
    """DINO's projection head (Caron et al. 2021, ``vision_transformer.DINOHead``; SSLight's CNN setting, B 1.4).

    ``mlp``: ``Linear(in, hidden)-norm-GELU-[Linear(hidden, hidden)-norm-GELU]-Linear(hidden, bottleneck)`` (an
    :class:`MLP` with ``num_layers`` Linears and GELU); then L2 normalisation; then ``last_layer``: a weight-normalised
    ``Linear(bottleneck, out_dim, bias=False)`` (``torch.nn.utils.parametrizations.weight_norm``, one norm per output
    row). Its magnitude ``g`` (``last_layer.parametrizations.weight.original0``) starts at 1 and, with
    ``norm_last_layer`` (DINO's default), is frozen, so every output is a cosine similarity to a unit prototype.

    * ``norm="batch"``: SSLight's CNN head (BatchNorm1d after the hidden Linears); ``norm="none"``: DINO's ViT head.
      With BatchNorm the hidden Linears have no bias (:class:`MLP`'s convention; DINO keeps one, which BatchNorm's
      mean subtraction cancels).
    * Init as DINO: MLP Linear weights trunc-normal std 0.02 (DINO's ``trunc_normal_`` bounds +-2, i.e. +-100 std),
      biases 0; the last layer's direction keeps PyTorch's default Linear init (DINO creates it after its init pass).

    A deep copy (the teacher) keeps the parametrisation, and its parameters are matched by name with the original's,
    so an EMA over ``named_parameters`` moves ``g`` and the direction ``v`` (``original1``), as DINO's EMA does.
    """

    def __init__(self, in_dim: int, out_dim: int = 4096, hidden_dim: int = 2048, bottleneck_dim: int = 256, *,
                 norm: str = "batch", num_layers: int = 3, norm_last_layer: bool = True) -> None:
        super().__init__()
        self.mlp = MLP(in_dim, hidden_dim, bottleneck_dim, norm=norm, num_layers=num_layers, activation="gelu")
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if out_dim < 1:
            raise ConfigError(f"DINOHead out_dim must be >= 1, got {out_dim}")
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        g = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            g.fill_(1.0)
        g.requires_grad_(not norm_last_layer)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))
