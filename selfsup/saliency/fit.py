"""RELICv2's fully unsupervised saliency pipeline (Appendix B.2.1), DeepUSPS's two stages on a selfsup encoder.

:func:`fit_saliency` (``selfsup saliency fit``), with every number in ``saliency.*``:

0. **Fit set**: ``saliency.fit_images`` images drawn (seeded) from the training split; no label is read anywhere.
1. **Handcrafted maps** of the fit set by each of ``saliency.methods`` (:mod:`selfsup.saliency.handcrafted`; worker
   processes, images/s reported).
2. **Stage 1, refinement** (per method, ``saliency.rounds`` rounds): a fresh saliency network (the selfsup-pretrained
   encoder ``saliency.encoder`` plus a light decoder, :class:`~selfsup.saliency.network.SaliencyNet`) is trained for
   ``saliency.round_epochs`` epochs with Adam at ``round_lr * round_lr_growth ** round`` (RELICv2: 1e-5, doubled every
   round) and poly decay, on the soft-thresholded F-beta loss (``beta^2 = round_beta2``) against the current targets
   binarised at ``first_thresholds[method]`` (round 1) or ``threshold`` (later rounds). Each epoch's training-pass
   predictions (their random flips undone) are smoothed (``saliency.smoothing``: an edge-aware guided filter guided by
   the image, standing in for DeepUSPS's dense CRF, which has no maintained Python package) and folded into a moving
   average ``MVA <- 0.7 MVA + 0.3 smoothed``; after the round the MVA maps are the next targets. *Choice:* the MVA is
   divided by ``1 - 0.7 ** epochs`` (it starts at zero, as in DeepUSPS; after 25 epochs the correction is 1e-4, after a
   small recipe's few epochs it keeps the maps from shrinking below the 0.5 threshold).
3. **Stage 2, fusion**: one fresh network trained for ``saliency.fuse_epochs`` at ``fuse_lr`` on all refined label sets
   at once (the loss averaged over them), ``beta^2 = fuse_beta2`` (4), threshold ``threshold``.

The output folder (``out``) holds ``config.yaml``, ``handcrafted/<method>.npy`` and ``refined/<method>_round<r>.npy``
(uint8 maps of the fit set, each written atomically once done: a killed fit resumes at the first missing file),
``saliency_net.safetensors`` (the fused network) and ``saliency.json`` (timings, images/s and, when the data has
ground-truth masks, the scores of every stage; the ground truth never enters the fit).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from selfsup.config import Config, to_dict, to_yaml
from selfsup.data.datasets import build_dataset
from selfsup.errors import ConfigError, DataError
from selfsup.fileio import atomic_write_bytes
from selfsup.saliency.handcrafted import saliency_maps
from selfsup.saliency.images import dataset_images, dataset_images_masks, fit_subset
from selfsup.saliency.network import NET_FILE, SaliencyNet, save_saliency_net
from selfsup.saliency.predict import predict_saliency
from selfsup.saliency.scores import saliency_scores
from selfsup.saliency.train import train_saliency_net

__all__ = ["fit_saliency", "load_stage_maps", "SIGNATURE_FILE"]

SIGNATURE_FILE = "fit_signature.txt"


def _to_u8(maps: Tensor) -> np.ndarray:
    return (maps.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def load_stage_maps(path: Path, n: int, size: int) -> np.ndarray:
    """A stored stage's uint8 maps ``(n, size, size)`` (a fit folder's ``handcrafted/`` or ``refined/`` file); one
    line naming the file when it cannot be read or holds anything else."""
    try:
        maps = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: unreadable saliency maps ({reason}); delete it to recompute that stage") from None
    if not isinstance(maps, np.ndarray) or maps.dtype != np.uint8 or maps.shape != (n, size, size):
        raise DataError(f"{path}: holds {getattr(maps, 'dtype', type(maps).__name__)} "
                        f"{getattr(maps, 'shape', '')}, not the uint8 ({n}, {size}, {size}) maps of this fit set; "
                        "delete it to recompute that stage")
    return maps


def _signature_owned(path: Path) -> bool:
    """Whether ``path`` is a fit folder's signature (a JSON mapping): the mark of a folder ``saliency fit`` wrote."""
    from selfsup.metafiles import read_json

    read_json(path, "saliency fit signature")
    return True


