"""RELICv2's fully unsupervised saliency pipeline (Appendix B.2.1), DeepUSPS's two stages on a selfsup encoder.

:func:`fit_saliency` (``selfsup saliency fit``), with every number in ``saliency.*``:

0. **Fit set**: ``saliency.fit_images`` images drawn (seeded) from the training split; no label is read anywhere.
1. **Handcrafted maps** of the fit set by each of ``saliency.methods`` (:mod:`selfsup.data.saliency`; worker
   processes, images/s reported).
2. **Stage 1, refinement** (per method, ``saliency.rounds`` rounds): a fresh saliency network (the selfsup-pretrained
   encoder ``saliency.encoder`` plus a light decoder, :class:`~selfsup.models.saliency.SaliencyNet`) is trained for
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
import logging
import os
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from selfsup.config import Config, load_config, to_dict, to_yaml
from selfsup.data.augment import normalize
from selfsup.data.base import resize_images
from selfsup.data.datasets import build_dataset
from selfsup.data.masks import resize_masks
from selfsup.data.saliency import saliency_maps
from selfsup.engine.checkpoint import atomic_save_safetensors, atomic_write_bytes, load_backbone_weights
from selfsup.engine.devices import device_for
from selfsup.engine.supervised import Batch, EpochStats, LoopSettings, StepInfo, train_supervised
from selfsup.errors import CheckpointError, ConfigError, DataError
from selfsup.losses.fbeta import fbeta_loss
from selfsup.metrics.saliency import saliency_scores
from selfsup.models.backbones import create_backbone
from selfsup.models.saliency import SaliencyNet

__all__ = ["guided_filter", "fit_saliency", "build_saliency_net", "load_saliency_net", "predict_saliency",
           "fit_subset", "train_saliency_net", "dataset_images"]

log = logging.getLogger(__name__)

NET_FILE = "saliency_net.safetensors"
SIGNATURE_FILE = "fit_signature.txt"


def guided_filter(p: Tensor, guide: Tensor, radius: int, eps: float) -> Tensor:
    """He et al.'s guided filter of maps ``p (B, H, W)`` by gray images ``guide (B, H, W)``: edge-aware smoothing that
    follows the image's edges (box filters of side ``2 radius + 1``, regulariser ``eps``)."""
    k = 2 * radius + 1

    def box(x: Tensor) -> Tensor:
        return F.avg_pool2d(x.unsqueeze(1), k, stride=1, padding=radius, count_include_pad=False).squeeze(1)

    mean_i, mean_p = box(guide), box(p)
    cov_ip = box(guide * p) - mean_i * mean_p
    var_i = box(guide * guide) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def dataset_images(dataset, indices: Sequence[int], size: int) -> Tensor:
    """uint8 ``(N, 3, size, size)`` of the dataset's images at ``indices`` (resized when the side differs)."""
    items = [dataset[int(i)] for i in indices]
    if any(it is None for it in items):
        raise ConfigError("the saliency fit set has unreadable images; fix them or lower saliency.fit_images")
    images = torch.stack([it["image"] for it in items]) if items else torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return resize_images(images, size)


def fit_subset(n: int, k: int, seed: int) -> np.ndarray:
    """The fit set: ``min(k, n)`` indices drawn without replacement (seeded), sorted."""
    rng = np.random.default_rng([seed, 0x5A1])
    return np.sort(rng.choice(n, size=min(k, n), replace=False))


def build_saliency_net(cfg: Config, image_size: int, seed: int) -> SaliencyNet:
    """A fresh saliency network: ``model.*`` encoder with the ``saliency.encoder`` weights, and a new decoder."""
    torch.manual_seed(seed)
    backbone = create_backbone(cfg.model, image_size=image_size)
    if cfg.saliency.encoder:
        load_backbone_weights(backbone, cfg.saliency.encoder, f"saliency.encoder={cfg.saliency.encoder}", cfg.model)
    return SaliencyNet(backbone, image_size, cfg.saliency.decoder_channels)


