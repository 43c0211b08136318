"""``selfsup``: pretrain, evaluate and demo from the command line.

Every command takes a recipe (a name from ``recipes/`` or a YAML path) and any number of ``key=value`` overrides of the
config (``selfsup pretrain relicv2_fmnist train.steps=200 optim.base_lr=0.1``). A mistake the user can fix (a bad option,
a missing file, a corrupt image, a diverging run) prints one line, ``selfsup: error: ...``, and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from selfsup.errors import SelfsupError

EPILOG = """overrides: any config key as key=value, e.g. train.steps=100 views.large.count=2 method.temperature=0.1
recipes:   selfsup recipes   (lists the YAML files in recipes/)"""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the option (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_common(p: argparse.ArgumentParser, recipe_default: Optional[str] = None) -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (dotted keys)")
    p.add_argument("--recipe", "-r", default=recipe_default,
                   help=f"recipe name in recipes/ or a YAML path (default: {recipe_default or 'none'})")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="selfsup", description="Self-supervised visual representation learning and its evaluation.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="store_true", help="print the version")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("pretrain", help="pretrain a method on a dataset",
                       description="Pretrain a self-supervised method. Writes <out>/last.ckpt (resumable), "
                                   "<out>/backbone.safetensors, <out>/train_log.csv and TensorBoard logs.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p, "relicv2_shapes")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   help="continue a run exactly: a checkpoint, a run folder, or nothing for <out>/last.ckpt")

    ev = sub.add_parser("eval", help="evaluate a frozen backbone (linear, knn)")
    esub = ev.add_subparsers(dest="protocol", parser_class=_Parser, metavar="PROTOCOL")
    for name, text in (("linear", "linear probe: L-BFGS logistic regression on cached features (default) or the "
                                  "SGD protocol (eval.linear.protocol=sgd)"),
                       ("knn", "weighted kNN on cosine similarity, k=20 and 200 by default (eval.knn.k)")):
        e = esub.add_parser(name, help=text, description=text, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_common(e)
        src = e.add_mutually_exclusive_group(required=True)
        src.add_argument("--checkpoint", "-c", help="a run folder, last.ckpt or backbone.safetensors")
        src.add_argument("--random-init", action="store_true",
                         help="evaluate a randomly initialised backbone of the configured architecture (a baseline)")
        e.add_argument("--out", help="write the results as JSON here")

    d = sub.add_parser("demo", help="pretrain RELICv2 on the built-in data, probe it against random init, report",
                       description="Pretrains RELICv2 on the built-in procedural dataset for a few minutes, "
                                   "linear-probes it next to a random-init backbone of the same architecture, prints "
                                   "both and writes a report (loss curve and example views as PNG).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(d, "demo")
    d.add_argument("--out", default="demo-report", help="report folder (default: demo-report)")
    d.add_argument("--minutes", type=float, default=None, help="pretraining budget in minutes (default: the recipe's)")

    sub.add_parser("recipes", help="list the recipes")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("lightning", "lightning.fabric", "lightning.pytorch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.version:
        from selfsup import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return _dispatch(args, parser)
    except SelfsupError as exc:
        print(f"selfsup: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfsup: interrupted; the last checkpoint was saved, continue with --resume", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on the hub: selfsup loads no remote weights
    if args.command == "recipes":
        from selfsup.config import find_recipe, list_recipes

        for name in list_recipes():
            print(f"{name:28s} {find_recipe(name)}")
        return 0
    import selfsup.methods  # noqa: F401  (registers the methods)

    if args.command == "pretrain":
        return _pretrain(args)
    if args.command == "eval":
        if args.protocol is None:
            parser.parse_args(["eval", "--help"])
        return _eval(args)
    if args.command == "demo":
        from selfsup.cli.demo import run_demo

        run_demo(Path(args.out), recipe=args.recipe, overrides=args.overrides, minutes=args.minutes,
                 progress=not args.quiet)
        return 0
    raise AssertionError(args.command)


def _pretrain(args: argparse.Namespace) -> int:
    from selfsup.config import load_config
    from selfsup.engine.trainer import pretrain

    overrides: List[str] = list(args.overrides)
    if args.quiet:
        overrides.append("train.progress=false")
    cfg = load_config(args.recipe, overrides)
    result = pretrain(cfg, resume=args.resume)
    state = "stopped early (time budget) at" if result.stopped_early else "finished"
    print(f"pretrain {state} step {result.step}/{result.total_steps}: last loss {result.losses[-1]:.4f}, "
          f"{result.images_per_s:.0f} images/s, data wait {100 * result.data_wait_fraction:.1f}%"
          if result.losses else f"nothing to do: already at step {result.step}/{result.total_steps}")
    print(f"checkpoint: {result.out_dir / 'last.ckpt'}   backbone: {result.out_dir / 'backbone.safetensors'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from selfsup.eval.run import config_for, load_backbone, run_knn, run_linear, write_json

    cfg = config_for(args.checkpoint, args.recipe, args.overrides)
    backbone = load_backbone(cfg, None if args.random_init else args.checkpoint)
    source = "random init" if args.random_init else args.checkpoint
    if args.protocol == "linear":
        res = run_linear(cfg, backbone, progress=not args.quiet)
        extra = f"l2={res['l2']:g}" if res["protocol"] == "lbfgs" else f"{res['epochs']} epochs"
        print(f"linear ({res['protocol']}) on {cfg.data.dataset}, {source}: top-1 {res['top1']:.2f}%  "
              f"top-5 {res['top5']:.2f}%  ({extra})")
    else:
        res = run_knn(cfg, backbone, progress=not args.quiet)
        for k in cfg.eval.knn.k:
            print(f"knn k={k} on {cfg.data.dataset}, {source}: top-1 {res[f'k{k}_top1']:.2f}%  "
                  f"top-5 {res[f'k{k}_top5']:.2f}%")
    if args.out:
        write_json(Path(args.out), {"protocol": args.protocol, "source": str(source),
                                    "dataset": cfg.data.dataset, **res})
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
