"""Heads on top of the representation: the BYOL/RELICv2 projector and predictor MLPs.

RELICv2 (method-details A2) uses BYOL's heads: projector ``Linear(d, 4096)-BN-ReLU-Linear(4096, 256)`` and a predictor of
the same shape on the 256-d projection. ``MLP(d, 4096, 256)`` builds either.
"""

from __future__ import annotations

import math
from typing import List

import torch.nn as nn

from selfsup.errors import ConfigError

__all__ = ["MLP", "MLP_NORMS"]

MLP_NORMS = ("batch", "layer", "none")


class MLP(nn.Sequential):
    """``[Linear(.., hidden) - norm - ReLU] * (num_layers - 1) - Linear(hidden, out_dim)``.

    * ``norm="batch"`` (BYOL, RELICv2): BatchNorm1d after each hidden Linear; those Linears have no bias (BN's shift
      replaces it). ``norm="layer"``: LayerNorm instead, also bias-free and independent of the batch. ``norm="none"``: no
      normalisation, and the hidden Linears have a bias. The output Linear always has a bias.
    * ``num_layers`` counts the Linear layers (2 = BYOL's projector); >= 2 repeats the hidden block.
    * Linear weights: truncated normal with std ``1/sqrt(fan_in)`` (cut at 2 std), biases 0 (Haiku's default ``hk.Linear``
      initialiser, which BYOL's and RELICv2's heads use).

    Being an ``nn.Sequential``, the layers are indexable: ``mlp[0]`` is the first Linear, ``mlp[-1]`` the output Linear.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, *, norm: str = "batch", num_layers: int = 2) -> None:
        if norm not in MLP_NORMS:
            raise ConfigError(f"MLP norm must be one of {', '.join(MLP_NORMS)}; got '{norm}'")
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
            layers.append(nn.ReLU(inplace=True))
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
