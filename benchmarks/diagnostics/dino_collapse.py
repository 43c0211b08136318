"""Does a DINO run collapse? Trains a recipe for a few steps and prints, every 10 steps, statistics of the teacher on
the first large view: the spread of the backbone features across the batch, the mean pairwise cosine of the bottleneck
embeddings (1.0 = every image maps to one direction) and the spread of the logits across the batch and across the
prototypes. Used for LOGBOOK 13 (`benchmarks/LOGBOOK.md`).

    .venv/bin/python benchmarks/diagnostics/dino_collapse.py dino_shapes --steps 80 [key=value ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchmarks/common.py

from common import mean_offdiagonal, short_run  # noqa: E402

import selfsup.methods.dino as dino  # noqa: E402
from selfsup.engine.trainer import pretrain  # noqa: E402


def main() -> None:
    cfg = short_run(__doc__, "dino", 80, "/tmp/selfsup-dino-collapse")
    forward = dino.DINO.forward

    def observed(self, views, ctx):
        if ctx.step % 10 == 0:
            with torch.no_grad():
                feats = self.teacher_backbone(views.large[0])
                z = torch.nn.functional.normalize(self.teacher_head.mlp(feats), dim=-1)
                logits = self.teacher_head(feats)
                off = mean_offdiagonal(z @ z.T)
                print(f"step {ctx.step:4d}  backbone spread {(feats.std(0).mean() / feats.abs().mean()).item():.3f}  "
                      f"bottleneck mean cosine {off:.3f}  logit std over batch {logits.std(0).mean().item():.4f}  "
                      f"over prototypes {logits.std(1).mean().item():.4f}", flush=True)
        return forward(self, views, ctx)

    dino.DINO.forward = observed
    pretrain(cfg)


if __name__ == "__main__":
    main()
