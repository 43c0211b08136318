"""Pictures a person would rather look at than read: loss curves and grids of sampled views."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union, cast

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from selfsup.errors import DataError  # noqa: E402
from selfsup.metafiles import read_csv_log  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.collections import PathCollection


def save_figure(fig, png: Path, tight: bool = False) -> Path:
    """Write ``fig`` to ``png`` (its folder created; ``tight``: bbox_inches="tight") and close it."""
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, **({"bbox_inches": "tight"} if tight else {}))
    plt.close(fig)
    return png


#: the columns of ``train_log.csv`` (``selfsup.engine.steplog.StepLog.FIELDS``; every one of them is a number)
TRAIN_LOG_COLUMNS = ("step", "loss", "lr", "weight_decay", "ema_momentum", "images_per_s", "data_wait", "time_s",
                     "online_loss", "online_top1", "knn_top1", "online_test_top1", "monitor_fraction", "skipped",
                     "pretext_top1")


def read_train_log_rows(path: Path) -> List[Dict[str, str]]:
    """The rows of a run's ``train_log.csv``, checked: text, short fields, ``step`` and ``loss`` columns, every known
    column a number where filled, and every row's ``step`` a whole number >= 0. A damaged log is one
    :class:`~selfsup.errors.DataError` line naming the file, the row and the column (``float(cell)`` is safe after)."""
    path = Path(path)
    rows = read_csv_log(path, "training log", numeric=TRAIN_LOG_COLUMNS, required=("step", "loss"))
    for i, row in enumerate(rows):
        cell = row.get("step")
        value = float(cell) if cell not in ("", None) else None
        if value is None or not math.isfinite(value) or value < 0 or value != int(value):
            raise DataError(f"{path}: training log row {i + 2}, column 'step': {str(cell)[:40]!r} is not a step "
                            f"number (a whole number >= 0)")
    return rows


def log_series(rows: Sequence[Dict[str, str]], key: str) -> List[Tuple[float, float]]:
    """``(step, value)`` of every row of a checked log (:func:`read_train_log_rows`) that has ``key``; an infinite
    value is kept as NaN (a gap in the plot)."""
    out = []
    for r in rows:
        cell = r.get(key)
        if cell in ("", None):
            continue
        v = float(cell)
        out.append((float(r["step"]), v if math.isfinite(v) else math.nan))
    return out


def read_train_log(path: Path) -> Dict[str, List[float]]:
    """Each column of a run's ``train_log.csv`` as a list of its filled cells (read by :func:`read_train_log_rows`)."""
    cols: Dict[str, List[float]] = {}
    for r in read_train_log_rows(path):
        for k, v in r.items():
            if k in TRAIN_LOG_COLUMNS and v not in ("", None):
                cols.setdefault(k, []).append(float(v))
    return cols


MONITOR_CURVES = (  # train_log.csv column, label, style
    ("knn_top1", "kNN k=20 top-1 (test subset)", dict(color="tab:green", marker="o", ms=3, lw=1.5)),
    ("online_test_top1", "online linear top-1 (test subset)", dict(color="tab:purple", marker="s", ms=3, lw=1.5)),
    ("online_top1", "online linear top-1 (augmented train views)", dict(color="tab:purple", alpha=0.25, lw=1)),
)


