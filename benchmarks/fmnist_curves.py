"""Learning curves on Fashion-MNIST: probe accuracy against wall-clock minutes of pretraining, for every method, next
to raw pixels, the random-init backbone and the same backbone trained with labels for the same minutes.

    .venv/bin/python benchmarks/fmnist_curves.py                        # 5/15/30 min per method, 60 for RELICv2
    .venv/bin/python benchmarks/fmnist_curves.py --minutes 1 2 --only relicv2_fmnist --long 3   # a quick check
    .venv/bin/python benchmarks/fmnist_curves.py --resume --out DIR     # go on after an interruption (per curve)

Each method runs its shipped recipe ``selfsup/recipes/<method>_fmnist.yaml`` once, with the step schedule calibrated to
the longest budget (``--minutes``, last value) and backbone snapshots after each shorter budget
(``train.snapshot_minutes``): one run, read at several times, is the learning curve a user of that recipe sees. RELICv2
also runs ``--long`` minutes (its own schedule, snapshots at every budget). The supervised baseline trains the same
backbone with labels for the longest budget of the run (``--long`` if given) with copies at every budget. Every
representation is probed the same way: an L-BFGS linear probe on the frozen features of all 60,000 training images and a
kNN (k = 20) vote, reported on the 10,000 test images. Results go to ``<out>/results.json``, ``<out>/curves.png`` and
the printed Markdown table (what ``benchmarks/RESULTS.md`` records).
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

from common import calibrated_steps, machine, probes, raw_pixel_probes, supervised  # noqa: E402

from selfsup.config import load_config  # noqa: E402
from selfsup.engine.snapshots import snapshot_path  # noqa: E402
from selfsup.engine.trainer import pretrain  # noqa: E402
from selfsup.eval.plots import plot_learning_curves  # noqa: E402
from selfsup.eval.run import load_backbone, probe_data  # noqa: E402

METHODS = {  # recipe -> label
    "relicv2_fmnist": "RELICv2",
    "relic_fmnist": "RELIC",
    "simclr_fmnist": "SimCLR",
    "byol_fmnist": "BYOL",
    "mocov2_fmnist": "MoCo-v2 (multi-crop)",
    "swav_fmnist": "SwAV",
    "dino_fmnist": "DINO",
}


def run_method(recipe: str, minutes: list, out: Path, overrides: list, data, log) -> dict:
    """One run of ``recipe`` for ``max(minutes)``, probed at every budget; returns {minutes: row}."""
    budget = 60 * minutes[-1]
    cfg = load_config(recipe, [f"out={out}", "train.progress=false", *overrides])
    cfg.train.steps = calibrated_steps(cfg, budget, out.parent)
    cfg.train.max_time_s = budget
    cfg.train.snapshot_minutes = list(minutes[:-1])
    log(f"{recipe}: {cfg.train.steps} steps calibrated for {minutes[-1]:g} min, snapshots at {minutes[:-1]}")
    run = pretrain(cfg)
    rows = {}
    for m in minutes:
        path = snapshot_path(out, m) if m != minutes[-1] else out / "backbone.safetensors"
        if not path.is_file():  # the run ended before that mark (it cannot happen for the last one)
            log(f"  {m:g} min: no snapshot")
            continue
        row = probes(cfg, load_backbone(cfg, str(path)), data)
        rows[m] = row
        log(f"  {m:g} min: linear {row['linear_top1']:.2f} kNN {row['knn20_top1']:.2f}")
    rows[minutes[-1]].update(steps=run.step, images_per_s=run.images_per_s, elapsed_min=run.elapsed_s / 60,
                             monitor=run.monitor, monitor_fraction=run.monitor_fraction)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[5, 15, 30], help="budgets read off each run")
    ap.add_argument("--long", type=float, default=60, help="RELICv2's longer run, in minutes (0: none)")
    ap.add_argument("--only", default=None, help="comma-separated recipes (default: every method)")
    ap.add_argument("--no-supervised", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("/tmp/selfsup-curves"))
    ap.add_argument("--resume", action="store_true",
                    help="keep the curves already in <out>/results.json and run only the missing ones")
    ap.add_argument("overrides", nargs="*", help="key=value for every method's recipe")
    args = ap.parse_intermixed_args()
    minutes = sorted(args.minutes)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    def log(msg: str) -> None:
        print(f"[{(time.time() - t_start) / 60:5.1f} min] {msg}", flush=True)

    command = "python benchmarks/fmnist_curves.py " + " ".join(sys.argv[1:])
    payload = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": command, "torch": torch.__version__,
               "machine": machine(load_config("relicv2_fmnist", args.overrides)), "minutes": minutes,
               "curves": {}, "baselines": {}}

    def save() -> None:
        tmp = out / "results.json.tmp"
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        tmp.replace(out / "results.json")

    if args.resume and (out / "results.json").is_file():  # a run spread over several sittings: keep what is done
        done = json.loads((out / "results.json").read_text())
        if done.get("minutes") != minutes:
            sys.exit(f"fmnist_curves.py: --resume: {out / 'results.json'} has budgets {done.get('minutes')}, "
                     f"not {minutes}")
        payload["curves"] = {k: {float(m): row for m, row in c.items()} for k, c in done["curves"].items()}
        payload["baselines"] = done["baselines"]
        payload["sittings"] = done.get("sittings", [done["date"]]) + [payload["date"]]
        log(f"resumed: {', '.join(payload['curves']) or 'baselines only'} already done")

    base_cfg = load_config("relicv2_fmnist", [f"out={out / 'random'}"])
    data = probe_data(base_cfg)
    if not payload["baselines"]:
        payload["baselines"]["raw pixels"] = raw_pixel_probes(base_cfg, data)
        payload["baselines"]["random init"] = probes(base_cfg, load_backbone(base_cfg, None), data)
        log(f"baselines: {payload['baselines']}")
        save()

    recipes = [r for r in METHODS if args.only is None or r in args.only.split(",")]
    for recipe in recipes:
        if METHODS[recipe] in payload["curves"]:
            continue
        payload["curves"][METHODS[recipe]] = run_method(recipe, minutes, out / recipe, args.overrides, data, log)
        save()
    long_name = f"RELICv2, {args.long:g}-min schedule"
    if args.long and "relicv2_fmnist" in recipes and long_name not in payload["curves"]:
        long = sorted({*minutes, args.long})
        payload["curves"][long_name] = run_method(
            "relicv2_fmnist", long, out / "relicv2_fmnist_long", args.overrides, data, log)
        save()
    longest = max(minutes[-1], args.long or 0)
    if not args.no_supervised and f"supervised ({longest:g}-min schedule)" not in payload["curves"]:
        sup = supervised(base_cfg, data, 60 * longest, snapshot_minutes=[m for m in {*minutes, longest}
                                                                            if m < longest])
        curve = {m: probes(base_cfg, net, data) for m, net in sup.pop("snapshots").items()}
        curve[longest] = probes(base_cfg, sup.pop("backbone"), data)
        curve[longest].update(classifier_top1=sup["classifier_top1"], steps=sup["steps"])
        payload["curves"][f"supervised ({longest:g}-min schedule)"] = dict(sorted(curve.items()))
        log(f"supervised: {curve}")
        save()

    plot_learning_curves(payload["curves"], payload["baselines"], out / "curves.png",
                         title=f"Fashion-MNIST, {base_cfg.model.backbone}: probes vs pretraining time (2-core CPU)")
    print(f"\n```bash\n{command}   # {payload['date']}, {payload['machine']}\n```\n")
    budgets = sorted({m for c in payload["curves"].values() for m in c})
    print("| representation | " + " | ".join(f"{m:g} min linear / kNN" for m in budgets) + " |")
    print("|---|" + "---:|" * len(budgets))
    for name, curve in payload["curves"].items():
        cells = [f"{curve[m]['linear_top1']:.2f} / {curve[m]['knn20_top1']:.2f}" if m in curve else "" for m in budgets]
        print(f"| {name} | " + " | ".join(cells) + " |")
    for name, r in payload["baselines"].items():
        print(f"| {name} | " + " | ".join([f"{r['linear_top1']:.2f} / {r['knn20_top1']:.2f}"] * len(budgets)) + " |")
    print(f"\n![curves]({out / 'curves.png'})")


if __name__ == "__main__":
    main()
