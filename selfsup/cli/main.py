"""``selfsup``: pretrain, evaluate and demo from the command line.

Every command takes a recipe (a name from ``selfsup/recipes/`` or a YAML path) and any number of ``key=value`` overrides of the
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
recipes:   selfsup recipes   (lists the YAML files in selfsup/recipes/)"""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the option (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_common(p: argparse.ArgumentParser, recipe_default: Optional[str] = None) -> None:
    p.add_argument("overrides", nargs="*", metavar="[RECIPE] key=value",
                   help="a recipe (name in selfsup/recipes/ or YAML path; also --recipe), then config overrides (dotted keys)")
    p.add_argument("--recipe", "-r", default=None,
                   help=f"recipe name in selfsup/recipes/ or a YAML path (default: {recipe_default or 'none'})")
    p.set_defaults(recipe_default=recipe_default)
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
    p.add_argument("--allow-changes", action="store_true",
                   help="resume even though the config differs from the checkpoint's (refused otherwise)")

    ev = sub.add_parser("eval", help="evaluate a pretrained backbone (linear, knn, finetune, transfer, taps, robustness)")
    esub = ev.add_subparsers(dest="protocol", parser_class=_Parser, metavar="PROTOCOL")
    for name, text in (("linear", "linear probe: L-BFGS logistic regression on cached features (default) or the "
                                  "SGD protocol (eval.linear.protocol=sgd)"),
                       ("knn", "weighted kNN on cosine similarity, k=20 and 200 by default (eval.knn.k)"),
                       ("finetune", "fine-tune the encoder with a new classifier on a class-balanced fraction of the "
                                    "labels (eval.finetune.labels: 0.01, 0.1, 1.0); the papers' protocols are "
                                    "presets: --preset relicv2_semi_1pct (see `selfsup recipes`)"),
                       ("transfer", "transfer to the dataset of data.* (override it, e.g. data.dataset=fashion_mnist): "
                                    "linear (L-BFGS, L2 chosen on a val split) or finetune (lr x weight decay x epochs "
                                    "chosen on val), refitted on train and reported on test (eval.transfer.*)"),
                       ("taps", "probes at every depth of the backbone (after_root, block1.. block4, pre_logits; VGG: "
                                "block1..5, fc6, pre_logits), each tap max-pooled to eval.taps.max_dims values: "
                                "L-BFGS, MLP and SGD probes (eval.taps.probes) on a share of the labels "
                                "(eval.taps.fractions); writes the table and an accuracy-vs-depth PNG"),
                       ("robustness", "a linear classifier fitted on clean features, evaluated zero-shot on the test "
                                      "split under the 15 ImageNet-C corruptions x 5 severities (needs "
                                      "selfsup[robustness]) and on --ood folders that share the classes")):
        e = esub.add_parser(name, help=text, description=text, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_common(e)
        src = e.add_mutually_exclusive_group(required=True)
        src.add_argument("--checkpoint", "-c", help="a run folder, last.ckpt or backbone.safetensors")
        src.add_argument("--random-init", action="store_true",
                         help="evaluate a randomly initialised backbone of the configured architecture (a baseline)")
        e.add_argument("--out", help="write the results as JSON here")
        if name == "robustness":
            e.add_argument("--corruptions", default="all",
                           help="comma-separated ImageNet-C corruption names, 'all' (default) or 'none'")
            e.add_argument("--severities", default="1,2,3,4,5", help="comma-separated severities (default 1-5)")
            e.add_argument("--test-limit", type=int, default=None,
                           help="corrupt a seeded subset of this many test images (default: all)")
            e.add_argument("--ood", action="append", default=[], metavar="DIR",
                           help="a labelled folder whose class folders are named like training classes; repeatable")
        e.add_argument("--preset", "-p", action="append", default=[], metavar="PRESET",
                       help="an evaluation protocol from selfsup/recipes/eval/ (e.g. relicv2_semi_10pct), layered over the "
                            "run's config and the recipe; repeatable")

    d = sub.add_parser("demo", help="pretrain RELICv2 on the built-in data, probe it against random init, report",
                       description="Pretrains RELICv2 on the built-in procedural dataset for a few minutes, "
                                   "linear-probes it next to a random-init backbone of the same architecture, prints "
                                   "both and writes a report (loss curve and example views as PNG).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(d, "demo")
    d.add_argument("--out", default="demo-report", help="report folder (default: demo-report)")
    d.add_argument("--minutes", type=float, default=None,
                   help="pretraining budget in minutes; the step schedule scales with it "
                        "(default: the recipe's, 300 steps capped at 7 minutes)")

    vw = sub.add_parser("views", help="inspect the views a recipe samples (crop and pixel scales, a picture)")
    vsub = vw.add_subparsers(dest="views_command", parser_class=_Parser, metavar="ACTION")
    vi = vsub.add_parser("inspect", help="print crop-scale and pixel-scale statistics and save a grid of views",
                         description="Draws the views of a recipe with the training sampler and prints, per view "
                                     "group, the crop-area and pixel-scale statistics, SSLight's mean(PS_g/PS_l) "
                                     "(eq. 1), and the per-view blur/solarize rates; saves a PNG grid of example "
                                     "views of the recipe's dataset (the built-in data if that is not available).",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(vi)
    vi.add_argument("--out", default=None, help="PNG path (default: views-<recipe name>.png)")
    vi.add_argument("--images", type=int, default=4096, help="images drawn for the statistics (default: 4096)")
    vi.add_argument("--rows", type=int, default=6, help="source images in the picture (default: 6)")

    ex = sub.add_parser("export", help="write a run's backbone as safetensors for selfsup, timm or torchvision",
                        description="Writes the pretrained backbone of a run as safetensors: in selfsup's layout, or "
                                    "with the keys of the timm / torchvision model of the same architecture (ResNets, "
                                    "MobileNetV2, ViTs), for downstream detection or segmentation code. The file's "
                                    "metadata names the model to build; the command prints how to load it.",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(ex)
    ex.add_argument("--checkpoint", "-c", required=True, help="a run folder, last.ckpt or backbone.safetensors")
    ex.add_argument("--format", "-f", default="selfsup", choices=["selfsup", "timm", "torchvision"],
                    help="key layout of the written state dict (default: selfsup)")
    ex.add_argument("--out", "-o", required=True, help="the .safetensors file to write")

    an = sub.add_parser("analyze", help="analysis figures of runs: nearest-neighbour distances, discriminant "
                                        "ratios, t-SNE, accuracy against images seen",
                        description="RELICv2 Appendix G on the test split of each run's data: distances to the 5 "
                                    "nearest neighbours for a few classes (Fig. 6), the distribution of the linear "
                                    "discriminant ratio with the runs overlaid (Fig. 7), a t-SNE coloured by class, "
                                    "and probe accuracy against images seen from the run's snapshots (Fig. 5; "
                                    "pretrain with train.snapshot_every_steps=N). Writes PNGs and analysis.json.",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
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

    rp = sub.add_parser("report", help="one self-contained HTML page (and Markdown) for a run",
                        description="Writes report.html (self-contained: figures inlined) and report.md for a run: "
                                    "its summary, every evaluation kept in RUN/evals/, the robustness table, the "
                                    "curves and analysis figures, and the config.",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    rp.add_argument("run", metavar="RUN", help="a run folder")
    rp.add_argument("--out", "-o", default=None, help="folder for report.html / report.md (default: the run folder)")
    cp = sub.add_parser("compare", help="several runs side by side in one HTML page (and Markdown)",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    cp.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    cp.add_argument("--out", "-o", default="compare", help="folder for compare.html / compare.md (default: compare)")

    st = sub.add_parser("study", help="the Revisiting study: pretext tasks x architectures x widths, each cell "
                                      "pretrained and probed at every depth; writes the table and four figures",
                        description="Runs recipe <method>_<data> for every method, architecture and widening factor "
                                    "k (model.width = k/4), with a random-init row per architecture and width; "
                                    "probes every tap (eval.taps.*) and the pretext accuracy on held-out images. "
                                    "Resumable: finished cells are skipped, an interrupted one resumes. Writes "
                                    "OUT/table.md, table.csv, heatmap.png, pretext_vs_downstream.png, depth.png, "
                                    "width.png and study.json.",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
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

    from selfsup.cli.saliency import add_saliency_parser

    add_saliency_parser(sub, _Parser, _add_common, EPILOG)
    da = sub.add_parser("data", help="data tools: pack an image folder into streaming shards")
    dsub = da.add_subparsers(dest="data_command", parser_class=_Parser, metavar="ACTION")
    pk = dsub.add_parser("pack", help="write an image folder (flat or class tree, with its test split) into litdata "
                                      "shards for data.dataset=shards",
                         description="Packs SRC's training images into OUT/train and its test split (SRC/val, "
                                     "SRC/test or --test-root, found as data.dataset=folder finds them) into OUT/test. "
                                     "Records keep the files' bytes (no re-encoding); train from them with "
                                     "data.dataset=shards data.root=OUT.")
    pk.add_argument("src", help="image folder")
    pk.add_argument("out", help="shard folder to write (only its train/ and test/ are written; an existing one is "
                                "replaced only if an earlier pack wrote it)")
    pk.add_argument("--test-root", default=None, help="the test images, if not SRC/val or SRC/test")
    pk.add_argument("--workers", type=int, default=max(1, min(8, os.cpu_count() or 1)),
                    help="packing processes (default: the cores, at most 8)")
    pk.add_argument("--chunk-bytes", default="64MB",
                    help="target chunk size: a positive integer with an optional unit B, KB, MB, GB or TB "
                         "(default 64MB)")
    pk.add_argument("--limit", type=int, default=None, help="pack only the first N images of each split")
    pk.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    sub.add_parser("recipes", help="list the recipes")
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
        return _dispatch(args, parser)
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


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on the hub: selfsup loads no remote weights
    if args.command == "recipes":
        from selfsup.config import find_recipe, list_recipes

        for name in list_recipes():
            print(f"{name:28s} {find_recipe(name)}")
        from selfsup.config import find_preset, list_presets

        print("\nevaluation presets (selfsup eval ... --preset NAME):")
        for name in list_presets():
            print(f"{name[len('eval/'):]:28s} {find_preset(name)}")
        return 0
    import selfsup.methods  # noqa: F401  (registers the methods)

    if args.command == "pretrain":
        return _pretrain(args)
    if args.command == "eval":
        if args.protocol is None:
            parser.parse_args(["eval", "--help"])
        return _eval(args)
    if args.command == "study":
        return _study(args)
    if args.command == "data":
        if args.data_command is None:
            parser.parse_args(["data", "--help"])
        return _data_pack(args)
    if args.command == "saliency":
        from selfsup.cli.saliency import run_saliency

        return run_saliency(args, parser)
    if args.command == "analyze":
        from selfsup.eval.analysis import run_analysis

        runs = [r for r in args.runs if "=" not in r]
        overrides = [r for r in args.runs if "=" in r]
        single = _run_dir(runs[0]) if len(runs) == 1 else None
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
    if args.command == "export":
        return _export(args)
    if args.command in ("report", "compare"):
        from selfsup.eval.report import write_compare, write_report

        html_path, md_path = (write_report(Path(args.run), Path(args.out) if args.out else None)
                              if args.command == "report" else write_compare([Path(r) for r in args.runs],
                                                                            Path(args.out)))
        print(f"{args.command}: {html_path}  (Markdown: {md_path})")
        return 0
    if args.command == "views":
        if args.views_command is None:
            parser.parse_args(["views", "--help"])
        return _views_inspect(args)
    if args.command == "demo":
        from selfsup.cli.demo import run_demo

        run_demo(Path(args.out), recipe=args.recipe, overrides=args.overrides, minutes=args.minutes,
                 progress=not args.quiet, argv=args.argv)
        return 0
    raise AssertionError(args.command)


def _pretrain(args: argparse.Namespace) -> int:
    from selfsup.config import load_config
    from selfsup.engine.trainer import RunFolderBusy, pretrain

    overrides: List[str] = list(args.overrides)
    if args.quiet:
        overrides.append("train.progress=false")
    cfg = load_config(args.recipe, overrides)
    busy = False
    try:
        result = pretrain(cfg, resume=args.resume, allow_changes=args.allow_changes)
    except RunFolderBusy:  # another process is writing the folder: its curves are its own to draw
        busy = True
        raise
    finally:  # also for a killed or diverged run: the curves up to its last step
        curves = None if busy else _draw_curves(Path(cfg.out), cfg.name)
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


MONITOR_NAMES = {"knn_top1": "kNN top-1", "online_test_top1": "online linear top-1"}


def _draw_curves(out: Path, name: str) -> Optional[Path]:
    """``<out>/curves.png`` from ``<out>/train_log.csv`` (loss, lr, monitored accuracies), if the run logged a step."""
    from selfsup.eval.plots import plot_curves

    log_csv = out / "train_log.csv"
    if not log_csv.is_file() or log_csv.stat().st_size == 0:
        return None
    try:  # plot_curves reads the log through metafiles.read_csv_log: a damaged log is one DataError line
        return plot_curves(log_csv, out / "curves.png", title=f"{name}: pretraining loss")
    except (SelfsupError, ValueError, OSError) as exc:  # a damaged or foreign log: the run's own outcome matters more
        logging.getLogger("selfsup").warning("could not draw %s: %s", out / "curves.png", exc)
        return None


def _eval(args: argparse.Namespace) -> int:
    from selfsup.metafiles import check_output_file
    from selfsup.eval.run import (config_for, load_backbone, run_finetune, run_knn, run_linear,
                                  write_json)

    if args.out:
        check_output_file(Path(args.out))
    cfg = config_for(args.checkpoint, args.recipe, args.overrides, presets=args.preset)
    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
    backbone = (None if args.protocol in ("finetune", "transfer", "robustness")
                else load_backbone(cfg, None if args.random_init else args.checkpoint))
    source = "random init" if args.random_init else args.checkpoint
    if args.protocol == "linear":
        res = run_linear(cfg, backbone, progress=not args.quiet)
        extra = f"l2={res['l2']:g}" if res["protocol"] == "lbfgs" else f"{res['epochs']} epochs"
        print(f"linear ({res['protocol']}) on {cfg.data.dataset}, {source}: top-1 {res['top1']:.2f}%  "
              f"top-5 {res['top5']:.2f}%  ({extra})")
    elif args.protocol == "finetune":
        res = run_finetune(cfg, None if args.random_init else args.checkpoint, progress=not args.quiet)
        fc = cfg.eval.finetune
        subset = f", subset {res['subset_file']}" if res["subset_file"] else ""
        print(f"fine-tune ({100 * fc.labels:g}% labels = {res['num_train']} images, classifier on "
              f"{'the projector' if fc.head == 'projector' else 'the backbone'}, {res['epochs']} epochs) on "
              f"{cfg.data.dataset}, {source}: top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%{subset}")
    elif args.protocol == "transfer":
        from selfsup.eval.transfer import run_transfer

        res = run_transfer(cfg, None if args.random_init else args.checkpoint, progress=not args.quiet)
        chosen = ", ".join(f"{k}={v:g}" for k, v in res["chosen"].items())
        print(f"transfer ({res['mode']}) to {cfg.data.dataset}, {source}: top-1 {res['top1']:.2f}%  "
              f"mean per-class {res['mean_per_class']:.2f}%  top-5 {res['top5']:.2f}%  (chosen on val by "
              f"{res['metric']}: {chosen})")
    elif args.protocol == "robustness":
        res = _robustness(args, cfg, source)
    elif args.protocol == "taps":
        res = _taps(args, cfg, backbone, source)
    else:
        res = run_knn(cfg, backbone, progress=not args.quiet)
        for k in cfg.eval.knn.k:
            print(f"knn k={k} on {cfg.data.dataset}, {source}: top-1 {res[f'k{k}_top1']:.2f}%  "
                  f"top-5 {res[f'k{k}_top5']:.2f}%")
    import time

    payload = {"protocol": args.protocol, "source": str(source), "dataset": cfg.data.dataset,
               "command": "selfsup " + " ".join(args.argv), "date": time.strftime("%Y-%m-%d %H:%M"), **res}
    if args.out:
        write_json(Path(args.out), payload)
    run_dir = None if args.random_init else _run_dir(args.checkpoint)
    if run_dir is not None:  # every evaluation of a run is kept with it, for `selfsup report`
        path = run_dir / "evals" / f"{_eval_name(args, cfg)}.json"
        try:
            write_json(path, payload)
        except OSError as exc:
            logging.getLogger("selfsup").warning("could not keep the result in %s: %s", path, exc)
    return 0


def _run_dir(checkpoint: Optional[str]) -> Optional[Path]:
    """The run folder a checkpoint belongs to (the folder itself, or the folder of its last.ckpt/backbone), if any."""
    if not checkpoint:
        return None
    p = Path(checkpoint)
    p = p if p.is_dir() else p.parent
    return p if (p / "train_log.csv").is_file() or (p / "last.ckpt").is_file() else None


def _eval_name(args: argparse.Namespace, cfg) -> str:
    """The file name (without .json) of an evaluation in <run>/evals: protocol, setting, dataset."""
    parts = [args.protocol]
    if args.protocol == "linear":
        parts.append(cfg.eval.linear.protocol)
    elif args.protocol == "finetune":
        fc = cfg.eval.finetune
        parts += [Path(p).stem for p in args.preset] or [f"{100 * fc.labels:g}pct", fc.head]
    elif args.protocol == "transfer":
        parts.append(cfg.eval.transfer.mode)
    elif args.protocol == "taps" and list(cfg.eval.taps.fractions) != [1.0]:
        parts.append("labels" + "-".join(f"{f:g}" for f in cfg.eval.taps.fractions))
    parts.append(cfg.data.dataset)
    return "_".join(str(p).replace("/", "-").replace(".", "p") for p in parts)


def _study(args: argparse.Namespace) -> int:
    from selfsup.errors import ConfigError
    from selfsup.eval.study import run_study

    def names(text: str, option: str) -> list:
        items = [x.strip() for x in text.split(",") if x.strip()]
        if not items:
            raise ConfigError(f"{option} needs at least one value")
        return items

    try:
        widths = [float(k) for k in names(args.widths, "--widths")]
    except ValueError:
        raise ConfigError(f"--widths must be numbers (widening factors k), got '{args.widths}'") from None
    if any(k <= 0 for k in widths):
        raise ConfigError(f"--widths must be > 0, got '{args.widths}'")
    if args.stage_units is not None and args.stage_units < 1:
        raise ConfigError(f"--stage-units must be >= 1, got {args.stage_units}")
    out = Path(args.out or f"runs/study_{args.data}")
    run_study(names(args.methods, "--methods"), names(args.archs, "--archs"), widths, args.data, out,
              args.overrides, stage_units=args.stage_units, baselines=not args.no_baselines,
              progress=not args.quiet, run=not args.report_only)
    print((out / "table.md").read_text())
    print(f"study: {out}/table.md, table.csv, heatmap.png, pretext_vs_downstream.png, depth.png, width.png")
    return 0


def _taps(args: argparse.Namespace, cfg, backbone, source) -> dict:
    """``selfsup eval taps``: the table on stdout and the accuracy-vs-depth PNG next to the JSON (or in the run)."""
    from selfsup.eval.plots import plot_depth
    from selfsup.eval.taps import run_taps

    res = run_taps(cfg, backbone, progress=not args.quiet)
    taps = res["taps"]
    print(f"probes at every depth on {cfg.data.dataset}, {source} ({res['num_train']} train / {res['num_test']} test "
          f"images; taps pooled to <= {res['max_dims']} values):")
    print("| probe | labels | " + " | ".join(taps) + " |")
    print("|---|---:|" + "---:|" * len(taps))
    lines = {}
    for probe, by_frac in res["results"].items():
        for frac, accs in by_frac.items():
            print(f"| {probe} | {frac} | " + " | ".join(f"{accs[t]:.2f}" for t in taps) + " |")
            lines[f"{probe}, {float(frac):.0%} labels"] = accs
    run_dir = None if args.random_init else _run_dir(args.checkpoint)
    folder = Path(args.out).parent if args.out else (run_dir / "evals" if run_dir else None)
    if folder is not None:
        png = plot_depth(lines, taps, folder / f"{_eval_name(args, cfg)}.png",
                         title=f"{cfg.model.backbone} ({source}): accuracy at every depth")
        res["plot"] = str(png)
        print(f"plot: {png}")
    return res


def _robustness(args: argparse.Namespace, cfg, source) -> dict:
    from selfsup.errors import ConfigError
    from selfsup.eval.robustness import CORRUPTIONS, robustness_table, run_robustness

    names = {"all": list(CORRUPTIONS), "none": []}.get(args.corruptions)
    if names is None:
        names = [c.strip() for c in args.corruptions.split(",") if c.strip()]
    try:
        severities = [int(s) for s in args.severities.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--severities {args.severities!r}: comma-separated integers 1-5") from None
    if not severities or any(not 1 <= s <= 5 for s in severities):
        raise ConfigError(f"--severities {args.severities!r}: comma-separated integers 1-5")
    if args.test_limit is not None and args.test_limit < 1:
        raise ConfigError(f"--test-limit must be >= 1, got {args.test_limit}")
    if not names and not args.ood:
        raise ConfigError("nothing to evaluate: --corruptions none and no --ood folder")
    checkpoint = None if args.random_init else args.checkpoint
    res = run_robustness(cfg, checkpoint, corruptions=names, severities=severities, test_limit=args.test_limit,
                         ood=args.ood, progress=not args.quiet)
    print(f"robustness on {cfg.data.dataset}, {source}: clean top-1 {res['clean_top1']:.2f}% "
          f"({res['num_test']} test images)")
    if names:
        print("\n".join(robustness_table(res)))
        print(f"corrupted mean top-1 {res['mean_corrupted_top1']:.2f}% over {len(names)} corruptions x severities "
              f"{','.join(map(str, severities))}")
    for root, acc in res.get("ood", {}).items():
        print(f"out-of-distribution {root}: top-1 {acc:.2f}%")
    return res


def _export(args: argparse.Namespace) -> int:
    from selfsup.errors import ConfigError
    from selfsup.eval.run import config_for, load_backbone
    from selfsup.metafiles import check_output_file
    from selfsup.methods.base import backbone_input_size
    from selfsup.models.export import export_state, save_export

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out {out}: the export is a .safetensors file")
    check_output_file(out)
    cfg = config_for(args.checkpoint, args.recipe, args.overrides)
    backbone = load_backbone(cfg, args.checkpoint, representation=False)
    tensors, meta = export_state(backbone, args.format, width=cfg.model.width, image_size=backbone_input_size(cfg))
    meta.update(source=str(args.checkpoint), backbone=cfg.model.backbone)
    save_export(out, tensors, meta)
    print(f"wrote {len(tensors)} tensors ({args.format} layout) to {out}")
    load = "from safetensors.torch import load_file; sd = load_file(%r)" % str(out)
    if args.format == "timm":
        kwargs = meta["timm_kwargs"]
        extra = "" if kwargs == "{}" else ", **" + kwargs.replace("true", "True").replace("false", "False")
        print(f"load: import timm; {load}; m = timm.create_model({meta['timm_model']!r}, num_classes=0{extra}); "
              "m.load_state_dict(sd)")
    elif args.format == "torchvision":
        print(f"load: import torchvision; {load}; m = torchvision.models.{meta['torchvision_model']}(weights=None); "
              "m.load_state_dict(sd, strict=False)  # only fc.* missing")
    else:
        print(f"load: selfsup eval linear --checkpoint {out}")
    return 0


def _data_pack(args: argparse.Namespace) -> int:
    from selfsup.config import DataConfig
    from selfsup.data.datasets import find_test_dir, folder_dataset
    from selfsup.data.shards import check_pack_output, is_shard_split, pack, parse_chunk_bytes
    from selfsup.errors import ConfigError

    if args.workers < 1 or (args.limit is not None and args.limit < 1):
        raise ConfigError("--workers and --limit must be >= 1")
    chunk_bytes = parse_chunk_bytes(args.chunk_bytes, "--chunk-bytes")
    src, out = Path(args.src).expanduser(), Path(args.out).expanduser()
    cfg = DataConfig(dataset="folder", root=args.src, test_root=args.test_root, limit=args.limit)
    # every folder the source reads: OUT may be none of them, nor contain one, nor sit inside one (a flat SRC lists
    # its own sub-folders as training images); checked before anything is listed or written
    sources = [src, src / "train", src / "val", src / "test", args.test_root]
    test_dir = find_test_dir(cfg, src) if src.is_dir() else None
    check_pack_output(out, sources, ["train", "test"] if test_dir is not None else ["train"])
    splits = {"train": folder_dataset(cfg, "train")}  # checks that SRC exists
    if test_dir is not None:  # found as data.dataset=folder finds it
        splits["test"] = folder_dataset(cfg, "test")
    else:
        print(f"no test split in {args.src}: packing the training images only")
    stale_test = "test" not in splits and is_shard_split(out / "test")
    written = pack(splits, out, chunk_bytes=chunk_bytes, workers=args.workers, progress=not args.quiet,
                   sources=sources)
    for name, meta in written.items():
        classes = f"{len(meta['classes'])} classes" if meta["classes"] else "unlabelled"
        bad = f", {meta['unreadable_files']} unreadable files stored empty" if meta["unreadable_files"] else ""
        print(f"{name}: {meta['records']} images ({classes}{bad}) -> {Path(args.out) / name} "
              f"in {meta['seconds']:.1f} s")
    if stale_test:
        print(f"removed {Path(args.out) / 'test'}, the test split of an earlier pack (this source has none)")
    print(f"train from them with: data.dataset=shards data.root={args.out}")
    return 0


def _views_inspect(args: argparse.Namespace) -> int:
    import torch

    from selfsup.config import load_config
    from selfsup.data.datasets import build_dataset, collate, decode_on
    from selfsup.data.view_stats import view_statistics
    from selfsup.data.views import MultiViewSampler
    from selfsup.errors import ConfigError, DataError
    from selfsup.eval.plots import plot_view_grid
    from selfsup.metafiles import check_output_file

    if args.recipe is None:
        raise ConfigError("views inspect needs a recipe: selfsup views inspect RECIPE [key=value ...]")
    if args.images < 1 or args.rows < 1:
        raise ConfigError("--images and --rows must be >= 1")
    cfg = load_config(args.recipe, args.overrides)
    out = check_output_file(Path(args.out or f"views-{cfg.name}.png"))
    stats = view_statistics(cfg.views, num_images=args.images, source_size=cfg.data.image_size,
                            generator=torch.Generator().manual_seed(cfg.seed))
    print(f"recipe {args.recipe}: {cfg.views.large.count} large x {cfg.views.large.size}px "
          f"(crop area {cfg.views.large.scale_min}..{cfg.views.large.scale_max}), {cfg.views.small.count} small x "
          f"{cfg.views.small.size}px (crop area {cfg.views.small.scale_min}..{cfg.views.small.scale_max})")
    print(stats.table())
    try:
        ds, source = build_dataset(cfg.data, "train", for_views=True,
                                   device_decode=decode_on(cfg.data, torch.device("cpu"))), cfg.data.dataset
    except (ConfigError, DataError) as exc:
        cfg.data.dataset, cfg.data.train_size, cfg.data.limit = "shapes", max(args.rows, 16), None
        ds, source = build_dataset(cfg.data, "train"), f"built-in shapes ({exc})"
    rows = min(args.rows, len(ds))
    batch = collate([ds[i] for i in range(rows)])
    if "items" in batch:  # data.decode=device
        from selfsup.data.images import decode_on_device

        batch = decode_on_device(batch, ds, torch.device("cpu"))
    sampler = MultiViewSampler(cfg.views, ds.mean, ds.std)
    size = tuple(batch["image"].shape[-2:])
    try:  # the masks pretraining would use (views.mask_source: ground truth, a saliency cache, a random ablation)
        from selfsup.data.masks import MaskProvider

        masks = MaskProvider(cfg.views, ds, cfg.data.dataset)(batch, batch["image"],
                                                              torch.Generator().manual_seed(cfg.seed))
    except (ConfigError, DataError):
        masks = batch["mask"]
    views = sampler(batch["image"], masks, sampler.sample_params(rows, torch.Generator().manual_seed(cfg.seed),
                                                                  source_size=size), batch["size"])
    ratio = f", mean(PS_g/PS_l)={stats.ps_ratio_mean:.2f}" if stats.ps_ratio_mean is not None else ""
    plot_view_grid(batch["image"], views, ds.mean, ds.std, out, masks=masks, sizes=batch["size"],
                   title=f"{cfg.name}: {cfg.views.large.count}x{cfg.views.large.size} + "
                         f"{cfg.views.small.count}x{cfg.views.small.size}{ratio}")
    print(f"views of {source}: {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
