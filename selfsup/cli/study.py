"""``selfsup study``: the Revisiting study, pretext tasks x architectures x widths
(:func:`selfsup.experiments.study.run_study`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

from selfsup.cli.common import add_command


def add_parser(sub) -> None:
    st = add_command(sub, "study", help="the Revisiting study: pretext tasks x architectures x widths, each cell "
                                        "pretrained and probed at every depth; writes the table and four figures",
                     description="Runs recipe <method>_<data> for every method, architecture and widening factor "
                                 "k (model.width = k/4), with a random-init row per architecture and width; "
                                 "probes every tap (eval.taps.*) and the pretext accuracy on held-out images. "
                                 "Resumable: finished cells are skipped, an interrupted one resumes. Writes "
                                 "OUT/table.md, table.csv, heatmap.png, pretext_vs_downstream.png, depth.png, "
                                 "width.png and study.json.")
    st.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every cell")
    st.add_argument("--methods", default="rotation,exemplar,jigsaw,relpatch", help="comma-separated pretext tasks")
    st.add_argument("--archs", default="resnet50v1,resnet50v2,revnet50,vgg19bn", help="comma-separated backbones")
    st.add_argument("--widths", default="4", help="comma-separated widening factors k (k=4: the standard network)")
    st.add_argument("--data", required=True, help="recipe suffix: each cell runs recipe <method>_<data> (e.g. fmnist)")
    st.add_argument("--stage-units", type=int, default=None,
                    help="units in every stage (VGG: convs per block); default: each architecture's own")
    st.add_argument("--no-baselines", action="store_true", help="skip the random-init rows")
    st.add_argument("--report-only", action="store_true",
                    help="run nothing: write the table and figures from the cells finished so far")
    st.add_argument("--out", "-o", default=None, help="study folder (default: runs/study_<data>)")
    st.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    st.set_defaults(handler=run)


def _names(text: str, option: str) -> List[str]:
    """A comma-separated option's values (at least one)."""
    from selfsup.errors import ConfigError

    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise ConfigError(f"{option} needs at least one value")
    return items


def run(args: argparse.Namespace) -> int:
    from selfsup.errors import ConfigError
    from selfsup.experiments.study import run_study

    try:
        widths = [float(k) for k in _names(args.widths, "--widths")]
    except ValueError:
        raise ConfigError(f"--widths must be numbers (widening factors k), got '{args.widths}'") from None
    if any(k <= 0 for k in widths):
        raise ConfigError(f"--widths must be > 0, got '{args.widths}'")
    if args.stage_units is not None and args.stage_units < 1:
        raise ConfigError(f"--stage-units must be >= 1, got {args.stage_units}")
    out = Path(args.out or f"runs/study_{args.data}")
    run_study(_names(args.methods, "--methods"), _names(args.archs, "--archs"), widths, args.data, out,
              args.overrides, stage_units=args.stage_units, baselines=not args.no_baselines,
              progress=not args.quiet, run=not args.report_only)
    print((out / "table.md").read_text())
    print(f"study: {out}/table.md, table.csv, heatmap.png, pretext_vs_downstream.png, depth.png, width.png")
    return 0
