"""The images and ground-truth masks the saliency pipeline reads from a dataset, and the fit set.

Every stage works on uint8 tensors held in memory: :func:`dataset_images` (``(N, 3, S, S)``, resized to the pipeline's
side) and, where the data has them, :func:`dataset_images_masks` (``(N, S, S)``), which only ever score a stage; the
ground truth never enters a fit.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor

from selfsup.data.base import resize_images
from selfsup.data.masks import resize_masks
from selfsup.errors import ConfigError

__all__ = ["dataset_images", "dataset_images_masks", "fit_subset"]


def dataset_images(dataset, indices: Union[Sequence[int], np.ndarray], size: int) -> Tensor:
    """uint8 ``(N, 3, size, size)`` of the dataset's images at ``indices`` (resized when the side differs)."""
    items = [dataset[int(i)] for i in indices]
    if any(it is None for it in items):
        raise ConfigError("the saliency fit set has unreadable images; fix them or lower saliency.fit_images")
    images = torch.stack([it["image"] for it in items]) if items else torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return resize_images(images, size)


def dataset_images_masks(dataset, indices: Union[Sequence[int], np.ndarray], size: int) -> np.ndarray:
    """uint8 ground-truth masks ``(N, size, size)`` of the dataset's images at ``indices``."""
    return resize_masks(torch.stack([dataset[int(i)]["mask"] for i in indices]), size)[:, 0].numpy()


def fit_subset(n: int, k: int, seed: int) -> np.ndarray:
    """The fit set: ``min(k, n)`` indices drawn without replacement (seeded), sorted."""
    rng = np.random.default_rng([seed, 0x5A1])
    return np.sort(rng.choice(n, size=min(k, n), replace=False))
