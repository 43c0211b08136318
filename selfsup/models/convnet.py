"""Small CPU convnets: ``convnet_tiny`` / ``convnet_small``, plain conv3x3-norm-ReLU stacks for CPU runs on 28-32 px
images (see :data:`CONVNET_SPECS` for the layers and the measured training throughput).

Their ``imagenet`` stem makes the first conv stride 2 and adds the 3x3/2 max-pool; stems and norms as for the other CNNs
(:mod:`selfsup.models.base`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from selfsup.config import ModelConfig
from selfsup.models.base import Backbone, norm_layer, refuse_options, scale_width, select_stem
from selfsup.models.registry import register_family

__all__ = ["ConvNetSpec", "CONVNET_SPECS", "build_convnet"]


@dataclass(frozen=True)
class ConvNetSpec:
    """Conv3x3-norm-ReLU layers of ``widths`` (scaled by ``model.width``) and ``strides``, then global
    average pooling."""

    widths: Tuple[int, ...]
    strides: Tuple[int, ...]


# Training step (forward + backward + SGD momentum) on this project's 2-core CPU, torch.set_num_threads(2),
# channels_last, batch 256, 32x32 RGB, BatchNorm, median of 7 steps, machine otherwise idle (other processes on the
# two cores cut these 2-5x):
#   convnet_tiny  (32,64,128,256) strides (1,2,2,2):  ~1400 img/s (28 px: ~1900; GroupNorm ~1400),
#                 0.39M parameters, 256 features.
#   convnet_small (32,64,64,128,128,256,256) strides (1,2,1,2,1,2,1): ~700 img/s, 1.16M parameters, 256 features.
# Alternatives measured: 64-128-256-512 s1222 ~460 img/s; 32-64-128-256 s2122 ~2100 img/s (8x8 at the end, coarser);
# for reference ResNet-18 with the small stem runs ~35 img/s.
CONVNET_SPECS: Dict[str, ConvNetSpec] = {
    "convnet_tiny": ConvNetSpec(widths=(32, 64, 128, 256), strides=(1, 2, 2, 2)),
    "convnet_small": ConvNetSpec(widths=(32, 64, 64, 128, 128, 256, 256), strides=(1, 2, 1, 2, 1, 2, 1)),
}


def _conv_norm_act(cin: int, cout: int, stride: int, norm: Callable[..., nn.Module], device) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False, device=device),
        norm(cout, device=device),
        nn.ReLU(inplace=True),
    )


@register_family(CONVNET_SPECS, lambda name: f"{name}: conv3x3-norm-ReLU, widths {CONVNET_SPECS[name].widths}, "
                                           f"strides {CONVNET_SPECS[name].strides}.")
def build_convnet(name: str, cfg: ModelConfig, *, image_size: int, in_chans: int = 3,
                  device: Optional[torch.device | str] = None) -> Backbone:
    """A :class:`ConvNetSpec` stack. The ``imagenet`` stem makes the first conv stride 2 and adds a 3x3/2 max-pool.

    Convs are kaiming-normal (fan_in, ReLU gain: He et al. 2015, keeps activations O(1) also without normalisation);
    norm weights 1, biases 0.
    """
    refuse_options(cfg, name, "patch_size", "drop_path_rate", "stage_units", "last_relu")
    spec = CONVNET_SPECS[name]
    stem = select_stem(cfg, image_size, family=name)
    norm = norm_layer(cfg.norm)
    widths = [scale_width(c, cfg.width) for c in spec.widths]
    layers: List[Tuple[str, nn.Module]] = []
    cin = in_chans
    reduction = 1
    for i, (cout, stride) in enumerate(zip(widths, spec.strides)):
        if i == 0 and stem == "imagenet":
            stride = 2
        layers.append((f"conv{i}", _conv_norm_act(cin, cout, stride, norm, device)))
        reduction *= stride
        if i == 0 and stem == "imagenet":
            layers.append(("maxpool", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)))
            reduction *= 2
        cin = cout
    body = nn.Sequential(OrderedDict(layers))
    for m in body.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    return Backbone(body, name=name, num_features=widths[-1], stem=stem, norm=cfg.norm, reduction=reduction)
