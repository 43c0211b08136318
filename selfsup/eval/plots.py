"""Pictures a person would rather look at than read: loss curves and grids of sampled views."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_train_log(path: Path) -> Dict[str, List[float]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols: Dict[str, List[float]] = {}
    for r in rows:
        for k, v in r.items():
            if v not in ("", None):
                cols.setdefault(k, []).append(float(v))
    return cols


def plot_loss_curve(train_log: Path, png: Path, title: str = "pretraining loss") -> Path:
    """Loss per step (light) with a moving average (dark), and the learning rate on a second axis."""
    cols = read_train_log(train_log)
    steps, loss = cols.get("step", []), cols.get("loss", [])
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, loss, color="tab:blue", alpha=0.3, lw=1, label="loss")
    if len(loss) >= 5:
        w = max(5, len(loss) // 25)
        t = torch.tensor(loss)
        smooth = torch.nn.functional.avg_pool1d(t[None, None], w, stride=1).flatten().tolist()
        ax.plot(steps[w - 1:], smooth, color="tab:blue", lw=2, label=f"moving average ({w} steps)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if "lr" in cols:
        ax2 = ax.twinx()
        ax2.plot(steps, cols["lr"], color="tab:orange", lw=1, ls="--", label="learning rate")
        ax2.set_ylabel("learning rate", color="tab:orange")
    ax.legend(loc="upper right")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return png


def _to_image(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(3, H, W) normalised float -> (H, W, 3) in [0, 1] for imshow."""
    m = torch.tensor(mean, dtype=x.dtype).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(3, 1, 1)
    return (x * s + m).clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def plot_view_grid(images: torch.Tensor, views, mean: Sequence[float], std: Sequence[float], png: Path,
                   masks: Optional[torch.Tensor] = None, title: str = "sampled views") -> Path:
    """One row per source image: the image, its mask (if any), then every large and small view."""
    n = images.shape[0]
    cols = 1 + (masks is not None) + len(views.large) + len(views.small)
    fig, axes = plt.subplots(n, cols, figsize=(1.5 * cols, 1.5 * n + 0.4), dpi=100, squeeze=False)
    heads = ["image"] + (["mask"] if masks is not None else [])
    heads += [f"large {i + 1}" for i in range(len(views.large))] + [f"small {i + 1}" for i in range(len(views.small))]
    for r in range(n):
        panels = [images[r].permute(1, 2, 0).cpu().numpy()]
        if masks is not None:
            panels.append(masks[r, 0].float().cpu().numpy() / 255.0)
        panels += [_to_image(v[r].float(), mean, std) for v in views.large + views.small]
        for c, (ax, img) in enumerate(zip(axes[r], panels)):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255 if c == 0 else 1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(heads[c], fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return png


def plot_bars(results: Dict[str, Dict[str, float]], metric_keys: Sequence[str], png: Path, title: str) -> Path:
    """Grouped bars: one group per metric, one bar per model (e.g. pretrained vs random init)."""
    names = list(results)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        vals = [results[name][k] for k in metric_keys]
        xs = [j + i * width for j in range(len(metric_keys))]
        bars = ax.bar(xs, vals, width=width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(metric_keys))], list(metric_keys))
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png
