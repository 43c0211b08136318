"""``selfsup saliency fit | predict | show | score``: RELICv2's unsupervised saliency masks from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

__all__ = ["add_saliency_parser", "run_saliency"]

SOURCES_HELP = ("what to draw or score: the handcrafted methods (--methods rbd,mr,dsr,mc), a fitted network "
                "(--net DIR) and/or a mask cache (--cache DIR)")


def add_saliency_parser(sub, parser_class, add_common, epilog: str) -> None:
    sa = sub.add_parser("saliency", help="RELICv2's unsupervised saliency: fit the network, predict a mask cache, "
                                         "show and score masks")
    ssub = sa.add_subparsers(dest="saliency_command", parser_class=parser_class, metavar="ACTION")
    fit = ssub.add_parser("fit", help="handcrafted maps -> per-method refinement -> fused saliency network "
                                      "(saliency.* settings; writes <out>/saliency_net.safetensors)",
                          epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(fit, "saliency_shapes")
    pr = ssub.add_parser("predict", help="run a fitted network over a dataset split and store its masks as a cache "
                                         "for pretraining (views.mask_source=cache views.mask_cache=DIR)",
                         epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(pr, "saliency_shapes")
    pr.add_argument("--net", required=True, help="a `saliency fit` folder or its saliency_net.safetensors")
    pr.add_argument("--split", default="train", choices=["train", "test"], help="the split to mask (default train)")
    pr.add_argument("--out", "-o", default=None, help="cache folder (default: <net folder>/masks)")
    for name, text in (("show", "a PNG grid: image | mask | masked view for each source (RELICv2 Fig. 4)"),
                       ("score", "F-beta (beta^2 = 0.3), max F-beta, MAE and IoU against the data's ground-truth "
                                 "masks")):
        p = ssub.add_parser(name, help=text, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def _sources(args) -> None:
    from selfsup.errors import ConfigError

    if not (args.methods or args.net or args.cache):
        raise ConfigError(f"saliency {args.saliency_command}: nothing to {args.saliency_command}; {SOURCES_HELP}")


def _method_list(text) -> List[str]:
    from selfsup.data.saliency import handcrafted

    names = [m.strip() for m in (text or "").split(",") if m.strip()]
    for m in names:
        try:
            handcrafted(m)
        except ValueError as exc:
            from selfsup.errors import ConfigError

            raise ConfigError(f"--methods: {exc}") from None
    return names


def _maps(args, cfg, dataset, indices: np.ndarray, images: torch.Tensor, progress: bool) -> Dict[str, torch.Tensor]:
    """Every requested source's maps ``(N, S, S)`` in [0, 1] for ``images`` (uint8 ``(N, 3, S, S)``)."""
    import torch.nn.functional as F

    from selfsup.data.saliency import saliency_maps

    out: Dict[str, torch.Tensor] = {}
    for m in _method_list(args.methods):
        maps, ips = saliency_maps(images.numpy(), m, workers=cfg.saliency.workers)
        print(f"{m}: {len(images)} maps at {ips:.1f} images/s")
        out[m] = torch.from_numpy(maps).float() / 255.0
    if args.net:
        from selfsup.engine.saliency import load_saliency_net, predict_saliency

        net, meta = load_saliency_net(args.net, cfg)
        x = images
        side = meta["image_size"]
        if x.shape[-1] != side:
            x = F.interpolate(x.float(), size=(side, side), mode="bilinear", antialias=True,
                              align_corners=False).round().clamp(0, 255).to(torch.uint8)
        p = predict_saliency(net, x, meta["mean"], meta["std"], progress=progress)
        if p.shape[-1] != images.shape[-1]:
            p = F.interpolate(p.unsqueeze(1), size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        out["network"] = p
    if args.cache:
        from selfsup.data.masks import MaskCache, dataset_fingerprint

        if dataset is None:
            from selfsup.errors import ConfigError

            raise ConfigError("--cache needs the dataset it was made for, not --photos")
        cache = MaskCache.open(args.cache, args.split, dataset_fingerprint(dataset, cfg.data.dataset, args.split))
        out["cache"] = cache.get(torch.as_tensor(indices), images.shape[-1], torch.device("cpu"))[:, 0].float() / 255
    return out


def run_saliency(args, parser) -> int:
    from selfsup.config import load_config
    from selfsup.data.datasets import build_dataset
    from selfsup.engine.saliency import dataset_images, dataset_images_masks
    from selfsup.errors import ConfigError

    if args.saliency_command is None:
        parser.parse_args(["saliency", "--help"])
    progress = not args.quiet
    cfg = load_config(args.recipe, args.overrides)
    if args.saliency_command == "fit":
        from selfsup.engine.saliency import fit_saliency

        summary = fit_saliency(cfg, progress=progress)
        print(f"saliency fit: {summary['fit_images']} images, {summary['seconds']:.0f} s; network: "
              f"{Path(cfg.out) / 'saliency_net.safetensors'}; summary: {Path(cfg.out) / 'saliency.json'}")
        return 0
    if args.saliency_command == "predict":
        from selfsup.data.masks import MaskCache
        from selfsup.engine.saliency import predict_cache

        net_dir = Path(args.net) if Path(args.net).is_dir() else Path(args.net).parent
        out = Path(args.out) if args.out else net_dir / "masks"
        MaskCache.check_writable(out, args.split, "--out")  # before any work (predict_cache checks it again)
        res = predict_cache(cfg, args.net, out, args.split, progress=progress)
        print(f"saliency predict: {res['images']} masks at {res['images_per_s']:.0f} images/s, "
              f"{100 * res['usable_fraction']:.1f}% with >= {100 * cfg.views.mask_min_fraction:.0f}% foreground"
              + (f", {res['skipped']} unreadable images left empty" if res["skipped"] else "")
              + f"; cache: {res['path']} (use views.mask_source=cache views.mask_cache={out})")
        return 0

    _sources(args)
    if args.out:  # before any work: a PNG / JSON file path whose folder can be written
        from selfsup.metafiles import check_output_file

        args.out = str(check_output_file(Path(args.out), "--out"))
    if args.saliency_command == "show" and args.photos:
        from selfsup.data.shapes import PHOTO_NAMES, _photo_arrays
        import torch.nn.functional as F

        photos = []
        for name, a in zip(PHOTO_NAMES, _photo_arrays()):
            t = torch.from_numpy(a).permute(2, 0, 1).float().unsqueeze(0)
            side = min(t.shape[-2:])
            top, left = (t.shape[-2] - side) // 2, (t.shape[-1] - side) // 2
            t = t[..., top:top + side, left:left + side]
            photos.append(F.interpolate(t, size=(args.size, args.size), mode="bilinear", antialias=True,
                                        align_corners=False).round().clamp(0, 255).to(torch.uint8)[0])
        images = torch.stack(photos[:args.images])
        maps = _maps(args, cfg, None, np.arange(len(images)), images, progress)
        from selfsup.eval.plots import plot_saliency_grid

        png = plot_saliency_grid(images, maps, Path(args.out), title="saliency on the scikit-image photos",
                                 threshold=cfg.saliency.threshold)
        print(f"saliency show: {png}")
        return 0
    dataset = build_dataset(cfg.data, args.split)
    count = args.images if args.saliency_command == "show" else args.limit
    if count < 1:
        raise ConfigError(f"--{'images' if args.saliency_command == 'show' else 'limit'} must be >= 1, got {count}")
    indices = np.arange(min(count, len(dataset)))
    images = dataset_images(dataset, indices, dataset.image_size)
    maps = _maps(args, cfg, dataset, indices, images, progress)
    if args.saliency_command == "show":
        from selfsup.eval.plots import plot_saliency_grid

        if getattr(dataset, "has_masks", False):
            maps = {"ground truth": torch.from_numpy(dataset_images_masks(dataset, indices, dataset.image_size))
                    .float() / 255.0, **maps}
        png = plot_saliency_grid(images, maps, Path(args.out), title=f"saliency on {cfg.data.dataset} ({args.split})",
                                 threshold=cfg.saliency.threshold)
        print(f"saliency show: {png}")
        return 0
    if not getattr(dataset, "has_masks", False):
        raise ConfigError(f"saliency score needs ground-truth masks; data.dataset={cfg.data.dataset} has none")
    from selfsup.metrics.saliency import saliency_scores

    gt = dataset_images_masks(dataset, indices, dataset.image_size)
    scores = {name: saliency_scores((m.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), gt)
              for name, m in maps.items()}
    print(f"saliency scores on {len(indices)} {args.split} images of {cfg.data.dataset} (beta^2 = 0.3):")
    print(f"{'source':10s} {'F-beta':>7s} {'maxF':>7s} {'MAE':>7s} {'IoU':>7s}")
    for name, s in scores.items():
        print(f"{name:10s} {s['f_beta']:7.3f} {s['max_f_beta']:7.3f} {s['mae']:7.3f} {s['iou']:7.3f}")
    if args.out:
        from selfsup.fileio import atomic_write_bytes

        atomic_write_bytes(Path(args.out), (json.dumps({"images": int(len(indices)), "split": args.split,
                                                         "scores": scores}, indent=2) + "\n").encode())
    return 0
