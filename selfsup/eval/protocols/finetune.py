"""``selfsup eval finetune``: fine-tune the encoder with a new classifier on a class-balanced fraction of the labels
(:func:`selfsup.eval.run.run_finetune`; the papers' protocols are presets in ``selfsup/recipes/eval/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

from selfsup.config import Config, FinetuneEvalConfig
from selfsup.eval.protocols import EvalContext, Protocol, number, register_protocol


@register_protocol("finetune")
class Finetune(Protocol):
    help = ("fine-tune the encoder with a new classifier on a class-balanced fraction of the labels "
            "(eval.finetune.labels: 0.01, 0.1, 1.0); the papers' protocols are presets: --preset relicv2_semi_1pct "
            "(see `selfsup recipes`)")
    settings = FinetuneEvalConfig
    frozen = False  # trains the encoder (and, with eval.finetune.head=projector, the pretrained head)
    order = 2

    def run(self, ctx: EvalContext) -> Dict[str, Any]:
        from selfsup.eval.run import run_finetune

        return run_finetune(ctx.cfg, ctx.checkpoint, progress=ctx.progress)

    def summary(self, res: Dict[str, Any], ctx: EvalContext) -> List[str]:
        fc = ctx.cfg.eval.finetune
        subset = f", subset {res['subset_file']}" if res["subset_file"] else ""
        return [f"fine-tune ({100 * fc.labels:g}% labels = {res['num_train']} images, classifier on "
                f"{'the projector' if fc.head == 'projector' else 'the backbone'}, {res['epochs']} epochs) on "
                f"{ctx.cfg.data.dataset}, {ctx.source}: top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%{subset}"]

    def name_parts(self, cfg: Config, presets: Sequence[str]) -> List[str]:
        """The presets' names when given, else the label fraction and where the classifier sits."""
        fc = cfg.eval.finetune
        return [Path(p).stem for p in presets] or [f"{100 * fc.labels:g}pct", fc.head]

    def report_row(self, res: Dict[str, Any]) -> Dict[str, Any]:
        return {"detail": [f"{100 * float(res.get('labels_fraction', 1)):g}% labels "
                           f"({number(res.get('num_train'), 'g')} images), classifier on the "
                           f"{res.get('head', 'backbone')}, {number(res.get('epochs'), 'g')} epochs"]}
