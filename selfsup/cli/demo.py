"""``selfsup demo``: pretrain RELICv2 on the built-in data, probe it against random init, report
(:func:`selfsup.experiments.demo.run_demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from selfsup.cli.common import add_command, add_common


def add_parser(sub) -> None:
    d = add_command(sub, "demo", help="pretrain RELICv2 on the built-in data, probe it against random init, report",
                    description="Pretrains RELICv2 on the built-in procedural dataset for a few minutes, "
                                "linear-probes it next to a random-init backbone of the same architecture, prints "
                                "both and writes a report (loss curve and example views as PNG).")
    add_common(d, "demo")
    d.add_argument("--out", default="demo-report", help="report folder (default: demo-report)")
    d.add_argument("--minutes", type=float, default=None,
                   help="pretraining budget in minutes; the step schedule scales with it "
                        "(default: the recipe's, 300 steps capped at 7 minutes)")
    d.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from selfsup.experiments.demo import run_demo

    run_demo(Path(args.out), recipe=args.recipe, overrides=args.overrides, minutes=args.minutes,
             progress=not args.quiet, argv=args.argv)
    return 0
