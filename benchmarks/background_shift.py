"""RELICv2's central claim at small scale: does background masking reduce reliance on spurious backgrounds?

Train on the built-in data where every class has its own background family (``data.spurious=1.0``), then probe the
frozen backbone (L-BFGS linear probe on the spurious training images, kNN k=20) on two test sets: the same
correlation (``test_spurious=1.0``, in distribution) and backgrounds shuffled across classes (``test_spurious=0.0``,
the shift). Arms, same steps each (same seed):

* ``p_m=0``: RELICv2 without masking (also the saliency pipeline's self-supervised encoder);
* ``saliency``: p_m = 0.1 with masks from the unsupervised pipeline (``saliency fit`` with the ``p_m=0`` backbone as
  encoder on the same unlabelled training images, then ``saliency predict``);
* ``ground truth``: p_m = 0.1 with the data's true foreground masks (the upper bound on mask quality);
* the random-init backbone.

A third probe is trained and tested on shuffled backgrounds (``shape``): what the representation holds about shape
when the probe cannot lean on the background.

    .venv/bin/python benchmarks/background_shift.py --steps 600 --out /tmp/bgshift train.threads=2

Also records the saliency scores (handcrafted maps, refined labels and the fused network against ground truth).
Writes ``<out>/results.json`` as arms finish and prints the Markdown table ``benchmarks/RESULTS.md`` records.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import machine, probes  # noqa: E402

from selfsup.config import load_config  # noqa: E402
from selfsup.engine.trainer import pretrain  # noqa: E402
from selfsup.eval.run import load_backbone, probe_data  # noqa: E402
from selfsup.saliency.fit import fit_saliency  # noqa: E402
from selfsup.saliency.predict import predict_cache  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--mask-p", type=float, default=0.1)
    ap.add_argument("--recipe", default="relicv2_shapes_bg")
    ap.add_argument("--saliency-recipe", default="saliency_shapes")
    ap.add_argument("--arms", default="p0,saliency,gt,random", help="comma-separated subset of p0,saliency,gt,random")
    ap.add_argument("--out", type=Path, default=Path("/tmp/selfsup-bgshift"))
    ap.add_argument("--reprobe", action="store_true", help="probe arms already in results.json again")
    ap.add_argument("--results", default="results.json", help="file name under --out (two jobs at once: two files)")
    ap.add_argument("--saliency-overrides", nargs="*", default=[], help="key=value for the saliency fit only")
    ap.add_argument("overrides", nargs="*", help="key=value for every run (e.g. train.threads=2)")
    args = ap.parse_intermixed_args()
    arms = args.arms.split(",")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    common = ["data.spurious=1.0", f"train.steps={args.steps}", "train.max_time_s=null", "train.progress=false",
              *args.overrides]
    results_path = out / args.results
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results["command"] = " ".join(sys.argv)
    results["date"] = time.strftime("%Y-%m-%d %H:%M")
    results["machine"] = machine()

    def save() -> None:
        results_path.write_text(json.dumps(results, indent=2) + "\n")

    def probe(name: str, run_dir) -> None:
        if name in results.get("arms", {}) and not args.reprobe:
            return
        row = {}
        # (probe-training backgrounds, test backgrounds): the pretraining's correlation, then shuffled at test time,
        # then shuffled for both (what the representation knows about shape when the probe cannot use background)
        for key, train_sp, test_sp in (("in_dist", 1.0, 1.0), ("shifted", 1.0, 0.0), ("shape", 0.0, 0.0)):
            cfg = load_config(args.recipe, [*common, f"data.spurious={train_sp}", f"data.test_spurious={test_sp}"])
            backbone = load_backbone(cfg, str(run_dir) if run_dir else None)
            r = probes(cfg, backbone, probe_data(cfg))
            row[f"{key}_linear"], row[f"{key}_knn"] = r["linear_top1"], r["knn20_top1"]  # already in %
        results.setdefault("arms", {})[name] = row
        save()
        print(name, {k: round(v, 2) for k, v in row.items()}, flush=True)

    def train(name: str, extra) -> Path:
        run = out / name
        cfg = load_config(args.recipe, [*common, *extra, f"out={run}"])
        t0 = time.perf_counter()
        res = pretrain(cfg, resume="auto" if (run / "last.ckpt").is_file() else None)
        results.setdefault("train", {})[name] = {"steps": res.step, "seconds": time.perf_counter() - t0,
                                                 "images_per_s": res.images_per_s}
        return run

    p0 = train("p0", ["views.mask_p=0"])
    if "p0" in arms:
        probe("p_m=0", p0)
    if "saliency" in arms:
        sal = out / "saliency"
        cache = out / "masks"
        if not (cache / "train.json").is_file():  # the cache's fingerprint, written last
            cfg = load_config(args.saliency_recipe, [*common, f"saliency.encoder={p0}", f"out={sal}",
                                                     *args.saliency_overrides])
            results["saliency"] = fit_saliency(cfg, progress=False)
            results["cache"] = predict_cache(load_config(args.recipe, common), sal, cache, "train", progress=False)
            save()
        probe(f"p_m={args.mask_p} saliency masks",
              train(f"saliency_masks_p{args.mask_p}", [f"views.mask_p={args.mask_p}", "views.mask_source=cache",
                                                       f"views.mask_cache={cache}"]))
    if "gt" in arms:
        probe(f"p_m={args.mask_p} ground-truth masks",
              train(f"gt_masks_p{args.mask_p}", [f"views.mask_p={args.mask_p}", "views.mask_source=dataset"]))
    if "random" in arms:
        probe("random init", None)

    print(f"\n{results['command']}   # {results['date']}, {results['machine']}\n")
    print("| arm | linear, same backgrounds | linear, shuffled backgrounds | linear, shape only | kNN same | "
          "kNN shuffled | kNN shape only |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.get("arms", {}).items():
        print(f"| {name} | " + " | ".join(f"{r.get(k, float('nan')):.2f}" for k in (
            "in_dist_linear", "shifted_linear", "shape_linear", "in_dist_knn", "shifted_knn", "shape_knn")) + " |")


if __name__ == "__main__":
    main()
