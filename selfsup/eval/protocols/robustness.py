"""``selfsup eval robustness``: a linear classifier fitted on clean features, evaluated zero-shot under the ImageNet-C
corruptions and on out-of-distribution folders (RELICv2 Table 9; :mod:`selfsup.eval.robustness`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List

from selfsup.errors import ConfigError
from selfsup.eval.protocols import EvalContext, Protocol, number, register_protocol


def corruption_names(text: str) -> List[str]:
    """``--corruptions``: 'all', 'none' or comma-separated names (checked by run_robustness)."""
    from selfsup.eval.robustness import CORRUPTIONS

    names = {"all": list(CORRUPTIONS), "none": []}.get(text)
    return names if names is not None else [c.strip() for c in text.split(",") if c.strip()]


@register_protocol("robustness")
class Robustness(Protocol):
    help = ("a linear classifier fitted on clean features, evaluated zero-shot on the test split under the 15 "
            "ImageNet-C corruptions x 5 severities (needs selfsup[robustness]) and on --ood folders that share the "
            "classes")
    frozen = False  # fits its own classifier on the backbone it loads
    order = 5

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--corruptions", default="all",
                            help="comma-separated ImageNet-C corruption names, 'all' (default) or 'none'")
        parser.add_argument("--severities", default="1,2,3,4,5", help="comma-separated severities (default 1-5)")
        parser.add_argument("--test-limit", type=int, default=None,
                            help="corrupt a seeded subset of this many test images (default: all)")
        parser.add_argument("--ood", action="append", default=[], metavar="DIR",
                            help="a labelled folder whose class folders are named like training classes; repeatable")

    def run(self, ctx: EvalContext) -> Dict[str, Any]:
        from selfsup.eval.robustness import run_robustness

        opt = ctx.options
        names = corruption_names(opt["corruptions"])
        try:
            severities = [int(s) for s in opt["severities"].split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--severities {opt['severities']!r}: comma-separated integers 1-5") from None
        if not severities or any(not 1 <= s <= 5 for s in severities):
            raise ConfigError(f"--severities {opt['severities']!r}: comma-separated integers 1-5")
        if opt["test_limit"] is not None and opt["test_limit"] < 1:
            raise ConfigError(f"--test-limit must be >= 1, got {opt['test_limit']}")
        if not names and not opt["ood"]:
            raise ConfigError("nothing to evaluate: --corruptions none and no --ood folder")
        return run_robustness(ctx.cfg, ctx.checkpoint, corruptions=names, severities=severities,
                              test_limit=opt["test_limit"], ood=opt["ood"], progress=ctx.progress)

    def summary(self, res: Dict[str, Any], ctx: EvalContext) -> List[str]:
        from selfsup.eval.robustness import robustness_table

        names = corruption_names(ctx.options["corruptions"])
        out = [f"robustness on {ctx.cfg.data.dataset}, {ctx.source}: clean top-1 {res['clean_top1']:.2f}% "
               f"({res['num_test']} test images)"]
        if names:
            out += robustness_table(res)
            out.append(f"corrupted mean top-1 {res['mean_corrupted_top1']:.2f}% over {len(names)} corruptions x "
                       f"severities {','.join(map(str, res['severities']))}")
        out += [f"out-of-distribution {root}: top-1 {acc:.2f}%" for root, acc in res.get("ood", {}).items()]
        return out

    def report_row(self, res: Dict[str, Any]) -> Dict[str, Any]:
        detail = []
        if "mean_corrupted_top1" in res:
            detail.append(f"clean {number(res.get('clean_top1'))}; ImageNet-C mean {res['mean_corrupted_top1']:.2f}")
        detail += [f"OOD {Path(root).name or root}: {acc:.2f}" for root, acc in (res.get("ood") or {}).items()]
        return {"detail": detail}
