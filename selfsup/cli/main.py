"""``selfsup``: pretrain, evaluate and demo from the command line.

Every command takes a recipe (a name from ``selfsup/recipes/`` or a YAML path) and any number of ``key=value``
overrides of the config (``selfsup pretrain relicv2_fmnist train.steps=200 optim.base_lr=0.1``). A mistake the user can
fix (a bad option, a missing file, a corrupt image, a diverging run) prints one line, ``selfsup: error: ...``, and exits
with status 2.

Each command is a module of :mod:`selfsup.cli` with ``add_parser(subparsers)`` and ``run(args) -> int``; this module
assembles them: the parser, the recipe given as the first positional argument, the dispatch and the error handling.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from selfsup.cli import analyze, data, demo, export, pretrain, recipes, report, saliency, study, views
from selfsup.cli import eval as evaluate  # the module cli/eval.py (not the builtin)
from selfsup.cli.common import EPILOG, Parser
from selfsup.errors import SelfsupError

#: the commands, in the order of ``selfsup --help``
COMMANDS = (pretrain, evaluate, demo, views, export, analyze, report, study, saliency, data, recipes)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="selfsup", description="Self-supervised visual representation learning and its evaluation.",
                    epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="store_true", help="print the version")
    sub = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    # parse_known_args lets overrides come after options too (`pretrain demo --quiet k=v`); argparse's
    # intermixed parser cannot be used with sub-commands.
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command as typed, for reports
    if extra:
        if not hasattr(args, "overrides") or any(tok.startswith("-") for tok in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides.extend(extra)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("lightning", "lightning.fabric", "lightning.pytorch", "litdata"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.version:
        from selfsup import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    _positional_recipe(args, parser)
    try:
        return _dispatch(args)
    except SelfsupError as exc:
        print(f"selfsup: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `selfsup recipes | head`: the reader left; nothing is lost
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("selfsup: interrupted; the last checkpoint was saved, continue with --resume", file=sys.stderr)
        return 130


def _positional_recipe(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``selfsup pretrain dino_fmnist k=v``: a first positional argument without ``=`` is the recipe."""
    if not hasattr(args, "overrides") or not hasattr(args, "recipe"):
        return
    if args.overrides and "=" not in args.overrides[0]:
        if args.recipe is not None:
            parser.error(f"two recipes given: --recipe {args.recipe} and '{args.overrides[0]}'")
        args.recipe = args.overrides.pop(0)
    if args.recipe is None:
        args.recipe = args.recipe_default


def _dispatch(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on the hub: selfsup loads no remote weights
    if args.command != "recipes":  # listing the recipes needs no method nor dataset (nor torch)
        import selfsup.data.sources  # noqa: F401  (registers the datasets: a bad data.* is refused at load)
        import selfsup.methods  # noqa: F401  (registers the methods)
    return args.handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