def plot_curves(train_log: Path, png: Path, title: str = "pretraining loss",
                rows: Optional[Sequence[Dict[str, str]]] = None) -> Path:
    """Loss per step (light) with a moving average (dark), and the learning rate on a second axis; when the run was
    monitored (``monitor.*``), a second panel with the online classifier's and the kNN probe's top-1 against the step.

    The log is read through :func:`read_train_log_rows` (``rows``: already read), so a damaged log is one
    :class:`~selfsup.errors.DataError` line, never a traceback."""
    rows = read_train_log_rows(train_log) if rows is None else rows
    loss_pts = log_series(rows, "loss")
    steps, loss = [p[0] for p in loss_pts], [p[1] for p in loss_pts]
    monitored = [c for c in MONITOR_CURVES if log_series(rows, c[0])]
    fig, axes = plt.subplots(1, 1 + bool(monitored), figsize=(7 + 5 * bool(monitored), 4), dpi=110, squeeze=False)
    ax = axes[0, 0]
    ax.plot(steps, loss, color="tab:blue", alpha=0.3, lw=1, label="loss")
    if len(loss) >= 5:
        w = max(5, len(loss) // 25)
        t = torch.tensor(loss)
        smooth = torch.nn.functional.avg_pool1d(t[None, None], w, stride=1).flatten().tolist()
        ax.plot(steps[w - 1:], smooth, color="tab:blue", lw=2, label=f"moving average ({w} steps)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title.replace("$", r"\$"))  # a run name is text, not mathtext (bad mathtext raises)
    ax.grid(alpha=0.3)
    lr = log_series(rows, "lr")
    if lr:
        ax2 = ax.twinx()
        ax2.plot(*zip(*lr), color="tab:orange", lw=1, ls="--", label="learning rate")
        ax2.set_ylabel("learning rate", color="tab:orange")
    ax.legend(loc="upper right")
    if monitored:
        _plot_monitor(axes[0, 1], rows, monitored)
    fig.tight_layout()
    return save_figure(fig, png)


def _plot_monitor(ax, rows: Sequence[Dict[str, str]], curves) -> None:
    """Each monitored accuracy against the step it was measured at (its rows only: kNN runs every N steps)."""
    for key, label, style in curves:
        pts = log_series(rows, key)
        if key == "online_top1" and len(pts) >= 5:  # noisy per batch: a moving average
            w = max(5, len(pts) // 25)
            smooth = torch.nn.functional.avg_pool1d(torch.tensor([p[1] for p in pts])[None, None], w, stride=1)
            pts = list(zip([p[0] for p in pts][w - 1:], smooth.flatten().tolist()))
        if pts:
            ax.plot(*zip(*pts), label=label, **style)
    ax.set_xlabel("step")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("quality monitored during pretraining")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def _to_image(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(3, H, W) normalised float -> (H, W, 3) in [0, 1] for imshow."""
    m = torch.tensor(mean, dtype=x.dtype).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(3, 1, 1)
    return (x * s + m).clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def plot_view_grid(images: torch.Tensor, views, mean: Sequence[float], std: Sequence[float], png: Path,
                   masks: Optional[torch.Tensor] = None, title: str = "sampled views",
                   sizes: Optional[torch.Tensor] = None) -> Path:
    """One row per source image: the image, its mask (if any), then every large and small view. ``sizes`` (h, w per
    image) shows each image of a padded canvas at its own size, without the padding."""
    n = images.shape[0]
    cols = 1 + (masks is not None) + len(views.large) + len(views.small)
    fig, axes = plt.subplots(n, cols, figsize=(1.5 * cols, 1.5 * n + 0.4), dpi=100, squeeze=False)
    heads = ["image"] + (["mask"] if masks is not None else [])
    heads += [f"large {i + 1}" for i in range(len(views.large))] + [f"small {i + 1}" for i in range(len(views.small))]
    for r in range(n):
        h, w = (int(v) for v in sizes[r]) if sizes is not None else images.shape[-2:]
        panels = [images[r, :, :h, :w].permute(1, 2, 0).cpu().numpy()]
        if masks is not None:
            panels.append(masks[r, 0, :h, :w].float().cpu().numpy() / 255.0)
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
    return save_figure(fig, png)


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


def plot_learning_curves(curves: Dict[str, Dict[Union[float, str], Dict[str, float]]],
                         baselines: Dict[str, Dict[str, float]], png: Path, title: str,
                         x_label: str = "pretraining wall-clock minutes") -> Path:
    """Probe accuracy against training time: one panel per probe (``linear_top1``, ``knn20_top1``), one line per
    representation (``curves[name][minutes][probe]``), and the ``baselines`` (raw pixels, random init) as horizontal
    dashed lines."""
    probes = (("linear_top1", "linear probe top-1 (%)"), ("knn20_top1", "kNN k=20 top-1 (%)"))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
    for ax, (key, label) in zip(axes, probes):
        for i, (name, curve) in enumerate(curves.items()):
            xs = sorted(float(m) for m in curve)
            ys = [curve[m][key] if m in curve else curve[str(m)][key] for m in xs]
            style = dict(ls="--", color="black") if name.startswith("supervised") else dict(color=f"C{i}")
            ax.plot(xs, ys, marker="o", ms=4, lw=1.5, label=name, **style)
        for j, (name, row) in enumerate(baselines.items()):
            ax.axhline(row[key], color="gray", ls=(0, (2, 2 + 2 * j)), lw=1.2, label=f"{name} ({row[key]:.1f})")
        ax.set_xlabel(x_label)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, png)


def plot_neighbours(queries: torch.Tensor, bank, neighbours: Dict[str, torch.Tensor], png: Path,
                    query_labels: Optional[Sequence[int]] = None, bank_labels: Optional[Sequence[int]] = None,
                    class_names: Optional[Sequence[str]] = None, title: str = "nearest neighbours") -> Path:
    """One row per query image: the query, then for each representation in ``neighbours`` (name -> ``(Q, k)`` indices
    into ``bank``) its k nearest bank images. With labels, each neighbour's frame is green when its class is the
    query's and red otherwise. Images are uint8 ``(3, H, W)``: ``queries`` stacked, ``bank`` anything indexed by the
    neighbour indices (a tensor, or a dict of just the images shown)."""
    names = list(neighbours)
    k = int(next(iter(neighbours.values())).shape[1])
    cols = 1 + len(names) * k
    q = queries.shape[0]
    fig, axes = plt.subplots(q, cols, figsize=(1.1 * cols + 0.4 * len(names), 1.15 * q + 0.6), dpi=100,
                             squeeze=False, gridspec_kw={"wspace": 0.08, "hspace": 0.12})
    for r in range(q):
        panels: List[Tuple[Any, Optional[int]]] = [(queries[r], None)]
        for name in names:
            panels += [(bank[int(i)], int(i)) for i in neighbours[name][r]]
        for c, (ax, (img, idx)) in enumerate(zip(axes[r], panels)):
            ax.imshow(img.permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if idx is not None and query_labels is not None and bank_labels is not None:
                color = "tab:green" if bank_labels[idx] == query_labels[r] else "tab:red"
                for side in ax.spines.values():
                    side.set_edgecolor(color)
                    side.set_linewidth(2.5)
            if c == 0 and query_labels is not None:
                label = query_labels[r]
                ax.set_ylabel(class_names[label] if class_names else str(label), fontsize=7)
        axes[r, 0].set_title("query" if r == 0 else "", fontsize=8)
    for j, name in enumerate(names):
        axes[0, 1 + j * k + k // 2].set_title(f"{name}: top-{k}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, png, tight=True)


def plot_nn_distances(results: Dict[str, dict], png: Path, class_names: Optional[Sequence[str]] = None,
                      title: str = "distances to the 5 nearest neighbours (RELICv2 Fig. 6)") -> Path:
    """One panel per representation: row = test image (classes in blocks), a point at each of its nearest neighbours'
    positions, coloured by the distance; dashed lines mark the class blocks."""
    names = list(results)
    vmax = max(float(r["distances"].max()) for r in results.values())
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names) + 0.8, 4.6), dpi=110, squeeze=False)
    scatter = None
    for ax, name in zip(axes[0], names):
        r = results[name]
        m, k = r["neighbours"].shape
        rows = torch.arange(m)[:, None].expand(m, k)
        scatter = ax.scatter(r["neighbours"].flatten().numpy(), rows.flatten().numpy(),
                             c=r["distances"].flatten().numpy(), s=3, cmap="viridis", vmin=0.0, vmax=vmax)
        for b in r["block"][1:-1]:
            ax.axhline(b - 0.5, color="gray", lw=0.6, ls="--")
            ax.axvline(b - 0.5, color="gray", lw=0.6, ls="--")
        ticks = [(a + b) / 2 for a, b in zip(r["block"][:-1], r["block"][1:])]
        labels = [class_names[int(r["labels"][int(a)])] if class_names else str(int(r["labels"][int(a)]))
                  for a in r["block"][:-1]]
        ax.set_xticks(ticks, labels, fontsize=7)
        ax.set_yticks(ticks, labels, fontsize=7, rotation=90, va="center")
        ax.set_xlim(-0.5, m - 0.5)
        ax.set_ylim(m - 0.5, -0.5)
        ax.set_title(f"{name}: {100 * r['same_class']:.1f}% same class", fontsize=9)
    # set by the first panel: max() above refuses an empty ``results``
    fig.colorbar(cast("PathCollection", scatter), ax=axes[0].tolist(), label="l2 distance (normalised features)",
                 shrink=0.85)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, png, tight=True)


def plot_ratio_distributions(ratios: Dict[str, torch.Tensor], png: Path,
                             title: str = "linear discriminant ratio per test image (RELICv2 Fig. 7)") -> Path:
    """Overlaid density histograms of the between/within distance ratio, one per representation, medians dashed."""
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    lo = min(float(r.min()) for r in ratios.values())
    hi = max(float(r.max()) for r in ratios.values())
    bins = torch.linspace(lo, hi, 60).numpy()
    for i, (name, r) in enumerate(ratios.items()):
        med = float(r.median())
        # matplotlib's stubs omit arrays for ``bins``; hist takes any array-like
        ax.hist(r.numpy(), bins=bins, density=True, histtype="step", lw=1.6,  # type: ignore[arg-type]
                color=f"C{i}", label=f"{name} (median {med:.3f})")
        ax.axvline(med, color=f"C{i}", ls="--", lw=1)
    ax.axvline(1.0, color="gray", lw=0.8)
    ax.set_xlabel("mean distance to other classes / mean distance within the class")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, png)


def plot_embeddings(embeddings: Dict[str, tuple], png: Path, class_names: Optional[Sequence[str]] = None,
                    title: str = "t-SNE of the test representations") -> Path:
    """One panel per representation: the 2-D points coloured by class, one legend for all."""
    names = list(embeddings)
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 4.6), dpi=110, squeeze=False)
    cmap = plt.get_cmap("tab10" if max(int(e[1].max()) for e in embeddings.values()) < 10 else "tab20")
    for ax, name in zip(axes[0], names):
        pts, y = embeddings[name]
        for c in sorted(set(y.tolist())):
            sel = y == c
            ax.scatter(pts[sel, 0], pts[sel, 1], s=3, color=cmap(c % cmap.N),
                       label=class_names[c] if class_names else str(c))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name, fontsize=9)
    axes[0, -1].legend(fontsize=7, markerscale=3, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, png, tight=True)


def plot_accuracy_vs_images(curves: Dict[str, List[tuple]], png: Path, ylabel: str,
                            title: str = "accuracy against images seen in pretraining (RELICv2 Fig. 5)") -> Path:
    """One line per run: ``curves[name]`` = [(images seen, accuracy)]."""
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for i, (name, pts) in enumerate(curves.items()):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", ms=4, color=f"C{i}", label=name)
    ax.set_xlabel("images seen during pretraining")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, png)


def _depth_axes(ax, lines: Dict[str, Dict[str, float]], taps: Sequence[str]) -> None:
    for label, values in lines.items():
        xs = [i for i, t in enumerate(taps) if t in values]
        ax.plot(xs, [values[taps[i]] for i in xs], marker="o", label=label)
    ax.set_xticks(range(len(taps)), list(taps), rotation=30, ha="right", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_depth(lines: Dict[str, Dict[str, float]], taps: Sequence[str], png: Path, title: str,
               ylabel: str = "test top-1 (%)") -> Path:
    """Accuracy against depth (Revisiting Fig. 5): one line per entry of ``lines`` (``{label: {tap: accuracy}}``), taps
    in network order on the x axis; taps a line lacks are left out of it."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(taps) + 2), 3.6))
    _depth_axes(ax, lines, taps)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, png, tight=True)


def plot_depth_panels(panels: Dict[str, tuple], png: Path, title: str, ylabel: str = "test top-1 (%)") -> Path:
    """:func:`plot_depth` side by side: ``{panel title: (taps, {label: {tap: accuracy}})}``, one panel each."""
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), squeeze=False)
    for ax, (name, (taps, lines)) in zip(axes[0], panels.items()):
        _depth_axes(ax, lines, taps)
        ax.set_title(name, fontsize=9)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, png, tight=True)


