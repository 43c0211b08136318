"""selfsup against lightly 1.6, side by side: SimCLR, BYOL and DINO with the same backbone, views, batch, optimiser and
minutes, probed the same way in the same run.

    .venv/bin/python benchmarks/lightly_compare.py --minutes 5                    # sets up .venv-lightly on first use
    .venv/bin/python benchmarks/lightly_compare.py --minutes 2 --methods simclr --workers 0 2

lightly is a benchmark reference, not a dependency: the script installs ``lightly==1.6.0`` (with the project's torch
pin) into its own virtual environment ``.venv-lightly`` and runs ``benchmarks/lightly_worker.py`` there, which trains
with lightly's documented transforms, heads, losses and momentum updates around selfsup's backbone. The selfsup side
runs the same recipe through ``selfsup.engine.pretrain``. Both sides read one recipe, ``<method>_fmnist`` with
``--views`` (2 large views for SimCLR and BYOL, because lightly's transforms make two; DINO keeps its 2 + 6), and both
calibrate their step count to the same budget. The quality monitor is off on the selfsup side (lightly has none), so
the two loops do the same work. lightly's transforms run per image in ``DataLoader`` workers: ``--workers`` lists the
worker counts tried for it (the best is reported). Printed: a Markdown table with images/s, the throughput ratio and the
probes (L-BFGS linear and kNN k = 20 on all 60,000 training images), as recorded in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import calibrated_steps, machine, probes  # noqa: E402

from selfsup.config import load_config  # noqa: E402
from selfsup.engine.trainer import pretrain  # noqa: E402
from selfsup.eval.run import load_backbone, probe_data  # noqa: E402

VENV = ROOT / ".venv-lightly"
LIGHTLY = "lightly==1.6.0"
SAME_WORK = ["monitor.online_linear=false", "monitor.knn_every_steps=0", "train.progress=false"]
VIEWS = {  # lightly's SimCLR/BYOL transforms make exactly two views; SimCLR's two are alike and never solarized
    "simclr": ["views.large.count=2", "views.small.count=0", "views.large.solarize_p=[0.0]"],
    "byol": ["views.large.count=2", "views.small.count=0"],
    "dino": [],
}


def symmetric(recipe: str) -> list:
    """SimCLRTransform applies one crop scale and blur rate to both views: the recipe's first view's, on both sides."""
    large = load_config(recipe).views.large
    return [f"views.large.scale_min=[{large.scale_min[0]}]", f"views.large.blur_p=[{large.blur_p[0]}]"]


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} with {LIGHTLY} (about 2 minutes, once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.14.1", "torchvision==0.29.1", LIGHTLY,
                        "timm", "omegaconf", "safetensors"], check=True)
    return python


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--methods", default="simclr,byol,dino")
    ap.add_argument("--workers", type=int, nargs="+", default=[2], help="lightly DataLoader workers to try")
    ap.add_argument("--out", type=Path, default=Path("/tmp/selfsup-vs-lightly"))
    ap.add_argument("overrides", nargs="*", help="key=value for both sides")
    args = ap.parse_intermixed_args()
    python = ensure_venv()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/lightly_compare.py " + " ".join(sys.argv[1:])
    payload = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": command, "torch": torch.__version__,
               "machine": machine(load_config(f"{args.methods.split(',')[0]}_fmnist", args.overrides)), "rows": []}
    data = None
    for method in args.methods.split(","):
        recipe = f"{method}_fmnist"
        overrides = [*VIEWS[method], *(symmetric(recipe) if method == "simclr" else []), *args.overrides]
        cfg = load_config(recipe, [f"out={out / recipe / 'selfsup'}", *SAME_WORK, *overrides])
        cfg.train.steps, cfg.train.max_time_s = calibrated_steps(cfg, 60 * args.minutes, out), 60 * args.minutes
        run = pretrain(cfg)
        data = data or probe_data(cfg)
        ours = probes(cfg, load_backbone(cfg, str(run.out_dir / "backbone.safetensors")), data)
        ours.update(framework="selfsup", method=method, steps=run.step, images_per_s=run.images_per_s,
                    minutes=run.elapsed_s / 60, workers=cfg.data.workers)
        payload["rows"].append(ours)
        print(f"{method} selfsup: {ours}", flush=True)
        best = None
        for workers in args.workers:
            wdir = out / recipe / f"lightly_w{workers}"
            subprocess.run([str(python), str(ROOT / "benchmarks" / "lightly_worker.py"), "--recipe", recipe,
                            "--minutes", str(args.minutes), "--workers", str(workers), "--out", str(wdir),
                            *overrides], check=True)
            stats = json.loads((wdir / "stats.json").read_text())
            if best is None or stats["images_per_s"] > best[1]["images_per_s"]:
                best = (wdir, stats)
        wdir, stats = best
        theirs = probes(cfg, load_backbone(cfg, str(wdir / "backbone.safetensors")), data)
        theirs.update(framework="lightly 1.6.0", method=method, **stats)
        payload["rows"].append(theirs)
        print(f"{method} lightly: {theirs}", flush=True)
        (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")

    print(f"\n```bash\n{command}   # {payload['date']}, {payload['machine']}\n```\n")
    print("| method | framework | views | steps | images/s | selfsup speed-up | linear top-1 | kNN k=20 top-1 |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    rows = payload["rows"]
    for ours, theirs in zip(rows[::2], rows[1::2]):
        cfg = load_config(f"{ours['method']}_fmnist", VIEWS[ours["method"]])
        views = f"{cfg.views.large.count}x{cfg.views.large.size}" + (
            f"+{cfg.views.small.count}x{cfg.views.small.size}" if cfg.views.small.count else "")
        ratio = ours["images_per_s"] / theirs["images_per_s"]
        for r, speed in ((ours, f"**{ratio:.2f}x**"), (theirs, "1.00x")):
            name = r["framework"] + (f" ({r['workers']} workers)" if r["framework"] != "selfsup" else "")
            print(f"| {r['method']} | {name} | {views} | {r['steps']} | {r['images_per_s']:.0f} | {speed} | "
                  f"{r['linear_top1']:.2f} | {r['knn20_top1']:.2f} |")


if __name__ == "__main__":
    main()
