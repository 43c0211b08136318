"""Analysis of learned representations (RELICv2 Appendix G), computed on the test split, with PNG figures.

:func:`nn_distances` (Fig. 6)
    For a few chosen classes, ``per_class`` test images each, ordered class by class: every image's ``k`` nearest
    neighbours among those images (itself excluded) and their distances. Plotted as one row per image and one point per
    neighbour at the neighbour's column, coloured by distance: a representation aligned with the classes gives a
    block-diagonal picture. ``same_class`` is the fraction of neighbours in the image's class.
:func:`discriminant_ratios` (Fig. 7)
    The linear discriminant ratio: between-class over within-class l2 distance. RELICv2 plots its distribution; with
    the 5-10 classes of the small datasets a per-class distribution has 5-10 values, so the distribution here is *per
    image*: its mean distance to images of other classes over its mean distance to the other images of its class
    (per-class ratios, the mean over each class's images, are returned too). Several runs overlay in one figure.
:func:`embedding_2d`
    t-SNE (scikit-learn, PCA initialisation, after a PCA to 50 dimensions) of a seeded subset, coloured by class.
:func:`snapshot_curve` (Fig. 5)
    Probe accuracy against images seen during pretraining, from the run's snapshots (``train.snapshot_every_steps``
    or ``train.snapshot_minutes``, whose metadata hold the images seen) and its final backbone.

Distances are Euclidean between L2-normalised representations (RELICv2 does not say; normalising puts runs whose
feature scales differ by orders of magnitude on one colour scale and one axis, and matches the kNN probe's cosine).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, cast

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.config import Config
from selfsup.errors import CheckpointError, ConfigError, DataError
from selfsup.metafiles import Fields, make_output_dir

log = logging.getLogger("selfsup.eval")


def _normalised(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=1)


def pick_classes(class_names: Optional[Sequence[str]], num_classes: int, wanted: Optional[Sequence[str]],
                 count: int = 4) -> List[int]:
    """Class indices from names (or indices as strings); the first ``count`` classes when ``wanted`` is empty."""
    if not wanted:
        return list(range(min(count, num_classes)))
    names = list(class_names or [])
    out = []
    for w in wanted:
        if w in names:
            out.append(names.index(w))
        elif str(w).isdigit() and int(w) < num_classes:
            out.append(int(w))
        else:
            raise ConfigError(f"--classes: no class '{w}' (classes: {', '.join(names) or f'0..{num_classes - 1}'})")
    return out


def nn_distances(feats: torch.Tensor, labels: torch.Tensor, classes: Sequence[int], per_class: int = 50,
                 k: int = 5) -> Dict[str, Any]:
    """Nearest neighbours within the first ``per_class`` test images of each of ``classes`` (in that order).

    Returns ``{"index" (M,) dataset indices, "labels" (M,), "neighbours" (M, k) positions in 0..M-1, "distances"
    (M, k), "same_class" fraction, "block" (the class boundaries)}``."""
    idx = []
    for c in classes:
        members = torch.nonzero(labels == c).flatten()[:per_class]
        if members.numel() < 2:
            raise DataError(f"class {c} has {members.numel()} test images; the neighbour plot needs at least 2")
        idx.append(members)
    index = torch.cat(idx)
    x = _normalised(feats[index])
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    k = min(k, x.shape[0] - 1)
    dist, nbr = d.topk(k, dim=1, largest=False)
    y = labels[index]
    same = (y[nbr] == y[:, None]).float().mean().item()
    bounds = np.cumsum([0] + [t.numel() for t in idx]).tolist()
    return {"index": index, "labels": y, "neighbours": nbr, "distances": dist, "same_class": same, "block": bounds}


def discriminant_ratios(feats: torch.Tensor, labels: torch.Tensor, max_points: int = 4000,
                        seed: int = 0) -> Dict[str, Any]:
    """Per-image ratio of the mean distance to other-class images over the mean distance to same-class images, on a
    seeded subset of at most ``max_points`` images (the full distance matrix is ``max_points^2``)."""
    n = feats.shape[0]
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points] if n > max_points else \
        torch.arange(n)
    x, y = _normalised(feats[keep]), labels[keep]
    d = torch.cdist(x, x).double()
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(y), dtype=torch.bool)
    within_n = (same & ~eye).sum(1)
    if (within_n == 0).any():
        raise DataError("every class needs at least 2 images for the discriminant ratio")
    between_n = (~same).sum(1)
    if (between_n == 0).any():
        raise DataError("the discriminant ratio needs at least 2 classes")
    within = (d * (same & ~eye)).sum(1) / within_n
    between = (d * ~same).sum(1) / between_n
    ratio = (between / within).float()
    per_class = {int(c): float(ratio[y == c].mean()) for c in torch.unique(y).tolist()}
    return {"ratios": ratio, "per_class": per_class, "median": float(ratio.median()), "mean": float(ratio.mean())}


def embedding_2d(feats: torch.Tensor, labels: torch.Tensor, max_points: int = 2000,
                 seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """``(points (M, 2), labels (M,))``: t-SNE of a seeded subset of at most ``max_points`` representations."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = feats.shape[0]
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points] if n > max_points else \
        torch.arange(n)
    x = _normalised(feats[keep]).numpy().astype(np.float64)
    if x.shape[1] > 50 and x.shape[0] > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    perplexity = float(min(30, max(2, (x.shape[0] - 1) // 3)))
    pts = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(x)
    return pts, labels[keep].numpy()


def snapshot_images_seen(path: Path) -> Optional[int]:
    """The ``images_seen`` of a snapshot's safetensors metadata (``None`` when it has none). A file that is not a
    safetensors file, or whose ``images_seen`` is not a non-negative integer, is one line naming the file and field."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: the snapshot is not a regular file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: the snapshot is not a readable safetensors file ({first})") from None
    fields = Fields(meta, path, "the snapshot metadata")
    value = fields.string("images_seen", None)
    if value is None:
        return None
    if not re.fullmatch(r"[0-9]{1,18}", value.strip()):
        raise fields.error("images_seen", f"must be a non-negative integer, not {value[:40]!r}")
    return int(value)


def snapshot_files(run_dir: Path) -> List[Tuple[int, Path]]:
    """``(images_seen, path)`` of every snapshot of a run and its final ``backbone.safetensors``, sorted, unique."""
    run_dir = Path(run_dir)
    found: Dict[int, Path] = {}
    paths = sorted((run_dir / "snapshots").glob("*.safetensors")) if (run_dir / "snapshots").is_dir() else []
    for p in paths:
        images = snapshot_images_seen(p)
        if images is not None:
            found[images] = p
    final = run_dir / "backbone.safetensors"
    last = run_dir / "last.ckpt"
    if final.is_file() and last.is_file():
        from selfsup.engine.checkpoint import load_checkpoint

        state = load_checkpoint(last)  # checks the step and that the config is a mapping
        train = Fields(state["config"], last, "the checkpoint's config").mapping("train", None, allow_none=True)
        batch = train.integer("batch_size", 0, lo=0) if train is not None else 0
        if batch:
            found.setdefault(int(state["step"]) * batch, final)
    return sorted(found.items())


def run_analysis(runs: Sequence[str], out: Path, overrides: Sequence[str] = (), classes: Sequence[str] = (),
                 per_class: int = 50, max_points: int = 2000, probe: str = "knn", curve: bool = True,
                 embedding: bool = True, random_init: bool = False, progress: bool = True) -> Dict[str, Any]:
    """Every analysis for every run (``random_init`` adds the random-init backbone of the first run's config as a
    reference); PNGs and ``analysis.json`` in ``out``. Returns the numbers and the figure paths."""
    import json

    from selfsup.eval.plots import plot_accuracy_vs_images, plot_embeddings, plot_nn_distances, plot_ratio_distributions
    from selfsup.eval.run import config_for, features, load_backbone, probe_data, run_knn, run_linear

    if probe not in ("knn", "linear"):
        raise ConfigError(f"--probe must be knn or linear, got '{probe}'")
    if per_class < 2 or max_points < 10:
        raise ConfigError("--per-class must be >= 2 and --max-points >= 10")
    sources: List[Tuple[str, Optional[str]]] = []
    for r in runs:
        name = Path(r).name if Path(r).name not in ("last.ckpt", "backbone.safetensors") else Path(r).parent.name
        while name in dict(sources):
            name += "'"
        sources.append((name, r))
    if random_init:
        sources.append(("random init", None))
    if not sources:
        raise ConfigError("analyze needs at least one run (or --random-init)")
    snapshots: Dict[str, List[Tuple[int, Path]]] = {}
    if curve:  # every snapshot's metadata read before any work: a damaged one is refused at once
        for name, src in sources:
            if src:
                snapshots[name] = snapshot_files(Path(src) if Path(src).is_dir() else Path(src).parent)
    out = make_output_dir(out, "--out")
    first_cfg = None
    nn_res, ratios, embeds, curves, summary = {}, {}, {}, {}, {}
    class_names = None
    for name, src in sources:
        cfg = config_for(src, None, overrides) if src else first_cfg
        if cfg is None:
            raise ConfigError("--random-init needs a run to take the architecture and data from")
        first_cfg = first_cfg or cfg
        data = probe_data(cfg)
        class_names = data.train.class_names
        backbone = load_backbone(cfg, src)
        feats = features(cfg, backbone, data, progress)
        xte, yte = feats[2], feats[3]
        chosen = pick_classes(class_names, data.num_classes, classes)
        nn_res[name] = nn_distances(xte, yte, chosen, per_class=per_class)
        ratios[name] = discriminant_ratios(xte, yte, max_points=max(max_points, 2 * per_class), seed=cfg.seed)
        summary[name] = {"same_class_nn": nn_res[name]["same_class"], "ratio_median": ratios[name]["median"],
                         "ratio_mean": ratios[name]["mean"], "ratio_per_class": ratios[name]["per_class"]}
        if embedding:
            embeds[name] = embedding_2d(xte, yte, max_points=max_points, seed=cfg.seed)
        if curve and src:
            pts = []
            for images, path in snapshots.get(name, []):
                snap = load_backbone(cfg, str(path))
                f = features(cfg, snap, data, False)
                acc = (run_knn(cfg, snap, data, False, feats=f)[f"k{cfg.eval.knn.k[0]}_top1"] if probe == "knn"
                       else run_linear(cfg, snap, data, False, feats=f)["top1"])
                pts.append((images, acc))
                log.info("%s: %d images seen -> %s %.2f%%", name, images, probe, acc)
            if pts:
                curves[name] = pts
                summary[name]["curve"] = pts
    figures = {"nn_distances": str(plot_nn_distances(nn_res, out / "nn_distances.png", class_names)),
               "discriminant_ratio": str(plot_ratio_distributions({k: v["ratios"] for k, v in ratios.items()},
                                                                   out / "discriminant_ratio.png"))}
    if embeds:
        figures["embedding"] = str(plot_embeddings(embeds, out / "embedding.png", class_names))
    if any(len(pts) >= 2 for pts in curves.values()):  # one point is not a curve
        k = cast(Config, first_cfg).eval.knn.k[0]  # set by the first source (there is at least one)
        figures["accuracy_vs_images"] = str(plot_accuracy_vs_images(
            curves, out / "accuracy_vs_images.png",
            f"kNN k={k} top-1 (%)" if probe == "knn" else "linear probe top-1 (%)"))
    elif curve:
        log.warning("fewer than 2 snapshots with images-seen metadata: pretrain with train.snapshot_every_steps=N for "
                    "the accuracy-against-images figure")
    payload = {"runs": {n: s for n, s in summary.items()}, "figures": figures}
    (out / "analysis.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return payload
