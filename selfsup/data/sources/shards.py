"""``data.dataset=shards``: an image folder packed by ``selfsup data pack`` into litdata chunks, read by index
(:mod:`selfsup.data.shards`: the format, the packer and :class:`~selfsup.data.shards.ShardDataset`). Its settings are
the folder's: ``data.root`` (the pack's output, required when the dataset is built) and ``data.test_root`` (another
test shard folder). litdata itself is imported only when a split is opened."""

from __future__ import annotations

from selfsup.config import DataConfig
from selfsup.data.registry import register_dataset
from selfsup.data.shards import ShardDataset, shard_dataset


@register_dataset("shards")
def build(cfg: DataConfig, split: str, *, whole: bool = False) -> ShardDataset:
    """:func:`~selfsup.data.shards.shard_dataset`; ``whole`` keeps each image whole (``data.crop_from=whole``)."""
    return shard_dataset(cfg, split, whole=whole)
