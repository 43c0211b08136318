"""Hyper-parameter sweep of one recipe: pretrain every variant for the same steps (or minutes), then probe each the same
way (L-BFGS linear probe on all training images + kNN k=20), next to the random-init backbone of the same run.

    .venv/bin/python benchmarks/sweep.py relicv2_fmnist --steps 300 \
        --grid optim.trust_coefficient=0.001,0.02 --grid optim.base_lr=0.5,1.0        # cartesian product: 4 variants
    .venv/bin/python benchmarks/sweep.py relicv2_fmnist --minutes 5 \
        --variant "optim.name=adamw optim.base_lr=2e-3" --variant "optim.trust_coefficient=0.02"   # explicit variants

``--grid KEY=V1,V2,...`` axes multiply; ``--variant "k=v k=v"`` adds one variant each (both may be combined: every
variant is crossed with the grid). Trailing ``key=value`` arguments apply to every variant. ``--minutes`` calibrates the
step count of each variant to fill the budget (``common.calibrated_steps``), so slower variants get fewer steps, as a
user with a fixed budget would see. The printed Markdown table is what ``benchmarks/RESULTS.md`` records; the rows are
also written to ``<out>/results.json`` as they finish, so a long sweep can be read while it runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import calibrated_steps, machine, probes  # noqa: E402

from selfsup.config import load_config  # noqa: E402
from selfsup.engine.trainer import pretrain  # noqa: E402
from selfsup.eval.run import load_backbone, probe_data  # noqa: E402


def variants(grid, explicit):
    axes = []
    for spec in grid:
        key, sep, values = spec.partition("=")
        if not sep or not values:
            raise SystemExit(f"--grid {spec!r} must look like key=v1,v2")
        axes.append([f"{key}={v}" for v in values.split(",")])
    base = [v.split() for v in explicit] or [[]]
    return [[*b, *combo] for b in base for combo in itertools.product(*axes)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe")
    budget = ap.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=int, help="train every variant for this many steps")
    budget.add_argument("--minutes", type=float, help="calibrate every variant's steps to this wall-clock budget")
    ap.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2")
    ap.add_argument("--variant", action="append", default=[], metavar='"K=V K=V"')
    ap.add_argument("--no-baseline", action="store_true", help="skip the random-init row")
    ap.add_argument("--out", type=Path, default=Path("/tmp/selfsup-sweeps"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()

    name = Path(args.recipe).stem if args.recipe.endswith((".yaml", ".yml")) else args.recipe  # a recipe file's path
    tag = f"{name}_{args.steps}steps" if args.steps else f"{name}_{args.minutes:g}min"
    out = args.out / tag
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/sweep.py " + " ".join(
        f'"{a}"' if " " in a else a for a in sys.argv[1:])
    payload = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": command,
               "machine": machine(load_config(args.recipe, args.overrides)), "rows": []}
    data = None
    for i, var in enumerate(variants(args.grid, args.variant)):
        cfg = load_config(args.recipe, [f"out={out / f'v{i}'}", "train.progress=false", *args.overrides, *var])
        if args.steps:  # a variant that sets train.steps itself keeps it (e.g. half the batch, twice the steps)
            own = any(v.startswith("train.steps=") for v in var)
            cfg.train.steps, cfg.train.max_time_s = (cfg.train.steps if own else args.steps), None
        else:
            cfg.train.steps, cfg.train.max_time_s = calibrated_steps(cfg, 60 * args.minutes, out), 60 * args.minutes
        t0 = time.perf_counter()
        run = pretrain(cfg)
        minutes = (time.perf_counter() - t0) / 60
        data = data or probe_data(cfg)
        row = probes(cfg, load_backbone(cfg, str(run.out_dir / "backbone.safetensors")), data)
        row.update(variant=" ".join(var) or "(recipe)", steps=run.step, minutes=round(minutes, 2),
                   images_per_s=round(run.images_per_s), final_loss=run.losses[-1] if run.losses else None)
        payload["rows"].append(row)
        (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
        print(f"[{i}] {row['variant']}: linear {row['linear_top1']:.2f} kNN {row['knn20_top1']:.2f} "
              f"({row['steps']} steps, {row['minutes']:.1f} min, {row['images_per_s']} img/s, "
              f"loss {row['final_loss']:.3f})", flush=True)
    if not args.no_baseline:
        cfg = load_config(args.recipe, [f"out={out / 'random'}", *args.overrides])
        row = probes(cfg, load_backbone(cfg, None), data or probe_data(cfg))
        row.update(variant="random init (baseline)")
        payload["rows"].append(row)
        (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")

    print(f"\n```bash\n{command}   # {payload['date']}, {payload['machine']}\n```\n")
    print("| variant | steps | minutes | images/s | final loss | linear top-1 | kNN k=20 top-1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in payload["rows"]:
        if "steps" not in r:
            print(f"| {r['variant']} | | | | | {r['linear_top1']:.2f} | {r['knn20_top1']:.2f} |")
            continue
        loss = f"{r['final_loss']:.3f}" if r["final_loss"] is not None else ""
        print(f"| `{r['variant']}` | {r['steps']} | {r['minutes']:.1f} | {r['images_per_s']} | {loss} | "
              f"{r['linear_top1']:.2f} | {r['knn20_top1']:.2f} |")


if __name__ == "__main__":
    main()
