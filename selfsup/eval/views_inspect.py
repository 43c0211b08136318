"""What ``selfsup views inspect`` shows of a recipe's views: the crop-area and pixel-scale statistics of the training
sampler (:func:`selfsup.data.view_stats.view_statistics`) and a PNG grid of example views of the recipe's dataset
(the built-in data if that is not available), with the masks pretraining would use."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple, cast

import torch

import selfsup.methods  # noqa: F401  (registers the methods: load_config knows their arguments)
from selfsup.config import Config, load_config
from selfsup.data.view_stats import ViewStats, view_statistics
from selfsup.metafiles import check_output_file


def recipe_views(recipe: str, overrides: Sequence[str], out: Optional[str],
                 images: int) -> Tuple[Config, Path, ViewStats]:
    """The recipe's config, the PNG path (checked writable; default ``views-<recipe name>.png``) and the statistics of
    ``images`` draws of the sampler."""
    cfg = load_config(recipe, overrides)
    png = check_output_file(Path(out or f"views-{cfg.name}.png"))
    stats = view_statistics(cfg.views, num_images=images, source_size=cfg.data.image_size,
                            generator=torch.Generator().manual_seed(cfg.seed))
    return cfg, png, stats


def describe_views(recipe: str, cfg: Config) -> str:
    """One line: the view groups' counts, sizes and crop areas."""
    v = cfg.views
    return (f"recipe {recipe}: {v.large.count} large x {v.large.size}px "
            f"(crop area {v.large.scale_min}..{v.large.scale_max}), {v.small.count} small x "
            f"{v.small.size}px (crop area {v.small.scale_min}..{v.small.scale_max})")


def draw_view_grid(cfg: Config, png: Path, rows: int, stats) -> str:
    """The grid of ``rows`` source images and their views at ``png``; returns what the images are of (the recipe's
    dataset, or the built-in shapes and why)."""
    from selfsup.data.base import collate
    from selfsup.data.datasets import build_dataset, decode_on
    from selfsup.data.views import MultiViewSampler
    from selfsup.errors import ConfigError, DataError
    from selfsup.eval.plots import plot_view_grid

    try:
        ds, source = build_dataset(cfg.data, "train", for_views=True,
                                   device_decode=decode_on(cfg.data, torch.device("cpu"))), cfg.data.dataset
    except (ConfigError, DataError) as exc:
        cfg.data.dataset, cfg.data.train_size, cfg.data.limit = "shapes", max(rows, 16), None
        ds, source = build_dataset(cfg.data, "train"), f"built-in shapes ({exc})"
    rows = min(rows, len(ds))
    batch = collate([ds[i] for i in range(rows)])
    if "items" in batch:  # data.decode=device
        from selfsup.data.images import EncodedImageDataset, decode_on_device

        # only an encoded dataset's batches carry items
        batch = decode_on_device(batch, cast(EncodedImageDataset, ds), torch.device("cpu"))
    sampler = MultiViewSampler(cfg.views, ds.mean, ds.std)
    size = tuple(batch["image"].shape[-2:])
    try:  # the masks pretraining would use (views.mask_source: ground truth, a saliency cache, a random ablation)
        from selfsup.data.masks import MaskProvider

        masks = MaskProvider(cfg.views, ds, cfg.data.dataset)(batch, batch["image"],
                                                              torch.Generator().manual_seed(cfg.seed))
    except (ConfigError, DataError):
        masks = batch["mask"]
    views = sampler(batch["image"], masks, sampler.sample_params(rows, torch.Generator().manual_seed(cfg.seed),
                                                                  source_size=size), batch["size"])
    ratio = f", mean(PS_g/PS_l)={stats.ps_ratio_mean:.2f}" if stats.ps_ratio_mean is not None else ""
    plot_view_grid(batch["image"], views, ds.mean, ds.std, png, masks=masks, sizes=batch["size"],
                   title=f"{cfg.name}: {cfg.views.large.count}x{cfg.views.large.size} + "
                         f"{cfg.views.small.count}x{cfg.views.small.size}{ratio}")
    return source
