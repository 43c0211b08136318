"""Datasets: uint8 RGB images of one square size, with labels and (for the built-in data) foreground masks.

Every dataset is an :class:`~selfsup.data.base.ImageDataset` whose items are dicts:

* ``image``: uint8 ``(3, S, S)`` RGB; grayscale sources are replicated to three channels;
* ``label``: int, ``-1`` for unlabelled images;
* ``index``: int, the item's position in the dataset (the trainer uses it, e.g. to find an image again);
* ``mask``: uint8 ``(1, S, S)``, ``255`` = foreground (soft, anti-aliased values in between), only when
  ``dataset.has_masks``.

Augmentation is *not* done here: the views of a step are rendered batched by
:class:`selfsup.data.views.MultiViewSampler`, so a dataset only has to deliver the source images, and
:func:`~selfsup.data.base.collate` stacks them. Two kinds of datasets:

* **In memory** (:class:`~selfsup.data.base.InMemoryDataset`: Fashion-MNIST, CIFAR-10/100 and the procedural shapes of
  :mod:`selfsup.data.shapes`): one uint8 tensor ``(N, 3, S, S)``, resized once at load time if ``data.image_size`` is
  not the native size. :meth:`~selfsup.data.base.InMemoryDataset.__getitems__` gathers a whole batch with one indexing
  op, which ``torch.utils.data.DataLoader`` uses instead of one ``__getitem__`` call per image.
* **Files** (:class:`~selfsup.data.sources.folder.FolderDataset`, :class:`~selfsup.data.shards.ShardDataset`): an
  ImageFolder layout (one sub-folder per class), a flat folder of unlabelled images or packed shards, decoded lazily
  from disk in ``__getitem__``; the short side is resized to ``S`` and the centre ``S x S`` crop kept. A corrupt image
  is a one-line :class:`~selfsup.errors.DataError` naming the file, or, with ``data.skip_corrupt=true``, an item of
  ``None`` that :func:`~selfsup.data.base.collate` drops and counts.

Each ``data.dataset`` name is registered (:mod:`selfsup.data.registry`) by its family's module in
:mod:`selfsup.data.sources`, beside the check of its own settings; importing this module registers them all. Files a
user supplies are never trusted: IDX headers and sizes are checked, CIFAR pickles are read with an unpickler that only
builds numpy arrays, so a malicious file cannot run code.
"""

from __future__ import annotations

import torch

import selfsup.data.sources  # noqa: F401  (registers every built-in dataset)
from selfsup.config import DataConfig
from selfsup.data.base import ImageDataset, _triple
from selfsup.data.images import EncodedImageDataset
from selfsup.data.registry import check_data
from selfsup.errors import ConfigError

SPLITS = ("train", "test")


def build_dataset(cfg: DataConfig, split: str, *, for_views: bool = False,
                  device_decode: bool = False) -> ImageDataset:
    """The ``split`` ("train" or "test") of ``cfg.dataset``, limited to the first ``cfg.limit`` images.

    The name is looked up in the registry (:func:`selfsup.data.registry.check_data`, which also checks the dataset's own
    settings). ``for_views``: the dataset that pretraining crops its views from. Folder data then keeps each image
    whole (aspect kept, short side ``image_size``) when ``cfg.crop_from`` is "whole" (shards too); everywhere else
    (evaluation, saliency) images are the centre square, which is the evaluation's "resize, centre-crop". With
    ``device_decode`` the views' dataset leaves JPEGs encoded for :func:`selfsup.data.images.decode_on_device`
    (:func:`decode_on` says when). ``cfg.mean`` / ``cfg.std``, when set, replace the dataset's own normalisation
    statistics.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got '{split}'")
    entry = check_data(cfg)
    ds = entry.build(cfg, split, whole=for_views and cfg.crop_from == "whole")
    if for_views and device_decode and isinstance(ds, EncodedImageDataset):
        ds.device_decode = True  # JPEGs stay encoded until the trainer decodes the batch (decode_on_device)
    if cfg.mean is not None:
        ds.mean = _triple(cfg.mean)
    if cfg.std is not None:
        ds.std = _triple(cfg.std)
    return ds


def decode_on(cfg: DataConfig, device: torch.device) -> bool:
    """Whether pretraining decodes JPEGs on ``device``: ``data.decode`` device, or auto on a CUDA device."""
    return cfg.decode == "device" or (cfg.decode == "auto" and torch.device(device).type == "cuda")
