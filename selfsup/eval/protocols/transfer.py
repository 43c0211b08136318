"""``selfsup eval transfer``: transfer to the dataset of ``data.*`` (RELICv2 App. D.3), linear or fine-tuned, with the
setting chosen on a val split (:func:`selfsup.eval.transfer.run_transfer`)."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

from selfsup.config import Config, TransferEvalConfig
from selfsup.eval.protocols import EvalContext, Protocol, number, register_protocol


@register_protocol("transfer")
class Transfer(Protocol):
    help = ("transfer to the dataset of data.* (override it, e.g. data.dataset=fashion_mnist): linear (L-BFGS, L2 "
            "chosen on a val split) or finetune (lr x weight decay x epochs chosen on val), refitted on train and "
            "reported on test (eval.transfer.*)")
    settings = TransferEvalConfig
    frozen = False  # builds a fresh backbone per grid point
    order = 3

    def run(self, ctx: EvalContext) -> Dict[str, Any]:
        from selfsup.eval.transfer import run_transfer

        return run_transfer(ctx.cfg, ctx.checkpoint, progress=ctx.progress)

    def summary(self, res: Dict[str, Any], ctx: EvalContext) -> List[str]:
        chosen = ", ".join(f"{k}={v:g}" for k, v in res["chosen"].items())
        return [f"transfer ({res['mode']}) to {ctx.cfg.data.dataset}, {ctx.source}: top-1 {res['top1']:.2f}%  "
                f"mean per-class {res['mean_per_class']:.2f}%  top-5 {res['top5']:.2f}%  (chosen on val by "
                f"{res['metric']}: {chosen})"]

    def name_parts(self, cfg: Config, presets: Sequence[str]) -> List[str]:
        return [cfg.eval.transfer.mode]

    def report_row(self, res: Dict[str, Any]) -> Dict[str, Any]:
        chosen = ", ".join(f"{k}={v:g}" for k, v in (res.get("chosen") or {}).items())
        return {"detail": [f"{res.get('mode')}; mean per-class {number(res.get('mean_per_class'))}; {chosen}"]}