def plot_heatmap(grid: Sequence[Sequence[Optional[float]]], rows: Sequence[str], columns: Sequence[str], png: Path,
                 title: str) -> Path:
    """A table of accuracies as colours, the number written in each cell (missing cells blank)."""
    import numpy as np

    data = np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=float)
    fig, ax = plt.subplots(figsize=(1.1 * len(columns) + 2, 0.55 * len(rows) + 1.6))
    im = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)), list(columns), fontsize=7)
    ax.set_yticks(range(len(rows)), list(rows), fontsize=8)
    finite = data[np.isfinite(data)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(len(rows)):
        for j in range(len(columns)):
            if np.isfinite(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if data[i, j] < mid else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, png, tight=True)


def plot_scatter_groups(points: Dict[str, List[tuple]], png: Path, xlabel: str, ylabel: str, title: str) -> Path:
    """One marker colour per group (``{group: [(x, y, label), ...]}``), each point annotated with its label."""
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for group, pts in points.items():
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=group, s=28)
        for x, y, text in pts:
            ax.annotate(text, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=7)
    return save_figure(fig, png, tight=True)


def plot_lines(lines: Dict[str, Dict[float, float]], png: Path, xlabel: str, ylabel: str, title: str,
               styles: Optional[Dict[str, dict]] = None) -> Path:
    """One line per entry (``{label: {x: y}}``), points sorted by x; ``styles`` gives a line's matplotlib keywords
    (colour, marker, linestyle), so that many lines stay distinguishable."""
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for label, values in lines.items():
        xs = sorted(values)
        style = {"marker": "o", **((styles or {}).get(label) or {})}
        ax.plot(xs, [values[x] for x in xs], label=label, **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, png, tight=True)


