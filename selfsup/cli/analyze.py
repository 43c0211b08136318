"""``selfsup analyze``: analysis figures of runs (RELICv2 Appendix G; :func:`selfsup.eval.analysis.run_analysis`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from selfsup.cli.common import add_command


def add_parser(sub) -> None:
    an = add_command(sub, "analyze", help="analysis figures of runs: nearest-neighbour distances, discriminant "
                                          "ratios, t-SNE, accuracy against images seen",
                     description="RELICv2 Appendix G on the test split of each run's data: distances to the 5 "
                                 "nearest neighbours for a few classes (Fig. 6), the distribution of the linear "
                                 "discriminant ratio with the runs overlaid (Fig. 7), a t-SNE coloured by class, "
                                 "and probe accuracy against images seen from the run's snapshots (Fig. 5; "
                                 "pretrain with train.snapshot_every_steps=N). Writes PNGs and analysis.json.")
    an.add_argument("runs", nargs="*", metavar="RUN", help="run folders (or checkpoints); key=value overrides too")
    an.add_argument("--out", "-o", default=None,
                    help="folder for the figures (default: RUN/analysis for one run, where `selfsup report` finds "
                         "them; ./analysis otherwise)")
    an.add_argument("--classes", default="", help="comma-separated class names for the neighbour plot "
                                                  "(default: the first 4)")
    an.add_argument("--per-class", type=int, default=50, help="test images per class in the neighbour plot")
    an.add_argument("--max-points", type=int, default=2000, help="images in the t-SNE (and at least in the ratios)")
    an.add_argument("--probe", choices=["knn", "linear"], default="knn", help="probe of the snapshots (default knn)")
    an.add_argument("--random-init", action="store_true", help="add the random-init backbone as a reference")
    an.add_argument("--no-curve", action="store_true", help="skip the accuracy-against-images figure")
    an.add_argument("--no-embedding", action="store_true", help="skip the t-SNE")
    an.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    an.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from selfsup.eval.analysis import run_analysis
    from selfsup.eval.run import run_folder

    runs = [r for r in args.runs if "=" not in r]
    overrides = [r for r in args.runs if "=" in r]
    single = run_folder(runs[0]) if len(runs) == 1 else None  # --out's default: RUN/analysis for one run
    out = Path(args.out) if args.out else (single / "analysis" if single else Path("analysis"))
    res = run_analysis(runs, out, overrides, classes=[c for c in args.classes.split(",") if c],
                       per_class=args.per_class, max_points=args.max_points, probe=args.probe,
                       curve=not args.no_curve, embedding=not args.no_embedding, random_init=args.random_init,
                       progress=not args.quiet)
    for name, row in res["runs"].items():
        print(f"{name}: {100 * row['same_class_nn']:.1f}% of 5-NN in the same class, discriminant ratio median "
              f"{row['ratio_median']:.3f}" + (f", {len(row['curve'])} snapshots probed" if "curve" in row else ""))
    for key, path in res["figures"].items():
        print(f"{key}: {path}")
    return 0
