"""``selfsup report RUN`` and ``selfsup compare RUN...``: HTML and Markdown pages of runs
(:mod:`selfsup.eval.report`, :mod:`selfsup.eval.report_compare`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from selfsup.cli.common import add_command


def add_parser(sub) -> None:
    rp = add_command(sub, "report", help="one self-contained HTML page (and Markdown) for a run",
                     description="Writes report.html (self-contained: figures inlined) and report.md for a run: "
                                 "its summary, every evaluation kept in RUN/evals/, the robustness table, the "
                                 "curves and analysis figures, and the config.")
    rp.add_argument("run", metavar="RUN", help="a run folder")
    rp.add_argument("--out", "-o", default=None, help="folder for report.html / report.md (default: the run folder)")
    rp.set_defaults(handler=run)
    cp = add_command(sub, "compare", help="several runs side by side in one HTML page (and Markdown)")
    cp.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    cp.add_argument("--out", "-o", default="compare", help="folder for compare.html / compare.md (default: compare)")
    cp.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from selfsup.eval.report import write_report
    from selfsup.eval.report_compare import write_compare

    if args.command == "report":
        html_path, md_path = write_report(Path(args.run), Path(args.out) if args.out else None)
    else:
        html_path, md_path = write_compare([Path(r) for r in args.runs], Path(args.out))
    print(f"{args.command}: {html_path}  (Markdown: {md_path})")
    return 0
