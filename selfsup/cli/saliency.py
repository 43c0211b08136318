"""``selfsup saliency fit | predict | show | score``: RELICv2's unsupervised saliency masks from the command line
(:mod:`selfsup.engine.saliency` fits and predicts; :mod:`selfsup.eval.saliency` shows and scores)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict

from selfsup.cli.common import add_command, add_common, help_if_no_action, with_actions

SOURCES_HELP = ("what to draw or score: the handcrafted methods (--methods rbd,mr,dsr,mc), a fitted network "
                "(--net DIR) and/or a mask cache (--cache DIR)")


def add_parser(sub) -> None:
    sa = add_command(sub, "saliency", help="RELICv2's unsupervised saliency: fit the network, predict a mask cache, "
                                           "show and score masks", epilog=False)
    sa.set_defaults(handler=run)
    ssub = with_actions(sa, "saliency_command")
    fit = add_command(ssub, "fit", help="handcrafted maps -> per-method refinement -> fused saliency network "
                                        "(saliency.* settings; writes <out>/saliency_net.safetensors)")
    add_common(fit, "saliency_shapes")
    pr = add_command(ssub, "predict", help="run a fitted network over a dataset split and store its masks as a cache "
                                           "for pretraining (views.mask_source=cache views.mask_cache=DIR)")
    add_common(pr, "saliency_shapes")
    pr.add_argument("--net", required=True, help="a `saliency fit` folder or its saliency_net.safetensors")
    pr.add_argument("--split", default="train", choices=["train", "test"], help="the split to mask (default train)")
    pr.add_argument("--out", "-o", default=None, help="cache folder (default: <net folder>/masks)")
    for name, text in (("show", "a PNG grid: image | mask | masked view for each source (RELICv2 Fig. 4)"),
                       ("score", "F-beta (beta^2 = 0.3), max F-beta, MAE and IoU against the data's ground-truth "
                                 "masks")):
        p = add_command(ssub, name, help=text)
        add_common(p, "saliency_shapes")
        p.add_argument("--methods", default=None, help="comma-separated handcrafted methods (rbd, mr, dsr, mc)")
        p.add_argument("--net", default=None, help="a `saliency fit` folder")
        p.add_argument("--cache", default=None, help="a mask cache folder (`saliency predict`)")
        p.add_argument("--split", default="test", choices=["train", "test"], help="the split (default test)")
        if name == "show":
            p.add_argument("--images", type=int, default=8, help="how many images (default 8)")
            p.add_argument("--photos", action="store_true",
                           help="the natural photos bundled with scikit-image instead of the dataset")
            p.add_argument("--size", type=int, default=128, help="--photos: their side in pixels (default 128)")
            p.add_argument("--out", "-o", default="saliency.png", help="PNG path (default saliency.png)")
        else:
            p.add_argument("--limit", type=int, default=500, help="score the first N images (default 500)")
            p.add_argument("--out", "-o", default=None, help="also write the scores as JSON here")


def run(args: argparse.Namespace) -> int:
    from selfsup.config import load_config

    help_if_no_action(args, "saliency_command")
    cfg = load_config(args.recipe, args.overrides)
    if args.saliency_command == "fit":
        return _fit(args, cfg)
    if args.saliency_command == "predict":
        return _predict(args, cfg)
    return _show_or_score(args, cfg)


def _fit(args: argparse.Namespace, cfg) -> int:
    from selfsup.engine.saliency import fit_saliency

    summary = fit_saliency(cfg, progress=not args.quiet)
    print(f"saliency fit: {summary['fit_images']} images, {summary['seconds']:.0f} s; network: "
          f"{Path(cfg.out) / 'saliency_net.safetensors'}; summary: {Path(cfg.out) / 'saliency.json'}")
    return 0


def _predict(args: argparse.Namespace, cfg) -> int:
    from selfsup.data.masks import MaskCache
    from selfsup.engine.saliency import predict_cache

    net_dir = Path(args.net) if Path(args.net).is_dir() else Path(args.net).parent
    out = Path(args.out) if args.out else net_dir / "masks"
    MaskCache.check_writable(out, args.split, "--out")  # before any work (predict_cache checks it again)
    res = predict_cache(cfg, args.net, out, args.split, progress=not args.quiet)
    print(f"saliency predict: {res['images']} masks at {res['images_per_s']:.0f} images/s, "
          f"{100 * res['usable_fraction']:.1f}% with >= {100 * cfg.views.mask_min_fraction:.0f}% foreground"
          + (f", {res['skipped']} unreadable images left empty" if res["skipped"] else "")
          + f"; cache: {res['path']} (use views.mask_source=cache views.mask_cache={out})")
    return 0


def _maps(args: argparse.Namespace, cfg, dataset, indices, images) -> Dict[str, object]:
    """Every requested source's maps ``(N, S, S)`` in [0, 1] for ``images`` (uint8 ``(N, 3, S, S)``)."""
    from selfsup.eval.saliency import cache_maps, handcrafted_maps, method_list, network_maps

    out: Dict[str, object] = {}
    for m in method_list(args.methods):
        out[m], ips = handcrafted_maps(images, m, cfg.saliency.workers)
        print(f"{m}: {len(images)} maps at {ips:.1f} images/s")
    if args.net:
        out["network"] = network_maps(args.net, cfg, images, progress=not args.quiet)
    if args.cache:
        out["cache"] = cache_maps(args.cache, args.split, cfg, dataset, indices, images.shape[-1])
    return out


