"""The dataset registry: every ``data.dataset`` name is a builder registered here, as timm's models are.

A dataset family is one module of :mod:`selfsup.data.sources` that registers its builders::

    @register_dataset("cifar10")
    def build(cfg: DataConfig, split: str, *, whole: bool = False) -> ImageDataset: ...

``split`` is "train" or "test"; ``whole`` asks for whole images (aspect kept) to crop the views from, which only the
datasets that decode files honour (the others ignore it). A family whose own ``data.*`` settings need checking
registers ``validate=``, a function of the :class:`~selfsup.config.DataConfig` that raises a one-line
:class:`~selfsup.errors.ConfigError` naming the option (the built-in shapes: ``data.train_size`` and friends); the
settings a dataset does not read are not checked for it. :func:`check_data` runs the check of ``data.dataset``:
:func:`selfsup.data.datasets.build_dataset` always runs it, and the config layer runs it at load time once the
built-ins are loaded (:data:`selfsup.config.DATA_CHECKS`).

This module imports nothing of the data layer but the dataset base class, so every dataset module can import it
without a cycle; the built-ins are registered by importing :mod:`selfsup.data.sources` (which
:mod:`selfsup.data.datasets` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from selfsup.config import DataConfig, _choice
from selfsup.data.base import ImageDataset

#: ``build(cfg, split, *, whole=False) -> ImageDataset``
Builder = Callable[..., ImageDataset]
#: ``validate(cfg)``: raises a one-line ConfigError for a bad setting of the dataset's own
Validator = Callable[[DataConfig], None]


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset: its ``data.dataset`` name, its builder and the check of its own settings."""

    name: str
    build: Builder
    validate: Optional[Validator] = None


_DATASETS: Dict[str, DatasetEntry] = {}


def register_dataset(name: str, *, validate: Optional[Validator] = None) -> Callable[[Builder], Builder]:
    """Decorator: make ``build`` the builder of ``data.dataset=<name>`` (``validate`` checks its own settings).

    A name is registered once: a second builder under a taken name is a programming error (``ValueError``).
    """

    def wrap(build: Builder) -> Builder:
        if name in _DATASETS:
            raise ValueError(f"dataset '{name}' is already registered (by {_DATASETS[name].build.__module__})")
        _DATASETS[name] = DatasetEntry(name, build, validate)
        return build

    return wrap


def list_datasets() -> List[str]:
    """The registered ``data.dataset`` names, sorted."""
    return sorted(_DATASETS)


def dataset_entry(name: str) -> DatasetEntry:
    """The entry of ``name``; an unknown name is a one-line ConfigError listing the names, with a did-you-mean."""
    _choice("data.dataset", name, list_datasets())
    return _DATASETS[name]


def check_data(cfg: DataConfig) -> DatasetEntry:
    """Check ``data.dataset`` and the settings of that dataset's own (its ``validate``); returns its entry."""
    entry = dataset_entry(cfg.dataset)
    if entry.validate is not None:
        entry.validate(cfg)
    return entry
