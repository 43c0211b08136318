"""The 224 px multi-crop data path on the CPU, one core: selfsup's batched view renderer against torchvision v2
per-image transforms and lightly 1.6's multi-crop transform, in the same process on the same images.

Two view sets: RELICv2's 4 x 224 + 2 x 96 (``relicv2_imagenet_r50``) and SSLight's 2 x 224 + 6 x 96
(``sslight_dino_cnn_baseline``). Sources: scikit-image's bundled photos (300x451 to 1411x1411), JPEG-encoded at
quality 90, each decoded and fitted to a short side of 256 with its aspect kept (selfsup's whole-image source).

* ``views``: from the fitted uint8 images to normalised float views (the part the libraries do differently);
* ``decode+views``: from the JPEG bytes (torchvision's decoder for selfsup and torchvision, Pillow for lightly, which
  takes PIL images), resize to 256, then the views.

The per-view augmentations are each library's own: selfsup and torchvision run the recipe's (BYOL's colour jitter
0.8, grayscale 0.2, the recipe's per-view blur and solarize, flip, normalise); lightly's multi-crop transform is
``SwaVTransform`` with the same crop sizes, counts and scales (its jitter 0.8, grayscale 0.2, blur 0.5, no solarize),
lightly's only transform with per-size crop counts. ``torch.set_num_threads(1)``: rates are per core.

    .venv/bin/python benchmarks/data_path.py [--images 64] [--batch 32] [--json OUT]

Needs ``pip install lightly==1.6.0`` for the lightly column (skipped, and said, if it is not installed).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import selfsup.methods  # noqa: E402,F401  (registers the methods: load_config knows their arguments)
from selfsup.config import load_config  # noqa: E402
from selfsup.data.base import pad_stack  # noqa: E402
from selfsup.data.images import decode_image_bytes, fit_image  # noqa: E402
from selfsup.data.views import MultiViewSampler  # noqa: E402

RECIPES = {"relicv2 4x224+2x96": "relicv2_imagenet_r50", "sslight 2x224+6x96": "sslight_dino_cnn_baseline"}
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "colorwheel"]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def jpeg_sources(n: int):
    import skimage.data
    from PIL import Image

    out = []
    for k in range(n):
        arr = getattr(skimage.data, PHOTOS[k % len(PHOTOS)])()
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        buf = io.BytesIO()
        Image.fromarray(arr[..., :3]).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def torchvision_views(cfg):
    """One torchvision v2 pipeline per view, as the recipe defines it (per image, called in Python)."""
    from torchvision.transforms import v2

    v = cfg.views
    pipes = []
    for gc in (v.large, v.small):
        for k in range(gc.count):
            blur_p = gc.blur_p[k % len(gc.blur_p)]
            sol_p = gc.solarize_p[k % len(gc.solarize_p)]
            kernel = max(3, int(gc.size * v.blur_kernel_frac) // 2 * 2 + 1)
            pipes.append(v2.Compose([
                v2.RandomResizedCrop(gc.size, scale=(gc.scale_min[k % len(gc.scale_min)], gc.scale_max),
                                     ratio=tuple(v.ratio), antialias=True),
                v2.RandomHorizontalFlip(v.flip_p),
                v2.RandomApply([v2.ColorJitter(v.brightness, v.contrast, v.saturation, v.hue)], p=v.jitter_p),
                v2.RandomGrayscale(v.grayscale_p),
                v2.RandomApply([v2.GaussianBlur(kernel, sigma=tuple(v.blur_sigma))], p=blur_p),
                v2.RandomSolarize(128, p=sol_p),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(MEAN, STD),
            ]))
    return pipes


def lightly_transform(cfg):
    from lightly.transforms import SwaVTransform

    v = cfg.views
    return SwaVTransform(crop_sizes=(v.large.size, v.small.size), crop_counts=(v.large.count, v.small.count),
                         crop_min_scales=(v.large.scale_min[0], v.small.scale_min[0]),
                         crop_max_scales=(v.large.scale_max, v.small.scale_max))


def rate(fn, views_per_call: int, min_s: float) -> float:
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_s:
        fn()
        n += 1
    return n * views_per_call / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64, help="source images (photos cycled)")
    ap.add_argument("--batch", type=int, default=32, help="selfsup's batch (rendered at once)")
    ap.add_argument("--seconds", type=float, default=8.0, help="minimum time per measurement")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from PIL import Image

    blobs = jpeg_sources(args.images)
    fitted = [fit_image(decode_image_bytes(b, "photo"), 256, 3.0) for b in blobs]
    pils = [Image.fromarray(t.permute(1, 2, 0).numpy()) for t in fitted]
    try:
        import lightly  # noqa: F401
        have_lightly = True
    except ImportError:
        have_lightly = False
        print("lightly is not installed: its column is skipped (pip install lightly==1.6.0)")
    results = {}
    for label, recipe in RECIPES.items():
        cfg = load_config(recipe, ["views.mask_p=0"])
        sampler = MultiViewSampler(cfg.views, MEAN, STD)
        nviews = cfg.views.large.count + cfg.views.small.count
        g = torch.Generator().manual_seed(0)
        pos = {"i": 0}

        def batch_of(items):
            i = pos["i"]
            pos["i"] = (i + args.batch) % len(items)
            return [items[(i + k) % len(items)] for k in range(args.batch)]

        def ours_views():
            imgs = batch_of(fitted)
            sizes = torch.tensor([tuple(t.shape[-2:]) for t in imgs])
            sampler(pad_stack(imgs), None, sampler.sample_params(len(imgs), g), sizes)

        def ours_full():
            imgs = [fit_image(decode_image_bytes(b, "photo", min_side=256), 256, 3.0) for b in batch_of(blobs)]
            sizes = torch.tensor([tuple(t.shape[-2:]) for t in imgs])
            sampler(pad_stack(imgs), None, sampler.sample_params(len(imgs), g), sizes)

        pipes = torchvision_views(cfg)

        def tv_views():
            for im in batch_of(fitted):
                for p in pipes:
                    p(im)

        def tv_full():
            from torchvision.io import decode_jpeg
            from torchvision.transforms.v2 import functional as TF

            for b in batch_of(blobs):
                im = TF.resize(decode_jpeg(torch.frombuffer(bytearray(b), dtype=torch.uint8)), [256], antialias=True)
                for p in pipes:
                    p(im)

        row = {"selfsup views": rate(ours_views, args.batch * nviews, args.seconds),
               "torchvision views": rate(tv_views, args.batch * nviews, args.seconds),
               "selfsup decode+views": rate(ours_full, args.batch * nviews, args.seconds),
               "torchvision decode+views": rate(tv_full, args.batch * nviews, args.seconds)}
        if have_lightly:
            lt = lightly_transform(cfg)

            def lt_views():
                for im in batch_of(pils):
                    lt(im)

            def lt_full():
                for b in batch_of(blobs):
                    im = Image.open(io.BytesIO(b)).convert("RGB")
                    w, h = im.size
                    s = 256 / min(w, h)
                    lt(im.resize((round(w * s), round(h * s)), Image.BILINEAR))

            row["lightly views"] = rate(lt_views, args.batch * nviews, args.seconds)
            row["lightly decode+views"] = rate(lt_full, args.batch * nviews, args.seconds)
        results[label] = row
        print(f"{label}: " + ", ".join(f"{k} {v:.0f}/s" for k, v in row.items()), flush=True)

    print(f"\nviews/s on one core ({platform.machine()}, torch {torch.__version__}), {args.images} photos, short side "
          f"256, selfsup batch {args.batch}\n")
    cols = ["views", "decode+views"]
    print("| view set | part | selfsup | torchvision v2 | lightly 1.6 | selfsup / torchvision | selfsup / lightly |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, row in results.items():
        for c in cols:
            s, t, lt = row[f"selfsup {c}"], row[f"torchvision {c}"], row.get(f"lightly {c}")
            print(f"| {label} | {c} | {s:.0f} | {t:.0f} | {lt:.0f} | {s / t:.1f}x | {s / lt:.1f}x |" if lt else
                  f"| {label} | {c} | {s:.0f} | {t:.0f} | - | {s / t:.1f}x | - |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": platform.machine(), "torch": torch.__version__,
                                               "images": args.images, "batch": args.batch, "results": results},
                                              indent=1))


if __name__ == "__main__":
    main()
