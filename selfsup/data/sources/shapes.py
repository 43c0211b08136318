"""``data.dataset=shapes``: the built-in procedural images (:class:`selfsup.data.shapes.ShapesDataset`), their settings
and the check of them. Nothing is read from disk, so every option is a setting of the generator."""

from __future__ import annotations

from selfsup.config import DataConfig, _positive, _unit
from selfsup.data.registry import register_dataset
from selfsup.data.shapes import BACKGROUND_FAMILIES, ShapesDataset


def validate(cfg: DataConfig) -> None:
    """The shapes' own settings: ``data.num_classes``, ``data.train_size``, ``data.test_size`` (> 0),
    ``data.spurious`` and ``data.test_spurious`` (in [0, 1]).
    ``data.backgrounds`` names are checked by the generator."""
    _positive("data.num_classes", cfg.num_classes)
    _positive("data.train_size", cfg.train_size)
    _positive("data.test_size", cfg.test_size)
    _unit("data.spurious", cfg.spurious)
    if cfg.test_spurious is not None:
        _unit("data.test_spurious", cfg.test_spurious)


@register_dataset("shapes", validate=validate)
def build(cfg: DataConfig, split: str, *, whole: bool = False) -> ShapesDataset:
    """``data.train_size`` / ``data.test_size`` images of ``data.num_classes`` shapes (at most ``data.limit``); the test
    split ties backgrounds to classes with ``data.test_spurious`` when set, else ``data.spurious``. The statistics
    come from the first (at most 2048) training images."""
    size = cfg.train_size if split == "train" else cfg.test_size
    if cfg.limit is not None:
        size = min(size, cfg.limit)
    return ShapesDataset(num_classes=cfg.num_classes, image_size=cfg.image_size, size=size, split=split, seed=0,
                         spurious=cfg.spurious if split == "train" or cfg.test_spurious is None else cfg.test_spurious,
                         stats_images=min(cfg.train_size, 2048),
                         backgrounds=BACKGROUND_FAMILIES if cfg.backgrounds is None else cfg.backgrounds)
