"""Fashion-MNIST method zoo: every method pretrained for the same wall-clock budget, then linear probe and kNN;
and DINO with the default multi-crop against DINO with SSLight's view sampling (SSLight Table 2's direction).

    .venv/bin/python benchmarks/fmnist_methods.py --minutes 3 [--only dino_fmnist,dino_fmnist_sslight] [key=value ...]
    .venv/bin/python benchmarks/fmnist_methods.py --steps 420 --only dino_fmnist,dino_fmnist_sslight   # equal steps
    .venv/bin/python benchmarks/fmnist_methods.py --data shapes --steps 312  # the *_shapes recipes on the built-in data

Each method runs its small CPU recipe ``selfsup/recipes/<method>_fmnist.yaml`` (DINO + SSLight:
``dino_fmnist_sslight``), the same backbone (``convnet_tiny``), batch and optimiser family, with the schedule length
calibrated so that its cosine schedules finish inside the budget (a short timed run first; see
``common.calibrated_steps``). A random-init backbone of the same architecture is the baseline of the same run.
``--data shapes`` screens the ``<method>_shapes`` recipes on the built-in data instead (there is no SSLight DINO variant
for it). ``--steps N`` trains every method for the same number of steps instead (the comparison SSLight makes: equal
epochs, not equal time). Results go to ``benchmarks/results/`` as JSON, a bar chart as PNG, and the printed Markdown
table is what ``benchmarks/RESULTS.md`` records.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import calibrated_steps, machine, probes  # noqa: E402

from selfsup.config import load_config  # noqa: E402
from selfsup.data.view_stats import view_statistics  # noqa: E402
from selfsup.engine.trainer import pretrain  # noqa: E402
from selfsup.eval.plots import plot_bars  # noqa: E402
from selfsup.eval.run import load_backbone, probe_data  # noqa: E402

RUNS = {  # label -> recipe
    "RELICv2": "relicv2_fmnist",
    "RELIC": "relic_fmnist",
    "SimCLR": "simclr_fmnist",
    "BYOL": "byol_fmnist",
    "MoCo-v2 (multi-crop)": "mocov2_fmnist",
    "SwAV": "swav_fmnist",
    "DINO (default multi-crop)": "dino_fmnist",
    "DINO + SSLight views": "dino_fmnist_sslight",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0, help="pretraining budget per method")
    ap.add_argument("--steps", type=int, default=None,
                    help="train every method for exactly this many steps instead of a wall-clock budget (no time cap)")
    ap.add_argument("--data", choices=["fmnist", "shapes"], default="fmnist",
                    help="which family of small recipes: <method>_fmnist or <method>_shapes")
    ap.add_argument("--only", default=None, help="comma-separated recipe names to run (default: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()
    budget = 60 * args.minutes
    tag = f"{args.steps}steps" if args.steps else f"{args.minutes:g}min"
    out = args.out / f"{args.data}_methods_{tag}"
    out.mkdir(parents=True, exist_ok=True)
    runs = {k: v.replace("_fmnist", f"_{args.data}") for k, v in RUNS.items()
            if args.data == "fmnist" or not v.endswith("_sslight")}
    runs = {k: v for k, v in runs.items() if args.only is None or v in args.only.split(",")}
    rows, data = {}, None
    for label, recipe in runs.items():
        cfg = load_config(recipe, [f"out={out / recipe}", "train.progress=false", *args.overrides])
        if args.steps:  # equal steps, no wall-clock cap (the recipe's max_time_s would cut a slow run short)
            cfg.train.steps, cfg.train.max_time_s = args.steps, None
            print(f"{label}: {recipe}, {args.steps} steps", flush=True)
        else:
            steps = calibrated_steps(cfg, budget, out)
            cfg.train.steps, cfg.train.max_time_s = steps, budget
            print(f"{label}: {recipe}, {steps} steps calibrated for {args.minutes:g} min", flush=True)
        run = pretrain(cfg)
        data = data or probe_data(cfg)
        row = probes(cfg, load_backbone(cfg, str(run.out_dir / "backbone.safetensors")), data)
        views = cfg.views.large.count + cfg.views.small.count
        stats = view_statistics(cfg.views, num_images=4096, source_size=cfg.data.image_size)
        row.update(recipe=recipe, steps=run.step, minutes=run.elapsed_s / 60, images_per_s=run.images_per_s,
                   views_per_s=run.images_per_s * views,
                   data_wait=run.data_wait_fraction, final_loss=run.losses[-1], ps_ratio=stats.ps_ratio_mean,
                   views=f"{cfg.views.large.count}x{cfg.views.large.size}"
                         + (f"+{cfg.views.small.count}x{cfg.views.small.size}" if cfg.views.small.count else ""),
                   alpha=getattr(cfg.method, "alpha", None))
        rows[label] = row
        print(f"  linear {row['linear_top1']:.2f}  kNN {row['knn20_top1']:.2f}  {row['images_per_s']:.0f} img/s",
              flush=True)
    # the baseline is the runs' backbone: the overrides of model, data, eval and seed apply to it too
    same = [o for o in args.overrides if o.split("=", 1)[0].split(".")[0] in ("model", "data", "eval", "seed")]
    cfg = load_config(f"relicv2_{args.data}", [f"out={out / 'random'}", *same])
    data = data or probe_data(cfg)
    rows["random init (baseline)"] = probes(cfg, load_backbone(cfg, None), data)

    payload = {"date": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__,
               "machine": machine(load_config(f"relicv2_{args.data}", args.overrides)),
               "command": "python benchmarks/fmnist_methods.py " + " ".join(sys.argv[1:]),
               "budget_min": None if args.steps else args.minutes, "steps": args.steps, "rows": rows}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot_bars({k: {"linear top-1": v["linear_top1"], "kNN top-1": v["knn20_top1"]} for k, v in rows.items()},
              ["linear top-1", "kNN top-1"], out / "methods.png",
              title=f"{'Fashion-MNIST' if args.data == 'fmnist' else 'built-in shapes'}, {cfg.model.backbone}, "
                    f"{tag} pretraining per method")

    print(f"\n{payload['command']}   ({payload['date']}, {payload['machine']})\n")
    print("| method | recipe | views | alpha | mean PS_g/PS_l | steps | minutes | images/s | data wait | "
          "linear top-1 | linear top-5 | kNN k=20 top-1 |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        if "recipe" not in r:
            print(f"| {name} | | | | | | | | | {r['linear_top1']:.2f} | {r['linear_top5']:.2f} "
                  f"| {r['knn20_top1']:.2f} |")
            continue
        ps = f"{r['ps_ratio']:.2f}" if r["ps_ratio"] is not None else "-"
        alpha = "mean" if r["alpha"] is None else f"{r['alpha']:g}"
        print(f"| {name} | {r['recipe']} | {r['views']} | {alpha} | {ps} | {r['steps']} | {r['minutes']:.1f} | "
              f"{r['images_per_s']:.0f} | "
              f"{100 * r['data_wait']:.1f}% | {r['linear_top1']:.2f} | {r['linear_top5']:.2f} | "
              f"{r['knn20_top1']:.2f} |")


if __name__ == "__main__":
    main()
