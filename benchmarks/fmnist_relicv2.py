"""Fashion-MNIST benchmark: RELICv2 pretraining for a fixed wall-clock budget, then linear probe and kNN, next to
a random-init backbone, raw pixels, and supervised training of the same backbone for the same budget.

    .venv/bin/python benchmarks/fmnist_relicv2.py --minutes 10 [key=value overrides of relicv2_fmnist]

The schedule length is calibrated so that the cosine schedules finish inside the budget: a short timed run measures
steps/s on this machine first (the same for the supervised baseline). Results go to benchmarks/results/ as JSON, and the
printed Markdown table is what benchmarks/RESULTS.md records.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import calibrated_steps, probes, raw_pixel_probes, supervised  # noqa: E402

from selfsup.config import load_config  # noqa: E402
from selfsup.engine.trainer import pretrain  # noqa: E402
from selfsup.eval.run import load_backbone, probe_data  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="pretraining (and supervised) budget")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    budget = 60 * args.minutes
    out = args.out / f"fmnist_relicv2_{args.minutes:g}min"
    out.mkdir(parents=True, exist_ok=True)
    import selfsup.methods  # noqa: F401

    cfg = load_config("relicv2_fmnist", [f"out={out / 'run'}", *args.overrides])
    steps = calibrated_steps(cfg, budget, out)
    cfg.train.steps, cfg.train.max_time_s = steps, budget
    print(f"RELICv2 pretraining: {steps} steps calibrated for {args.minutes:g} min")
    run = pretrain(cfg)
    data = probe_data(cfg)
    rows = {"RELICv2 (pretrained)": probes(cfg, load_backbone(cfg, str(out / "run" / "backbone.safetensors")), data),
            "random init": probes(cfg, load_backbone(cfg, None), data)}

    rows["raw pixels (784-d)"] = raw_pixel_probes(cfg, data)

    sup = supervised(cfg, data, budget)
    sup_backbone = sup.pop("backbone")
    sup.pop("snapshots")
    rows["supervised, same budget (features)"] = probes(cfg, sup_backbone, data)
    rows["supervised, same budget (features)"]["classifier_top1"] = sup["classifier_top1"]

    payload = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {torch.get_num_threads()} "
               f"threads, {platform.processor() or 'cpu'}", "torch": torch.__version__,
               "command": "python benchmarks/fmnist_relicv2.py " + " ".join(sys.argv[1:]),
               "budget_min": args.minutes, "pretrain_steps": run.step, "pretrain_images_per_s": run.images_per_s,
               "pretrain_views_per_s": run.images_per_s * (cfg.views.large.count + cfg.views.small.count),
               "data_wait_fraction": run.data_wait_fraction, "pretrain_elapsed_s": run.elapsed_s,
               "final_loss": run.losses[-1] if run.losses else math.nan, "supervised": sup, "rows": rows}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")

    print(f"\n{payload['command']}   ({payload['date']}, {payload['machine']})")
    print(f"pretraining: {run.step} steps in {run.elapsed_s / 60:.1f} min, {run.images_per_s:.0f} images/s "
          f"({payload['pretrain_views_per_s']:.0f} views/s), data wait {100 * run.data_wait_fraction:.1f}%")
    print(f"supervised: {sup['steps']} steps in {sup['elapsed_s'] / 60:.1f} min, classifier top-1 "
          f"{sup['classifier_top1']:.2f}%\n")
    print("| representation | linear top-1 | linear top-5 | kNN k=20 top-1 |")
    print("|---|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['linear_top1']:.2f} | {r['linear_top5']:.2f} | {r['knn20_top1']:.2f} |")


if __name__ == "__main__":
    main()
