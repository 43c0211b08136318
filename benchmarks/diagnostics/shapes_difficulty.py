"""How hard is the built-in shapes task for a backbone? Labels-only checks that size the demo.

For each number of classes K: a linear probe (L-BFGS) on raw pixels and on the random-init backbone, then the same
backbone + a linear classifier trained *with labels* (cross-entropy, horizontal flips, SGD Nesterov 0.9, lr 0.05,
batch 128) for ``--steps`` steps, its test top-1 printed every 100 steps. A task on which supervised training stays near
chance in the demo's budget cannot show self-supervised learning either.

    .venv/bin/python benchmarks/diagnostics/shapes_difficulty.py --classes 5 10 --steps 600 [key=value ...]

(``key=value``: overrides of selfsup/recipes/demo.yaml.)

Data and backbone are the demo recipe's (8,000 train / 2,000 test images at 32 px, ``convnet_tiny``). Results go to
benchmarks/results/shapes_difficulty.json; the printed Markdown table is what benchmarks/LOGBOOK.md records.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchmarks/common.py

from common import probes  # noqa: E402

from selfsup.config import load_config  # noqa: E402
from selfsup.engine.seeds import generator_for  # noqa: E402
from selfsup.eval.linear import fit_logistic_lbfgs  # noqa: E402
from selfsup.eval.run import load_backbone, probe_data  # noqa: E402


def supervised_curve(cfg, data, steps: int, batch: int = 128, every: int = 100) -> list:
    torch.manual_seed(cfg.seed)
    backbone = load_backbone(cfg, None)
    model = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.num_features, data.train.num_classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    pre = data.preprocess(cfg)
    xtr, ytr = pre(data.train.images), data.train.labels
    xte, yte = pre(data.test.images), data.test.labels
    curve = []
    model.train()
    for k in range(steps):
        g = generator_for(cfg.seed, "sup", k)
        idx = torch.randint(0, len(xtr), (batch,), generator=g)
        x = xtr[idx]
        flip = torch.rand(batch, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss = F.cross_entropy(model(x), ytr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (k + 1) % every == 0 or k + 1 == steps:
            model.eval()
            with torch.no_grad():
                acc = torch.cat([model(xte[i:i + 1000]).argmax(1) for i in range(0, len(xte), 1000)]).eq(yte)
            model.train()
            curve.append((k + 1, 100 * acc.float().mean().item()))
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--steps", type=int, default=600, help="supervised steps (batch 128)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for k in args.classes:
        t0 = time.perf_counter()
        cfg = load_config("demo", [*args.overrides, f"data.num_classes={k}"])
        data = probe_data(cfg)
        rnd = probes(cfg, load_backbone(cfg, None), data)
        tr, te = data.train, data.test
        pix = fit_logistic_lbfgs(tr.images.float().flatten(1) / 255, tr.labels, te.images.float().flatten(1) / 255,
                                 te.labels, num_classes=k,
                                 l2_grid=cfg.eval.linear.l2_grid, val_fraction=cfg.eval.linear.val_fraction,
                                 max_iter=cfg.eval.linear.max_iter, seed=cfg.seed)
        curve = supervised_curve(cfg, data, args.steps)
        rows[k] = {"chance": 100 / k, "pixels_linear_top1": pix["top1"], "random_init_linear_top1": rnd["linear_top1"],
                   "random_init_knn20_top1": rnd["knn20_top1"], "supervised_curve": curve,
                   "elapsed_s": time.perf_counter() - t0}
        print(f"K={k}: done in {rows[k]['elapsed_s'] / 60:.1f} min", flush=True)

    payload = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {torch.get_num_threads()} "
               f"threads", "torch": torch.__version__, "backbone": cfg.model.backbone,
               "command": "python benchmarks/diagnostics/shapes_difficulty.py " + " ".join(sys.argv[1:]), "rows": rows}
    (args.out / "shapes_difficulty.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\n{payload['command']}   ({payload['date']}, {payload['machine']}, {cfg.model.backbone})\n")
    marks = [s for s, _ in rows[args.classes[0]]["supervised_curve"]]
    print("| classes | chance | raw pixels linear | random init linear | random init kNN | "
          + " | ".join(f"supervised @{s}" for s in marks) + " |")
    print("|---:|---:|---:|---:|---:|" + "---:|" * len(marks))
    for k, r in rows.items():
        print(f"| {k} | {r['chance']:.1f} | {r['pixels_linear_top1']:.2f} | {r['random_init_linear_top1']:.2f} | "
              f"{r['random_init_knn20_top1']:.2f} | " + " | ".join(f"{a:.1f}" for _, a in r["supervised_curve"]) + " |")


if __name__ == "__main__":
    main()