def _show_or_score(args: argparse.Namespace, cfg) -> int:
    import numpy as np

    from selfsup.data.datasets import build_dataset
    from selfsup.engine.saliency import dataset_images
    from selfsup.errors import ConfigError
    from selfsup.eval.plots import plot_saliency_grid
    from selfsup.eval.saliency import ground_truth_maps, photo_images, score_maps

    show = args.saliency_command == "show"
    if not (args.methods or args.net or args.cache):
        raise ConfigError(f"saliency {args.saliency_command}: nothing to {args.saliency_command}; {SOURCES_HELP}")
    if args.out:  # before any work: a PNG / JSON file path whose folder can be written
        from selfsup.metafiles import check_output_file

        args.out = str(check_output_file(Path(args.out), "--out"))
    if show and args.photos:
        images = photo_images(args.images, args.size)
        maps = _maps(args, cfg, None, np.arange(len(images)), images)
        png = plot_saliency_grid(images, maps, Path(args.out), title="saliency on the scikit-image photos",
                                 threshold=cfg.saliency.threshold)
        print(f"saliency show: {png}")
        return 0
    dataset = build_dataset(cfg.data, args.split)
    count = args.images if show else args.limit
    if count < 1:
        raise ConfigError(f"--{'images' if show else 'limit'} must be >= 1, got {count}")
    indices = np.arange(min(count, len(dataset)))
    images = dataset_images(dataset, indices, dataset.image_size)
    maps = _maps(args, cfg, dataset, indices, images)
    if show:
        if getattr(dataset, "has_masks", False):
            maps = {"ground truth": ground_truth_maps(dataset, indices), **maps}
        png = plot_saliency_grid(images, maps, Path(args.out), title=f"saliency on {cfg.data.dataset} ({args.split})",
                                 threshold=cfg.saliency.threshold)
        print(f"saliency show: {png}")
        return 0
    if not getattr(dataset, "has_masks", False):
        raise ConfigError(f"saliency score needs ground-truth masks; data.dataset={cfg.data.dataset} has none")
    scores = score_maps(maps, dataset, indices)
    print(f"saliency scores on {len(indices)} {args.split} images of {cfg.data.dataset} (beta^2 = 0.3):")
    print(f"{'source':10s} {'F-beta':>7s} {'maxF':>7s} {'MAE':>7s} {'IoU':>7s}")
    for name, s in scores.items():
        print(f"{name:10s} {s['f_beta']:7.3f} {s['max_f_beta']:7.3f} {s['mae']:7.3f} {s['iou']:7.3f}")
    if args.out:
        from selfsup.fileio import atomic_write_bytes

        atomic_write_bytes(Path(args.out), (json.dumps({"images": int(len(indices)), "split": args.split,
                                                         "scores": scores}, indent=2) + "\n").encode())
    return 0
