"""Does a SwAV run collapse, and how? Trains a recipe for a few steps and prints, every 10 steps, on the step's batch:
the loss, the mean pairwise cosine of the first large view's embeddings (1.0 = every image maps to one direction), the
spread of its prototype scores per image, the mean entropy of its Sinkhorn codes and of the second large view's
predictions (ln K = uniform), and how often the two large views' codes pick the same prototype. The statistics are
taken from the step's own forward (its embeddings, before the optimiser step). Used for LOGBOOK 16
(`benchmarks/LOGBOOK.md`); `dino_collapse.py` is its DINO twin.

    .venv/bin/python benchmarks/diagnostics/swav_collapse.py swav_fmnist --steps 150 [key=value ...]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchmarks/common.py

from common import mean_offdiagonal, row_entropy, short_run  # noqa: E402

import selfsup.methods.swav as swav  # noqa: E402
from selfsup.engine.trainer import pretrain  # noqa: E402


def main() -> None:
    cfg = short_run(__doc__, "swav", 150, "/tmp/selfsup-swav-collapse")
    if cfg.views.large.count < 2:
        raise SystemExit("needs at least 2 large views (views.large.count)")
    forward, embed = swav.SwAV.forward, swav.SwAV.embed

    def kept(self, views):  # the step's own embeddings, kept for the statistics instead of a second forward
        z, features = embed(self, views)
        self.traced_z = [v.detach() for v in z]
        return z, features

    def observed(self, views, ctx):
        out = forward(self, views, ctx)
        if ctx.step % 10 == 0:
            with torch.no_grad():
                z = self.traced_z
                off = mean_offdiagonal(z[0] @ z[0].T)
                scores = self.scores(z[0])
                use_queue = self.queue_in_use(ctx.epoch)
                codes = [self.codes(v, use_queue, i, len(v)) for i, v in enumerate(z[:2])]
                pred = F.softmax(self.scores(z[1]) / self.args.temperature, dim=1)
                agree = (codes[0].argmax(1) == codes[1].argmax(1)).float().mean().item()
            print(f"step {ctx.step:4d}  loss {out.loss.item():.3f}  z mean cosine {off:.3f}  "
                  f"score std {scores.std(1).mean().item():.4f}  code entropy {row_entropy(codes[0]):.3f}  "
                  f"prediction entropy {row_entropy(pred):.3f}  (ln K {math.log(scores.shape[1]):.3f})  "
                  f"same top prototype {agree:.3f}", flush=True)
        return out

    swav.SwAV.forward, swav.SwAV.embed = observed, kept
    pretrain(cfg)


if __name__ == "__main__":
    main()
