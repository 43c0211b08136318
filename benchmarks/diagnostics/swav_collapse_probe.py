"""Has a finished SwAV run collapsed? Loads a run folder's checkpoint and prints, on the first 256 test images
(centre view, no augmentation), the spread of the backbone features, the mean pairwise cosine of the embeddings z
(1.0 = every image maps to one direction), the spread of the prototype scores per image, the smallest singular values
of the prototype matrix, and the student's entropy (ln K = uniform predictions). Train-mode (batch-statistics) and
eval-mode BatchNorm are both shown. Used for LOGBOOK 15 (`benchmarks/LOGBOOK.md`).

    .venv/bin/python benchmarks/diagnostics/swav_collapse_probe.py RUN_DIR
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchmarks/common.py

from common import mean_offdiagonal, row_entropy  # noqa: E402

from selfsup.config import load_config  # noqa: E402
from selfsup.data.datasets import build_dataset  # noqa: E402
from selfsup.data.views import normalize  # noqa: E402
from selfsup.engine.checkpoint import load_checkpoint  # noqa: E402
from selfsup.methods.base import build_method  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--images", type=int, default=256)
    args = ap.parse_args()
    cfg = load_config(str(args.run / "config.yaml"), [])
    if cfg.method.name != "swav":
        raise SystemExit(f"{args.run} is a {cfg.method.name} run, not swav")
    method = build_method(cfg)
    ckpt = load_checkpoint(args.run / "last.ckpt")
    method.load_state_dict(ckpt["method"])
    ds = build_dataset(cfg.data, "test")
    x = torch.stack([ds[i]["image"] for i in range(min(args.images, len(ds)))]).float() / 255
    x = normalize(x, ds.mean, ds.std)
    protos = F.normalize(method.prototypes.weight.detach(), dim=1)
    print(f"{args.run}: step {ckpt['step']}, {len(protos)} prototypes "
          f"(uniform = ln K = {math.log(len(protos)):.3f})")
    print("prototypes: smallest singular values", [round(v, 4) for v in torch.linalg.svdvals(protos)[-4:].tolist()])
    for mode in ("eval", "train"):
        method.train(mode == "train")
        with torch.no_grad():
            h = method.backbone(x)
            z = F.normalize(method.projector(h), dim=1)
            scores = z @ protos.T
            p = F.softmax(scores / cfg.method.temperature, dim=1)
        print(f"{mode:>5} BN: feature std over images {h.std(0).mean():.4f}, z mean pairwise cosine "
              f"{mean_offdiagonal(z @ z.T):.3f}, score std over prototypes {scores.std(1).mean():.5f}, "
              f"student entropy {row_entropy(p):.3f}")


if __name__ == "__main__":
    main()
