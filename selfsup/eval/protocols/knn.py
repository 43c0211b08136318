"""``selfsup eval knn``: weighted kNN on cosine similarity (Wu et al. 2018) for every k of ``eval.knn.k``
(:func:`selfsup.eval.run.run_knn`)."""

from __future__ import annotations

import re
from typing import Any, Dict, List

from selfsup.config import KNNEvalConfig
from selfsup.eval.protocols import EvalContext, Protocol, register_protocol

_K_TOP1 = re.compile(r"k(\d{1,6})_top1")


@register_protocol("knn")
class KNN(Protocol):
    help = "weighted kNN on cosine similarity, k=20 and 200 by default (eval.knn.k)"
    settings = KNNEvalConfig
    order = 1

    def run(self, ctx: EvalContext) -> Dict[str, Any]:
        from selfsup.eval.run import run_knn

        return run_knn(ctx.cfg, ctx.backbone, progress=ctx.progress)

    def summary(self, res: Dict[str, Any], ctx: EvalContext) -> List[str]:
        return [f"knn k={k} on {ctx.cfg.data.dataset}, {ctx.source}: top-1 {res[f'k{k}_top1']:.2f}%  "
                f"top-5 {res[f'k{k}_top5']:.2f}%" for k in ctx.cfg.eval.knn.k]

    def report_row(self, res: Dict[str, Any]) -> Dict[str, Any]:
        """Every k's top-1; the smallest k is the headline when k=20 was not run."""
        ks = sorted((int(m.group(1)), m.group(0)) for m in map(_K_TOP1.fullmatch, res) if m)
        row: Dict[str, Any] = {"detail": [", ".join(f"k={k}: {res[key]:.2f}" for k, key in ks)]}
        if "k20_top1" not in res and ks:
            row["top1"], row["top5"] = res[ks[0][1]], res.get(ks[0][1][:-5] + "_top5")
        return row