def _gray(images: Tensor) -> Tensor:
    x = images.float() / 255.0
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def _batches(n: int, batch_size: int, g: torch.Generator) -> List[Tensor]:
    """A seeded permutation split into ``n // batch_size`` near-equal batches (none smaller than ``batch_size``, so
    BatchNorm never sees a batch of one)."""
    perm = torch.randperm(n, generator=g)
    return list(torch.tensor_split(perm, max(1, n // batch_size)))


class _Refinement:
    """The step and epoch hooks of a refinement round: the mean loss per epoch and, with ``track_mva``, the training
    predictions (flips undone; every entry is rewritten each epoch), smoothed and folded into the moving average after
    every epoch."""

    def __init__(self, s, gray: Tensor, track_mva: bool) -> None:
        self.s, self.gray, self.losses, self.total = s, gray, [], 0.0
        self.mva = torch.zeros(gray.shape) if track_mva else None
        self.preds = torch.zeros(gray.shape) if track_mva else None

    def on_step(self, info: StepInfo) -> None:
        self.total += float(info.loss)
        if self.preds is not None:
            idx, flip = info.batch.meta
            pd = info.outputs.float().cpu()
            self.preds[idx] = torch.where(flip, pd.flip(-1), pd)

    def on_epoch(self, stats: EpochStats) -> None:
        self.losses.append(self.total / stats.epoch_steps)
        self.total = 0.0
        if self.mva is not None and self.preds is not None:
            s = self.s
            smooth = (guided_filter(self.preds, self.gray, s.smooth_radius, s.smooth_eps).clamp_(0, 1)
                      if s.smoothing == "guided" else self.preds)
            self.mva.mul_(s.mva_momentum).add_(smooth, alpha=1 - s.mva_momentum)


def train_saliency_net(cfg: Config, images: Tensor, targets: Sequence[Tensor], thresholds: Sequence[float],
                       beta2: float, epochs: int, lr: float, seed: int, mean, std, track_mva: bool,
                       desc: str = "saliency", progress: bool = True
                       ) -> Tuple[SaliencyNet, Optional[Tensor], List[float]]:
    """Train a fresh network on uint8 ``images (N, 3, S, S)`` against ``targets`` (float ``(N, S, S)`` in [0, 1], one
    per label set, each binarised at its threshold; the loss is averaged over the sets). Returns the network, the
    bias-corrected moving average of its smoothed training predictions (``track_mva``) and the mean loss per epoch.

    :func:`selfsup.engine.supervised.train_supervised` with Adam and poly decay per epoch (``lr * (1 - epoch /
    epochs) ** saliency.poly_power``); each epoch draws a permutation (:func:`_batches`), then per batch a random
    horizontal flip of each image and its targets, all from one generator seeded with ``seed``. A non-finite loss
    stops the fit at once."""
    s = cfg.saliency
    device = device_for(cfg)
    n, size = images.shape[0], images.shape[-1]
    net = build_saliency_net(cfg, size, seed).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=s.weight_decay)
    g = torch.Generator().manual_seed(seed)
    hooks = _Refinement(s, _gray(images), track_mva)

    def prepare(idx: Tensor) -> Batch:
        flip = (torch.rand(len(idx), generator=g) < 0.5).view(-1, 1, 1)
        x = images[idx].float().div_(255.0)
        x = torch.where(flip.unsqueeze(1), x.flip(-1), x).to(device)
        flipped = [torch.where(flip, t[idx].flip(-1), t[idx]).to(device) for t in targets]
        return Batch(normalize(x, mean, std), flipped, (idx, flip))

    def loss_fn(p: Tensor, flipped: List[Tensor]) -> Tensor:
        return sum(fbeta_loss(p, t, thr, beta2) for t, thr in zip(flipped, thresholds)) / len(targets)

    def nonfinite(value: float, epoch: int) -> Exception:
        return ConfigError(f"{desc}: the saliency loss is {value} at epoch {epoch}; lower the learning "
                           "rate (saliency.round_lr / saliency.fuse_lr)")

    settings = LoopSettings(epochs=epochs, schedule_unit="epoch", check_finite="step", nonfinite=nonfinite,
                            lr_schedule=lambda epoch, peak: peak * (1 - epoch / epochs) ** s.poly_power,
                            progress=progress, desc=desc, examples_per_epoch=n)
    train_supervised(lambda x: torch.sigmoid(net(x)), opt, lambda: _batches(n, s.batch_size, g), settings,
                     loss_fn=loss_fn, prepare=prepare, train=[net], on_step=hooks.on_step, on_epoch=hooks.on_epoch)
    mva = hooks.mva
    if mva is not None:
        mva /= 1 - s.mva_momentum ** epochs
    net.eval()
    return net, mva, hooks.losses


@torch.no_grad()
def predict_saliency(net: SaliencyNet, images: Tensor, mean, std, batch_size: int = 256,
                     progress: bool = False, desc: str = "predict") -> Tensor:
    """Saliency probabilities ``(N, S, S)`` float of uint8 images ``(N, 3, S, S)`` (the network's own side)."""
    device = next(net.parameters()).device
    net.eval()
    out = []
    for i in tqdm(range(0, images.shape[0], batch_size), desc=desc, unit="batch", disable=not progress,
                  dynamic_ncols=True, leave=False):
        x = images[i:i + batch_size].float().div_(255.0).to(device)
        out.append(torch.sigmoid(net(normalize(x, mean, std))).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, *images.shape[-2:])


def _to_u8(maps: Tensor) -> np.ndarray:
    return (maps.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def _load_maps(path: Path, n: int, size: int) -> np.ndarray:
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


def fit_saliency(cfg: Config, progress: bool = True, log_fn: Callable[[str], None] = print) -> Dict:
    """The whole pipeline (module docstring) into ``cfg.out``; returns the summary written to ``saliency.json``."""
    s = cfg.saliency
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    from selfsup.metafiles import claim_output_dir, make_output_dir, read_json

    out = Path(cfg.out)
    sig_file = out / SIGNATURE_FILE
    # a folder of someone else's files, or the data itself, is never written into; then the folder is created
    claim_output_dir(out, "out=", marker=SIGNATURE_FILE, owned=_signature_owned,
                     sources=[r for r in (cfg.data.root, cfg.data.test_root) if r])
    make_output_dir(out, "out=")
    signature = _fit_signature(cfg)
    if sig_file.is_file() and read_json(sig_file, "saliency fit signature") != json.loads(signature):
        raise ConfigError(f"{out} holds a saliency fit made with other settings (data, model, saliency or seed); "
                          "choose another out= or delete the folder")
    atomic_write_bytes(sig_file, signature.encode())
    atomic_write_bytes(out / "config.yaml", to_yaml(cfg).encode())

    if not s.encoder:
        log_fn("saliency: saliency.encoder is not set, so the encoder starts from random init; RELICv2 uses a "
               "self-supervised one (saliency.encoder=RUN of `selfsup pretrain`)")
    train = build_dataset(cfg.data, "train")
    size = s.image_size or train.image_size
    idx = fit_subset(len(train), s.fit_images, cfg.seed)
    images = dataset_images(train, idx, size)
    gt = (dataset_images_masks(train, idx, size) if getattr(train, "has_masks", False) else None)
    summary: Dict = {"fit_images": int(len(idx)), "image_size": size, "methods": list(s.methods),
                     "encoder": s.encoder, "handcrafted": {}, "refined": {}, "fused": {}}
    t_start = time.perf_counter()

    refined: Dict[str, Tensor] = {}
    for mi, method in enumerate(s.methods):
        hc_path = out / "handcrafted" / f"{method}.npy"
        if hc_path.is_file():
            maps = _load_maps(hc_path, len(idx), size)
            ips = None
        else:
            bar = tqdm(total=len(idx), desc=f"{method} maps", unit="img", disable=not progress, dynamic_ncols=True,
                       leave=False)
            maps, ips = saliency_maps(images.numpy(), method, workers=s.workers, progress=bar.update)
            bar.close()
            _save_npy(hc_path, maps)
            log_fn(f"saliency: {method} maps of {len(idx)} images at {ips:.1f} images/s")
        entry: Dict = {"images_per_s": ips}
        if gt is not None:
            entry["scores_fit"] = saliency_scores(maps, gt)
        summary["handcrafted"][method] = entry

        target = torch.from_numpy(maps).float() / 255.0
        thr = s.first_thresholds[method]
        rounds: List[Dict] = []
        for r in range(s.rounds):
            r_path = out / "refined" / f"{method}_round{r + 1}.npy"
            if r_path.is_file():
                target = torch.from_numpy(_load_maps(r_path, len(idx), size)).float() / 255.0
                rounds.append({"round": r + 1, "resumed": True})
            else:
                lr = s.round_lr * s.round_lr_growth ** r
                t0 = time.perf_counter()
                _, mva, losses = train_saliency_net(cfg, images, [target], [thr], s.round_beta2, s.round_epochs, lr,
                                                    seed=cfg.seed + 1000 * (mi + 1) + r, mean=train.mean,
                                                    std=train.std, track_mva=True,
                                                    desc=f"{method} round {r + 1}/{s.rounds}", progress=progress)
                assert mva is not None
                target = mva
                _save_npy(r_path, _to_u8(target))
                rounds.append({"round": r + 1, "lr": lr, "loss_first": losses[0], "loss_last": losses[-1],
                               "seconds": time.perf_counter() - t0})
            if gt is not None:
                rounds[-1]["scores_fit"] = saliency_scores(_to_u8(target), gt)
            thr = s.threshold
        refined[method] = target
        summary["refined"][method] = rounds
        if gt is not None:
            log_fn(f"saliency: {method}: F-beta {entry['scores_fit']['f_beta']:.3f} -> "
                   f"{rounds[-1]['scores_fit']['f_beta']:.3f} after {s.rounds} rounds (fit images vs ground truth)")

    net_path = out / NET_FILE
    t0 = time.perf_counter()
    net, _, losses = train_saliency_net(cfg, images, [refined[m] for m in s.methods], [s.threshold] * len(s.methods),
                                        s.fuse_beta2, s.fuse_epochs, s.fuse_lr, seed=cfg.seed + 99, mean=train.mean,
                                        std=train.std, track_mva=False, desc="fusion", progress=progress)
    net.cpu()
    atomic_save_safetensors(net_path, {k: v.contiguous() for k, v in net.state_dict().items()},
                            {"format": "selfsup-saliency-1", "image_size": size, "mean": json.dumps(list(train.mean)),
                             "std": json.dumps(list(train.std)), "config": json.dumps(to_dict(cfg))})
    summary["fused"] = {"loss_first": losses[0], "loss_last": losses[-1], "seconds": time.perf_counter() - t0}
    if getattr(train, "has_masks", False):
        test = build_dataset(cfg.data, "test")
        n_test = min(len(test), max(len(idx), 500))
        t_idx = np.arange(n_test)
        t_images = dataset_images(test, t_idx, size)
        t_gt = dataset_images_masks(test, t_idx, size)
        summary["fused"]["scores_test"] = saliency_scores(_to_u8(predict_saliency(net, t_images, train.mean,
                                                                                  train.std)), t_gt)
        summary["test_images"] = int(n_test)
        log_fn(f"saliency: fused network F-beta {summary['fused']['scores_test']['f_beta']:.3f}, IoU "
               f"{summary['fused']['scores_test']['iou']:.3f} on {n_test} held-out test images")
    summary["seconds"] = time.perf_counter() - t_start
    atomic_write_bytes(out / "saliency.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def dataset_images_masks(dataset, indices: Sequence[int], size: int) -> np.ndarray:
    """uint8 ground-truth masks ``(N, size, size)`` of the dataset's images at ``indices``."""
    return resize_masks(torch.stack([dataset[int(i)]["mask"] for i in indices]), size)[:, 0].numpy()


def _net_metadata(p: Path, cfg: Config) -> Tuple[int, List[float], List[float], Config]:
    """The image side, mean, std and fit config stored in a saliency network's safetensors metadata, each checked; one
    :class:`CheckpointError` line naming the file and the field otherwise."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{p}: not a readable safetensors file ({reason})") from None
    if meta.get("format") != "selfsup-saliency-1":
        raise CheckpointError(f"{p} is not a selfsup saliency network")

    def field(key: str):
        if key not in meta:
            raise CheckpointError(f"{p}: metadata field {key} is missing")
        try:
            return json.loads(meta[key], parse_constant=lambda c: float("nan"))
        except (ValueError, RecursionError):
            raise CheckpointError(f"{p}: metadata field {key} is not valid JSON") from None

    size = field("image_size")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 65536:
        raise CheckpointError(f"{p}: metadata field image_size must be a positive integer, "
                              f"not {meta['image_size'][:40]!r}")
    stats = []
    for key in ("mean", "std"):
        v = field(key)
        if (not isinstance(v, list) or len(v) != 3
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not np.isfinite(x) for x in v)
                or (key == "std" and any(x <= 0 for x in v))):
            raise CheckpointError(f"{p}: metadata field {key} must be a list of 3 finite numbers"
                                  f"{' above 0' if key == 'std' else ''}, not {meta[key][:60]!r}")
        stats.append([float(x) for x in v])
    fit_cfg = cfg
    if meta.get("config"):
        base = field("config")
        if not isinstance(base, dict):
            raise CheckpointError(f"{p}: metadata field config must be a mapping of options, "
                                  f"not {meta['config'][:40]!r}")
        try:
            fit_cfg = load_config(None, [], base=base)
        except (ConfigError, ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{p}: metadata field config is not a valid selfsup config ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - OmegaConf's own errors on a malformed stored mapping
            if type(exc).__module__.split(".")[0] != "omegaconf":
                raise
            raise CheckpointError(f"{p}: metadata field config is not a valid selfsup config "
                                  f"({str(exc).splitlines()[0][:160]})") from None
    return size, stats[0], stats[1], fit_cfg


def load_saliency_net(path: os.PathLike, cfg: Config) -> Tuple[SaliencyNet, dict]:
    """The fused network of a fit folder (or its ``.safetensors``) and its metadata (image size, mean, std)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if p.is_dir():
        p = p / NET_FILE
    if not p.is_file():
        raise CheckpointError(f"no saliency network at {path} (run `selfsup saliency fit` first)")
    size, mean, std, fit_cfg = _net_metadata(p, cfg)
    torch.manual_seed(0)
    net = SaliencyNet(create_backbone(fit_cfg.model, image_size=size), size, fit_cfg.saliency.decoder_channels)
    try:
        net.load_state_dict(load_file(str(p)))
    except (RuntimeError, SafetensorError, OSError) as exc:
        raise CheckpointError(f"{p} does not fit its own config: {str(exc).splitlines()[0][:200]}") from None
    net.eval()
    return net, {"image_size": size, "mean": mean, "std": std}


def predict_cache(cfg: Config, net_path: os.PathLike, out_dir: os.PathLike, split: str = "train",
                  progress: bool = True) -> Dict:
    """``selfsup saliency predict``: the fused network over every image of ``cfg.data``'s ``split``, binarised at
    ``saliency.threshold`` and stored at ``saliency.cache_size`` (default: the image side, at most 64) in a
    :class:`~selfsup.data.masks.MaskCache` under ``out_dir``. Unreadable images (``data.skip_corrupt``) get an empty
    mask, which is never applied (under 5 % foreground). Returns counts, images/s and the share of usable masks."""
    from torch.utils.data import DataLoader

    from selfsup.data.base import collate
    from selfsup.data.masks import MaskCache, dataset_fingerprint

    out_dir = MaskCache.check_writable(out_dir, split, "--out")  # before any work: a folder selfsup may write
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = device_for(cfg)
    net, meta = load_saliency_net(net_path, cfg)
    net.to(device)
    dataset = build_dataset(cfg.data, split)
    fingerprint = dataset_fingerprint(dataset, cfg.data.dataset, split)
    size = cfg.saliency.cache_size or min(dataset.image_size, 64)
    arr, finish = MaskCache.create(out_dir, split, fingerprint, size)
    loader = DataLoader(dataset, batch_size=cfg.eval.batch_size, shuffle=False, num_workers=cfg.data.workers,
                        collate_fn=collate)
    t0 = time.perf_counter()
    try:
        done, skipped, usable = _predict_into(arr, loader, net, meta, size, cfg, device, split, progress)
    except BaseException:
        finish.abort()  # the new file goes; the current cache (if any) stays as it was
        raise
    cache = finish()
    seconds = time.perf_counter() - t0
    return {"images": done, "skipped": skipped, "images_per_s": done / max(seconds, 1e-9), "mask_size": size,
            "usable_fraction": usable / max(done, 1), "path": str(cache.path)}


def _predict_into(arr: np.ndarray, loader, net: SaliencyNet, meta: dict, size: int, cfg: Config,
                  device: torch.device, split: str, progress: bool) -> Tuple[int, int, int]:
    """Fill the cache array ``arr`` with the binarised predictions of every batch; returns the counts of images
    done, skipped (unreadable) and usable (enough foreground)."""
    side = meta["image_size"]
    done = skipped = usable = 0
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"saliency predict ({split})", unit="batch", disable=not progress,
                          dynamic_ncols=True):
            skipped += int(batch.get("skipped", 0))
            if batch["image"].shape[0] == 0:
                continue
            x = batch["image"].to(device).float().div_(255.0)
            if x.shape[-1] != side:
                x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
            p = torch.sigmoid(net(normalize(x, meta["mean"], meta["std"]))).unsqueeze(1)
            if p.shape[-1] != size:
                p = F.interpolate(p, size=(size, size), mode="bilinear", align_corners=False)
            m = (p[:, 0] >= cfg.saliency.threshold)
            usable += int((m.float().mean(dim=(1, 2)) >= cfg.views.mask_min_fraction).sum())
            arr[batch["index"].numpy()] = (m.to(torch.uint8) * 255).cpu().numpy()
            done += int(x.shape[0])
    return done, skipped, usable
