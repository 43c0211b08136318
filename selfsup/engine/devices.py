"""The device a single-process job (evaluation, the saliency pipeline) runs on, from ``train.accelerator``."""

from __future__ import annotations

import torch

from selfsup.config import Config
from selfsup.errors import ConfigError

__all__ = ["device_for"]


def device_for(cfg: Config) -> torch.device:
    """CUDA for ``train.accelerator`` cuda/gpu, or auto on a machine with a GPU; else the CPU. Asking for CUDA where
    there is none is a one-line error."""
    acc = cfg.train.accelerator
    if acc in ("cuda", "gpu") and not torch.cuda.is_available():
        raise ConfigError(f"train.accelerator={acc} but no CUDA device is available "
                          "(use train.accelerator=cpu or auto)")
    if acc in ("cuda", "gpu") or (acc == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")
