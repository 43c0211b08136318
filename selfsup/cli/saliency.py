"""``selfsup saliency fit | predict | show | score``: RELICv2's unsupervised saliency masks from the command line
(:mod:`selfsup.saliency`: :mod:`~selfsup.saliency.fit` fits, :mod:`~selfsup.saliency.predict` predicts,
:mod:`~selfsup.saliency.sources` shows and scores)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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
    from selfsup.saliency.fit import fit_saliency

    summary = fit_saliency(cfg, progress=not args.quiet)
    print(f"saliency fit: {summary['fit_images']} images, {summary['seconds']:.0f} s; network: "
          f"{Path(cfg.out) / 'saliency_net.safetensors'}; summary: {Path(cfg.out) / 'saliency.json'}")
    return 0


def _predict(args: argparse.Namespace, cfg) -> int:
    from selfsup.saliency.cache import check_writable
    from selfsup.saliency.predict import predict_cache

    net_dir = Path(args.net) if Path(args.net).is_dir() else Path(args.net).parent
    out = Path(args.out) if args.out else net_dir / "masks"
    check_writable(out, args.split, "--out")  # before any work (predict_cache checks it again)
    res = predict_cache(cfg, args.net, out, args.split, progress=not args.quiet)
    print(f"saliency predict: {res['images']} masks at {res['images_per_s']:.0f} images/s, "
          f"{100 * res['usable_fraction']:.1f}% with >= {100 * cfg.views.mask_min_fraction:.0f}% foreground"
          + (f", {res['skipped']} unreadable images left empty" if res["skipped"] else "")
          + f"; cache: {res['path']} (use views.mask_source=cache views.mask_cache={out})")
    return 0


def _show_or_score(args: argparse.Namespace, cfg) -> int:
    from selfsup.errors import ConfigError
    from selfsup.saliency.sources import Sources

    sources = Sources(args.methods, args.net, args.cache, args.split)
    if sources.empty():
        raise ConfigError(f"saliency {args.saliency_command}: nothing to {args.saliency_command}; {SOURCES_HELP}")
    if args.out:  # before any work: a PNG / JSON file path whose folder can be written
        from selfsup.metafiles import check_output_file

        args.out = str(check_output_file(Path(args.out), "--out"))
    if args.saliency_command == "show":
        return _show(args, cfg, sources)
    return _score(args, cfg, sources)


def _show(args: argparse.Namespace, cfg, sources) -> int:
    from selfsup.eval.plots import plot_saliency_grid
    from selfsup.saliency.sources import show_maps

    images, maps, title = show_maps(sources, cfg, args.images, photos=args.photos, size=args.size,
                                    progress=not args.quiet)
    png = plot_saliency_grid(images, maps, Path(args.out), title=title, threshold=cfg.saliency.threshold)
    print(f"saliency show: {png}")
    return 0


def _score(args: argparse.Namespace, cfg, sources) -> int:
    from selfsup.saliency.sources import score_sources

    result = score_sources(sources, cfg, args.limit, progress=not args.quiet)
    print(f"saliency scores on {result['images']} {args.split} images of {cfg.data.dataset} (beta^2 = 0.3):")
    print(f"{'source':10s} {'F-beta':>7s} {'maxF':>7s} {'MAE':>7s} {'IoU':>7s}")
    for name, s in result["scores"].items():
        print(f"{name:10s} {s['f_beta']:7.3f} {s['max_f_beta']:7.3f} {s['mae']:7.3f} {s['iou']:7.3f}")
    if args.out:
        from selfsup.fileio import atomic_write_bytes

        atomic_write_bytes(Path(args.out), (json.dumps(result, indent=2) + "\n").encode())
    return 0
