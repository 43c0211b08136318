"""``selfsup eval linear``: the linear probe of ``eval.linear`` on the frozen backbone
(:func:`selfsup.eval.run.run_linear`: L-BFGS on cached features, A6, or the SGD protocol, RELICv2 App. D.1)."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

from selfsup.config import Config, LinearEvalConfig
from selfsup.eval.protocols import EvalContext, Protocol, register_protocol


@register_protocol("linear")
class Linear(Protocol):
    help = ("linear probe: L-BFGS logistic regression on cached features (default) or the SGD protocol "
            "(eval.linear.protocol=sgd)")
    settings = LinearEvalConfig
    result_names = ("lbfgs", "sgd")  # the result's "protocol" is the probe's (run_linear's "protocol" wins)
    order = 0

    def run(self, ctx: EvalContext) -> Dict[str, Any]:
        from selfsup.eval.run import run_linear

        return run_linear(ctx.cfg, ctx.backbone, progress=ctx.progress)

    def summary(self, res: Dict[str, Any], ctx: EvalContext) -> List[str]:
        extra = f"l2={res['l2']:g}" if res["protocol"] == "lbfgs" else f"{res['epochs']} epochs"
        return [f"linear ({res['protocol']}) on {ctx.cfg.data.dataset}, {ctx.source}: top-1 {res['top1']:.2f}%  "
                f"top-5 {res['top5']:.2f}%  ({extra})"]

    def name_parts(self, cfg: Config, presets: Sequence[str]) -> List[str]:
        return [cfg.eval.linear.protocol]

    def report_row(self, res: Dict[str, Any]) -> Dict[str, Any]:
        return {"detail": [f"L-BFGS, l2={res['l2']:g}"]} if "l2" in res else {}
