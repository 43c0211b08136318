"""The demo (``selfsup demo``): RELICv2 on the built-in procedural data, end to end in a few CPU minutes.

1. pretrain RELICv2 (``selfsup/recipes/demo.yaml``) on the built-in shapes dataset, with the quality monitor on
   (online linear classifier and periodic kNN, in the progress bar and ``curves.png``);
2. linear-probe (L-BFGS, A6) and kNN-probe the pretrained backbone next to a random-init backbone of the same
   architecture, on the same features pipeline, and find each one's nearest training images of a few test images;
3. print both and write ``<out>/report.md`` with ``probes.png``, ``neighbours.png``, ``curves.png``, ``views.png`` and
   ``results.json``.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, cast

import torch

from selfsup.config import load_config
from selfsup.data.base import collate
from selfsup.data.datasets import build_dataset
from selfsup.data.views import MultiViewSampler
from selfsup.engine.trainer import pretrain
from selfsup.errors import ConfigError
from selfsup.eval.plots import plot_bars, plot_curves, plot_neighbours, plot_view_grid
from selfsup.eval.run import features, load_backbone, probe_data, run_knn, run_linear, write_json
from selfsup.metafiles import make_output_dir
from selfsup.metrics import nearest_neighbours

NEIGHBOUR_QUERIES = 8  # test images shown with their nearest training images


def run_demo(out: Path, *, recipe: str = "demo", overrides: Sequence[str] = (), minutes: Optional[float] = None,
             progress: bool = True, argv: Optional[Sequence[str]] = None) -> dict:
    """Run the demo into ``out``; ``argv`` (the command-line words after ``selfsup``) is recorded in the report."""
    t_start = time.perf_counter()
    out = make_output_dir(out, "--out")
    extra = [f"out={out / 'run'}"]
    if not progress:
        extra.append("train.progress=false")
    cfg = load_config(recipe, [*extra, *overrides])
    if minutes is not None:  # a longer (shorter) budget stretches (shrinks) the schedule with it
        cfg = load_config(recipe, [*extra, *budget_overrides(cfg, minutes), *overrides])
    v = cfg.views
    print(f"selfsup demo: RELICv2 on the built-in '{cfg.data.dataset}' data ({cfg.data.num_classes} classes, "
          f"{cfg.data.train_size} train / {cfg.data.test_size} test images at {cfg.data.image_size} px), "
          f"backbone {cfg.model.backbone}, {v.large.count}x{v.large.size} + {v.small.count}x{v.small.size} views, "
          f"batch {cfg.train.batch_size}")

    # 1. the views the method sees, before training (a picture of the recipe)
    train_ds = build_dataset(cfg.data, "train")
    batch = collate([train_ds[i] for i in range(8)])
    sampler = MultiViewSampler(cfg.views, train_ds.mean, train_ds.std)
    views = sampler.sample(batch["image"], batch["mask"], torch.Generator().manual_seed(cfg.seed))
    plot_view_grid(batch["image"], views, train_ds.mean, train_ds.std, out / "views.png", masks=batch["mask"],
                   title=f"{v.large.count} large + {v.small.count} small views per image "
                         f"(background masking p_m={v.mask_p})")

    # 2. pretrain
    result = pretrain(cfg)
    plot_curves(result.out_dir / "train_log.csv", out / "curves.png", title="RELICv2 pretraining loss")

    # 3. probe the pretrained and a random-init backbone on the same data; their nearest neighbours
    data = probe_data(cfg)
    rows, neighbours = {}, {}
    queries = torch.arange(NEIGHBOUR_QUERIES) * (len(data.test) // NEIGHBOUR_QUERIES)  # spread over the test set
    for name, ckpt in (("RELICv2 pretrained", result.out_dir / "backbone.safetensors"), ("random init", None)):
        backbone = load_backbone(cfg, str(ckpt) if ckpt else None)
        feats = features(cfg, backbone, data, progress=progress)
        lin = run_linear(cfg, backbone, data, feats=feats)
        knn = run_knn(cfg, backbone, data, feats=feats)
        rows[name] = {"linear top-1": lin["top1"], "linear top-5": lin["top5"], "l2": lin["l2"],
                      **{f"kNN k={k} top-1": knn[f"k{k}_top1"] for k in cfg.eval.knn.k}}
        neighbours[name] = nearest_neighbours(feats[0], feats[2][queries], k=5)
    plot_bars(rows, ["linear top-1", *[f"kNN k={k} top-1" for k in cfg.eval.knn.k]], out / "probes.png",
              title=f"frozen {cfg.model.backbone} on {cfg.data.dataset} (test set)")
    # the demo's in-memory data: every item is a dict (only a folder dataset can skip an unreadable image)
    test_items = [cast(Dict[str, Any], data.test[int(i)]) for i in queries]
    shown = sorted({int(i) for idx in neighbours.values() for i in idx.flatten()})
    train_images = {i: cast(Dict[str, Any], data.train[i])["image"] for i in shown}
    plot_neighbours(torch.stack([it["image"] for it in test_items]), train_images,
                    neighbours,
                    out / "neighbours.png", query_labels=[it["label"] for it in test_items],
                    bank_labels=data.train.labels.tolist(), class_names=data.train.class_names,
                    title="test images (left) and their 5 nearest training images (cosine on frozen features); "
                          "green: same class")

    elapsed = time.perf_counter() - t_start
    top5 = ["linear top-5"] if data.num_classes > 5 else []  # with 5 classes or fewer top-5 is always 100 %
    keys = ["linear top-1", *top5, *[f"kNN k={k} top-1" for k in cfg.eval.knn.k]]
    table = _table(rows, keys)
    ssl, rnd = rows["RELICv2 pretrained"]["linear top-1"], rows["random init"]["linear top-1"]
    verdict = (f"RELICv2 beats random init by {ssl - rnd:+.2f} points of linear top-1" if ssl > rnd
               else f"RELICv2 does NOT beat random init ({ssl - rnd:+.2f} points): train longer (--minutes)")
    print()
    print(table)
    print(verdict)
    print(f"pretraining: {result.step} steps, {result.images_per_s:.0f} images/s, data wait "
          f"{100 * result.data_wait_fraction:.1f}%; demo total {elapsed / 60:.1f} min")
    print(f"report: {out / 'report.md'}")

    command = "selfsup " + " ".join(shlex.quote(a) for a in (argv or ["demo"]))
    payload = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "threads": torch.get_num_threads(),
               "results": rows, "steps": result.step, "images_per_s": result.images_per_s,
               "data_wait_fraction": result.data_wait_fraction, "elapsed_s": elapsed, "monitor": result.monitor,
               "monitor_fraction": result.monitor_fraction}
    write_json(out / "results.json", payload)
    (out / "report.md").write_text(
        f"# selfsup demo\n\nCommand: `{command}`  \nDate: {payload['date']}  \n"
        f"Pretraining: {result.step} steps of RELICv2, {result.images_per_s:.0f} source images/s, "
        f"data wait {100 * result.data_wait_fraction:.1f}%, total {elapsed / 60:.1f} min.\n\n"
        f"{table}\n\n{verdict}.\n\n![probes](probes.png)\n\n![neighbours](neighbours.png)\n\n"
        f"![curves](curves.png)\n\n![views](views.png)\n")
    return payload


def budget_overrides(cfg, minutes: float) -> list:
    """``--minutes M``: the time cap becomes M minutes and the step count (hence the warm-up + cosine schedule) scales
    with it, ``steps x 60 M / max_time_s``, so that the schedule still ends near the cap on the machine the recipe was
    sized for (a faster machine finishes early; a slower one stops at the cap). Without a cap in the recipe only the
    cap is set. Explicit ``train.steps=``/``train.max_time_s=`` overrides still win."""
    if minutes <= 0:
        raise ConfigError(f"--minutes must be > 0, got {minutes}")
    out = [f"train.max_time_s={60 * minutes}"]
    if cfg.train.max_time_s and cfg.train.steps:
        out.append(f"train.steps={max(1, round(cfg.train.steps * 60 * minutes / cfg.train.max_time_s))}")
    return out


def _table(rows: dict, keys: Sequence[str]) -> str:
    head = "| backbone | " + " | ".join(keys) + " |"
    sep = "|---|" + "---:|" * len(keys)
    body = ["| " + name + " | " + " | ".join(f"{r[k]:.2f}" for k in keys) + " |" for name, r in rows.items()]
    return "\n".join([head, sep, *body])
