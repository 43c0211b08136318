"""``selfsup pretrain``: pretrain a method on a dataset
(:func:`selfsup.experiments.pretraining.pretrain_with_curves`)."""

from __future__ import annotations

import argparse
from typing import List

from selfsup.cli.common import add_command, add_common

MONITOR_NAMES = {"knn_top1": "kNN top-1", "online_test_top1": "online linear top-1"}


def add_parser(sub) -> None:
    p = add_command(sub, "pretrain", help="pretrain a method on a dataset",
                    description="Pretrain a self-supervised method. Writes <out>/last.ckpt (resumable), "
                                "<out>/backbone.safetensors, <out>/train_log.csv and TensorBoard logs.")
    add_common(p, "relicv2_shapes")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   help="continue a run exactly: a checkpoint, a run folder, or nothing for <out>/last.ckpt")
    p.add_argument("--allow-changes", action="store_true",
                   help="resume even though the config differs from the checkpoint's (refused otherwise)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from selfsup.config import load_config
    from selfsup.experiments.pretraining import pretrain_with_curves

    overrides: List[str] = list(args.overrides)
    if args.quiet:
        overrides.append("train.progress=false")
    cfg = load_config(args.recipe, overrides)
    result, curves = pretrain_with_curves(cfg, resume=args.resume, allow_changes=args.allow_changes)
    state = "stopped early (time budget) at" if result.stopped_early else "finished"
    print(f"pretrain {state} step {result.step}/{result.total_steps}: last loss {result.losses[-1]:.4f}, "
          f"{result.images_per_s:.0f} images/s, data wait {100 * result.data_wait_fraction:.1f}%"
          if result.losses else f"nothing to do: already at step {result.step}/{result.total_steps}")
    if result.skipped:
        print(f"skipped {result.skipped} unreadable images (data.skip_corrupt=true; the log names each once)")
    if result.monitor:
        print("monitor: " + ", ".join(f"{MONITOR_NAMES.get(k, k)} {v:.2f}%" for k, v in result.monitor.items())
              + f" (test subset; {100 * result.monitor_fraction:.1f}% of the run's time)")
    print(f"checkpoint: {result.out_dir / 'last.ckpt'}   backbone: {result.out_dir / 'backbone.safetensors'}"
          + (f"   curves: {curves}" if curves else ""))
    return 0