def _fit_signature(cfg: Config) -> str:
    """What a fit folder's files depend on: the data, the model, the saliency settings and the seed (not the number of
    worker processes, which changes no result)."""
    d = to_dict(cfg)
    sig = {k: d[k] for k in ("data", "model", "saliency", "seed")}
    sig["data"].pop("workers", None)
    sig["saliency"].pop("workers", None)
    return json.dumps(sig, sort_keys=True, indent=1)


def _claim_out(cfg: Config) -> Path:
    """The fit folder ``cfg.out``, claimed (a folder of someone else's files, or the data itself, is never written
    into; a fit of other settings is refused), created, and holding this fit's signature and ``config.yaml``."""
    from selfsup.metafiles import claim_output_dir, make_output_dir, read_json

    out = Path(cfg.out)
    sig_file = out / SIGNATURE_FILE
    claim_output_dir(out, "out=", marker=SIGNATURE_FILE, owned=_signature_owned,
                     sources=[r for r in (cfg.data.root, cfg.data.test_root) if r])
    make_output_dir(out, "out=")
    signature = _fit_signature(cfg)
    if sig_file.is_file() and read_json(sig_file, "saliency fit signature") != json.loads(signature):
        raise ConfigError(f"{out} holds a saliency fit made with other settings (data, model, saliency or seed); "
                          "choose another out= or delete the folder")
    atomic_write_bytes(sig_file, signature.encode())
    atomic_write_bytes(out / "config.yaml", to_yaml(cfg).encode())
    return out


@dataclass(frozen=True)
class _FitSet:
    """What every stage of a fit reads: the settings, the fit folder, the training split (its mean and std normalise
    the images), the fit set's indices, its side S, its uint8 images ``(N, 3, S, S)`` and its ground-truth masks (None
    when the data has none; they only score the stages), and how to report progress."""

    cfg: Config
    out: Path
    train: Any
    idx: np.ndarray
    size: int
    images: Tensor
    gt: Optional[np.ndarray]
    progress: bool
    log_fn: Callable[[str], None]

    @property
    def n(self) -> int:
        return len(self.idx)