def plot_saliency_grid(images: torch.Tensor, maps: Dict[str, torch.Tensor], png: Path, title: str = "",
                       threshold: float = 0.5, gray_level: float = 0.5) -> Path:
    """RELICv2's Figure 4 per source: a row per image, ``image | (map | masked view) per source``. ``images`` uint8
    ``(N, 3, H, W)``; each map ``(N, H, W)`` in [0, 1]; the masked view keeps pixels whose map is >= ``threshold`` and
    fills the rest with ``gray_level`` (A4)."""
    n = images.shape[0]
    cols = 1 + 2 * len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(1.3 * cols, 1.3 * n + (0.4 if title else 0)), squeeze=False)
    x = images.float() / 255.0
    for i in range(n):
        panels: List[Tuple[str, np.ndarray, Optional[str]]] = [("image", x[i].permute(1, 2, 0).numpy(), None)]
        for name, m in maps.items():
            mi = m[i].float().clamp(0, 1)
            fg = (mi >= threshold).float()
            masked = x[i] * fg + gray_level * (1 - fg)
            panels += [(name, mi.numpy(), "gray"), (f"{name} masked", masked.permute(1, 2, 0).numpy(), None)]
        for j, (label, img, cmap) in enumerate(panels):
            ax = axes[i][j]
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, png)
