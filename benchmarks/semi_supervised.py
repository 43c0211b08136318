"""Semi-supervised fine-tuning of one pretrained run next to the same network from random init (the supervised
baseline on the same labels), for every evaluation preset asked for, on the same saved label subsets.

    .venv/bin/python benchmarks/semi_supervised.py --checkpoint RUN_DIR \
        --presets relicv2_semi_1pct,relicv2_semi_10pct,sslight_semi_1pct,sslight_semi_10pct [key=value ...]

Prints the Markdown table that ``benchmarks/RESULTS.md`` records and writes ``<out>/results.json`` as rows finish.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import machine  # noqa: E402

from selfsup.eval.run import config_for, probe_data, run_finetune  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a run folder (its last.ckpt holds the projector)")
    ap.add_argument("--presets", required=True, help="comma-separated presets from selfsup/recipes/eval/")
    ap.add_argument("--out", type=Path, default=Path("/tmp/selfsup-semi"))
    ap.add_argument("--no-baseline", action="store_true", help="skip the random-init rows")
    ap.add_argument("--linear-reference", action="store_true",
                    help="also fit the L-BFGS linear probe on the same labelled subsets")
    ap.add_argument("--linear-only", action="store_true",
                    help="only the L-BFGS linear probe on the presets' label subsets (no fine-tuning)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/semi_supervised.py " + " ".join(sys.argv[1:])
    rows = []
    fractions = []
    for preset in args.presets.split(","):
        cfg = config_for(args.checkpoint, None, [f"eval.finetune.subset_dir={args.out / 'subsets'}",
                                                 *args.overrides], presets=[preset])
        fractions.append(cfg.eval.finetune.labels)
        if args.linear_only:
            continue
        data = probe_data(cfg)
        for source in ([args.checkpoint] if args.no_baseline else [args.checkpoint, None]):
            t0 = time.perf_counter()
            res = run_finetune(cfg, source, progress=False, data=data)
            row = {"preset": preset, "source": "random init" if source is None else "pretrained",
                   "labels": cfg.eval.finetune.labels, "num_train": res["num_train"], "top1": res["top1"],
                   "top5": res["top5"], "epochs": res["epochs"], "steps": res["steps"],
                   "minutes": round((time.perf_counter() - t0) / 60, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            (args.out / "results.json").write_text(json.dumps(
                {"date": time.strftime("%Y-%m-%d %H:%M"), "command": command, "machine": machine(cfg),
                 "checkpoint": str(args.checkpoint), "dataset": cfg.data.dataset, "rows": rows}, indent=1) + "\n")
    # the L-BFGS linear probe on the same labelled images: what fine-tuning must beat
    if args.linear_reference or args.linear_only:
        from selfsup.data.subsets import dataset_identity, subset_for
        from selfsup.eval.linear import fit_logistic_lbfgs
        from selfsup.eval.run import features, load_backbone

        cfg = config_for(args.checkpoint, None, list(args.overrides))
        data = probe_data(cfg)
        fractions = sorted(set(fractions))
        for source in ([args.checkpoint] if args.no_baseline else [args.checkpoint, None]):
            xtr, ytr, xte, yte = features(cfg, load_backbone(cfg, source), data, False)
            for f in fractions:
                ident = dataset_identity(cfg.data.dataset, "train", data.train.labels, data.train.num_classes)
                idx, _ = subset_for(data.train.labels, ident, f, cfg.eval.finetune.subset_seed, args.out / "subsets")
                res = fit_logistic_lbfgs(xtr[idx], ytr[idx], xte, yte, num_classes=data.train.num_classes,
                                         l2_grid=cfg.eval.linear.l2_grid, val_fraction=cfg.eval.linear.val_fraction,
                                         seed=cfg.seed)
                row = {"preset": "linear probe (L-BFGS)", "source": "random init" if source is None else "pretrained",
                       "labels": f, "num_train": int(idx.numel()), "top1": res["top1"], "top5": res["top5"],
                       "epochs": None, "steps": None, "minutes": 0.0}
                rows.append(row)
                print(json.dumps(row), flush=True)
        (args.out / "results.json").write_text(json.dumps(
            {"date": time.strftime("%Y-%m-%d %H:%M"), "command": command, "machine": machine(cfg),
             "checkpoint": str(args.checkpoint), "dataset": cfg.data.dataset, "rows": rows}, indent=1) + "\n")
    print(f"\n{command}\n")
    print("| preset | labels | images | pretrained top-1 | random init top-1 | margin | pretrained top-5 | minutes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for preset, labels in dict.fromkeys((r["preset"], r["labels"]) for r in rows):
        pre = next(r for r in rows if (r["preset"], r["labels"]) == (preset, labels) and r["source"] == "pretrained")
        base = next((r for r in rows if (r["preset"], r["labels"]) == (preset, labels)
                     and r["source"] == "random init"), None)
        print(f"| {preset} | {100 * pre['labels']:g}% | {pre['num_train']} | {pre['top1']:.2f} | "
              + (f"{base['top1']:.2f} | {pre['top1'] - base['top1']:+.2f} | " if base else "- | - | ")
              + f"{pre['top5']:.2f} | {pre['minutes'] + (base['minutes'] if base else 0):.1f} |")


if __name__ == "__main__":
    main()