def fit_saliency(cfg: Config, progress: bool = True, log_fn: Callable[[str], None] = print) -> Dict:
    """The whole pipeline (module docstring) into ``cfg.out``; returns the summary written to ``saliency.json``."""
    s = cfg.saliency
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    out = _claim_out(cfg)
    if not s.encoder:
        log_fn("saliency: saliency.encoder is not set, so the encoder starts from random init; RELICv2 uses a "
               "self-supervised one (saliency.encoder=RUN of `selfsup pretrain`)")
    train = build_dataset(cfg.data, "train")
    size = s.image_size or train.image_size
    idx = fit_subset(len(train), s.fit_images, cfg.seed)
    images = dataset_images(train, idx, size)
    gt = (dataset_images_masks(train, idx, size) if getattr(train, "has_masks", False) else None)
    fs = _FitSet(cfg, out, train, idx, size, images, gt, progress, log_fn)
    summary: Dict = {"fit_images": int(len(idx)), "image_size": size, "methods": list(s.methods),
                     "encoder": s.encoder, "handcrafted": {}, "refined": {}, "fused": {}}
    t_start = time.perf_counter()

    refined: Dict[str, Tensor] = {}
    for mi, method in enumerate(s.methods):
        maps, entry = _handcrafted_stage(fs, method)
        summary["handcrafted"][method] = entry
        refined[method], rounds = _refine_stage(fs, mi, method, maps)
        summary["refined"][method] = rounds
        if gt is not None:
            log_fn(f"saliency: {method}: F-beta {entry['scores_fit']['f_beta']:.3f} -> "
                   f"{rounds[-1]['scores_fit']['f_beta']:.3f} after {s.rounds} rounds (fit images vs ground truth)")

    net, summary["fused"] = _fuse_stage(fs, refined)
    if getattr(train, "has_masks", False):
        _score_on_test(fs, net, summary)
    summary["seconds"] = time.perf_counter() - t_start
    atomic_write_bytes(out / "saliency.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def _handcrafted_stage(fs: _FitSet, method: str) -> Tuple[np.ndarray, Dict]:
    """Step 1 for ``method``: its uint8 maps of the fit set (read back when a previous fit stored them) and their
    summary entry (images/s; the scores against the ground truth, when the data has it)."""
    hc_path = fs.out / "handcrafted" / f"{method}.npy"
    if hc_path.is_file():
        maps = load_stage_maps(hc_path, fs.n, fs.size)
        ips = None
    else:
        bar = tqdm(total=fs.n, desc=f"{method} maps", unit="img", disable=not fs.progress, dynamic_ncols=True,
                   leave=False)
        maps, ips = saliency_maps(fs.images.numpy(), method, workers=fs.cfg.saliency.workers, progress=bar.update)
        bar.close()
        _save_npy(hc_path, maps)
        fs.log_fn(f"saliency: {method} maps of {fs.n} images at {ips:.1f} images/s")
    entry: Dict = {"images_per_s": ips}
    if fs.gt is not None:
        entry["scores_fit"] = saliency_scores(maps, fs.gt)
    return maps, entry


def _refine_stage(fs: _FitSet, mi: int, method: str, maps: np.ndarray) -> Tuple[Tensor, List[Dict]]:
    """Step 2 for the ``mi``-th method: ``saliency.rounds`` refinement rounds starting from its handcrafted ``maps``
    (a round stored by a previous fit is read back); the final targets ``(N, S, S)`` in [0, 1] and one record per
    round."""
    s = fs.cfg.saliency
    target = torch.from_numpy(maps).float() / 255.0
    thr = s.first_thresholds[method]
    rounds: List[Dict] = []
    for r in range(s.rounds):
        r_path = fs.out / "refined" / f"{method}_round{r + 1}.npy"
        if r_path.is_file():
            target = torch.from_numpy(load_stage_maps(r_path, fs.n, fs.size)).float() / 255.0
            rounds.append({"round": r + 1, "resumed": True})
        else:
            lr = s.round_lr * s.round_lr_growth ** r
            t0 = time.perf_counter()
            _, mva, losses = train_saliency_net(fs.cfg, fs.images, [target], [thr], s.round_beta2, s.round_epochs, lr,
                                                seed=fs.cfg.seed + 1000 * (mi + 1) + r, mean=fs.train.mean,
                                                std=fs.train.std, track_mva=True,
                                                desc=f"{method} round {r + 1}/{s.rounds}", progress=fs.progress)
            assert mva is not None
            target = mva
            _save_npy(r_path, _to_u8(target))
            rounds.append({"round": r + 1, "lr": lr, "loss_first": losses[0], "loss_last": losses[-1],
                           "seconds": time.perf_counter() - t0})
        if fs.gt is not None:
            rounds[-1]["scores_fit"] = saliency_scores(_to_u8(target), fs.gt)
        thr = s.threshold
    return target, rounds


def _fuse_stage(fs: _FitSet, refined: Dict[str, Tensor]) -> Tuple[SaliencyNet, Dict]:
    """Step 3: one network on every method's refined maps at once, written to ``<out>/saliency_net.safetensors``;
    the network (on the CPU) and its summary entry."""
    s = fs.cfg.saliency
    t0 = time.perf_counter()
    net, _, losses = train_saliency_net(fs.cfg, fs.images, [refined[m] for m in s.methods],
                                        [s.threshold] * len(s.methods), s.fuse_beta2, s.fuse_epochs, s.fuse_lr,
                                        seed=fs.cfg.seed + 99, mean=fs.train.mean, std=fs.train.std, track_mva=False,
                                        desc="fusion", progress=fs.progress)
    net.cpu()
    save_saliency_net(fs.out / NET_FILE, net, fs.size, fs.train.mean, fs.train.std, fs.cfg)
    return net, {"loss_first": losses[0], "loss_last": losses[-1], "seconds": time.perf_counter() - t0}


def _score_on_test(fs: _FitSet, net: SaliencyNet, summary: Dict) -> None:
    """The fused network's scores on the first held-out test images (at least as many as the fit set, at least 500
    when there are), into ``summary``."""
    test = build_dataset(fs.cfg.data, "test")
    n_test = min(len(test), max(fs.n, 500))
    t_idx = np.arange(n_test)
    t_images = dataset_images(test, t_idx, fs.size)
    t_gt = dataset_images_masks(test, t_idx, fs.size)
    summary["fused"]["scores_test"] = saliency_scores(_to_u8(predict_saliency(net, t_images, fs.train.mean,
                                                                              fs.train.std)), t_gt)
    summary["test_images"] = int(n_test)
    fs.log_fn(f"saliency: fused network F-beta {summary['fused']['scores_test']['f_beta']:.3f}, IoU "
              f"{summary['fused']['scores_test']['iou']:.3f} on {n_test} held-out test images")
