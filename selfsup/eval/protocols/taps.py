"""``selfsup eval taps``: probes at every depth of the backbone (Revisiting SSL Sec. 4.5; :mod:`selfsup.eval.taps`):
the table on stdout and the accuracy-vs-depth PNG next to the JSON (or in the run's evals/)."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

from selfsup.config import Config, TapsEvalConfig
from selfsup.eval.protocols import EvalContext, Protocol, register_protocol


@register_protocol("taps")
class Taps(Protocol):
    help = ("probes at every depth of the backbone (after_root, block1.. block4, pre_logits; VGG: block1..5, fc6, "
            "pre_logits), each tap max-pooled to eval.taps.max_dims values: L-BFGS, MLP and SGD probes "
            "(eval.taps.probes) on a share of the labels (eval.taps.fractions); writes the table and an "
            "accuracy-vs-depth PNG")
    settings = TapsEvalConfig
    order = 4

    def run(self, ctx: EvalContext) -> Dict[str, Any]:
        from selfsup.eval.plots import plot_depth
        from selfsup.eval.taps import run_taps

        res = run_taps(ctx.cfg, ctx.backbone, progress=ctx.progress)
        folder = ctx.figure_dir
        if folder is not None:
            lines = {f"{probe}, {float(frac):.0%} labels": accs
                     for probe, by_frac in res["results"].items() for frac, accs in by_frac.items()}
            png = plot_depth(lines, res["taps"], folder / f"{ctx.name}.png",
                             title=f"{ctx.cfg.model.backbone} ({ctx.source}): accuracy at every depth")
            res["plot"] = str(png)
        return res

    def summary(self, res: Dict[str, Any], ctx: EvalContext) -> List[str]:
        taps = res["taps"]
        out = [f"probes at every depth on {ctx.cfg.data.dataset}, {ctx.source} ({res['num_train']} train / "
               f"{res['num_test']} test images; taps pooled to <= {res['max_dims']} values):",
               "| probe | labels | " + " | ".join(taps) + " |",
               "|---|---:|" + "---:|" * len(taps)]
        for probe, by_frac in res["results"].items():
            for frac, accs in by_frac.items():
                out.append(f"| {probe} | {frac} | " + " | ".join(f"{accs[t]:.2f}" for t in taps) + " |")
        if "plot" in res:
            out.append(f"plot: {res['plot']}")
        return out

    def name_parts(self, cfg: Config, presets: Sequence[str]) -> List[str]:
        fractions = list(cfg.eval.taps.fractions)
        return [] if fractions == [1.0] else ["labels" + "-".join(f"{f:g}" for f in fractions)]
