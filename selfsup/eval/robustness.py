"""Robustness to common corruptions and out-of-distribution test sets (RELICv2 App. D.5, Table 9).

A linear classifier is fitted on the frozen, *clean* training features (the L-BFGS probe of ``eval.linear``) and then
evaluated zero-shot, with no further training, on:

* the test split corrupted by each of the 15 ImageNet-C corruptions (Hendrycks and Dietterich 2019) at severities
  1-5. The corruptions are those of the ``imagecorruptions-imaug`` package (an optional extra:
  ``pip install selfsup[robustness]``), which implements ImageNet-C's definitions. As in Table 9, each corruption's
  accuracy is the mean over its severities, and the ImageNet-C figure is the mean over the corruptions;
* any other labelled folder that shares the classes (``--ood DIR``): its class folders are matched to the training
  classes by name (ImageNetV2, -R, -Sketch and ObjectNet are such folders).

Choices where the paper leaves room:
  * ImageNet-C's corruptions are defined for images of at least 32 px. Smaller images (Fashion-MNIST's 28 px) are
    resized up to 32 px (bilinear), corrupted, and resized back (antialiased) before the probes' usual centre crop.
  * The corruptions draw random numbers from NumPy's global generator. Each image is corrupted right after
    ``np.random.seed`` with a value derived from (``seed``, corruption, severity, image index), so every corrupted
    test set is the same on every run and machine, whatever the batch order.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Sized, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from selfsup.errors import ConfigError, DataError

log = logging.getLogger("selfsup.eval")

CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")
GROUPS = {"noise": CORRUPTIONS[0:3], "blur": CORRUPTIONS[3:7], "weather": CORRUPTIONS[7:11],
          "digital": CORRUPTIONS[11:15]}
MIN_SIDE = 32


def _corrupt_fn():
    try:
        from imagecorruptions import corrupt
    except ImportError:
        raise ConfigError("the corruption benchmark needs the optional package imagecorruptions-imaug: "
                          "pip install 'selfsup[robustness]' (or imagecorruptions-imaug==1.1.5)") from None
    return corrupt


def corrupt_image(image: torch.Tensor, corruption: str, severity: int, seed: int) -> torch.Tensor:
    """One uint8 ``(3, S, S)`` image corrupted by ``corruption`` at ``severity`` (1-5), deterministically from
    ``seed``; same shape and dtype. Images under 32 px go through 32 px (see the module docstring)."""
    corrupt = _corrupt_fn()
    size = image.shape[-1]
    x = image
    if size < MIN_SIDE:
        x = F.interpolate(x[None].float(), size=(MIN_SIDE, MIN_SIDE), mode="bilinear", align_corners=False)[0]
        x = x.round().clamp(0, 255).to(torch.uint8)
    np.random.seed(seed % (2 ** 32))
    out = corrupt(x.permute(1, 2, 0).contiguous().numpy(), corruption_name=corruption, severity=int(severity))
    out = torch.from_numpy(np.ascontiguousarray(np.clip(np.asarray(out, dtype=np.float32), 0, 255)))
    out = out.permute(2, 0, 1)
    if out.shape[-2:] != x.shape[-2:]:  # a few corruptions may return another size on odd shapes
        out = F.interpolate(out[None], size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[0]
    if size < MIN_SIDE:
        out = F.interpolate(out[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return out.round().clamp(0, 255).to(torch.uint8)


def image_seed(seed: int, corruption: str, severity: int, index: int) -> int:
    return (zlib.crc32(f"{seed}/{corruption}/{severity}".encode()) * 1_000_003 + index) % (2 ** 32)


class CorruptedDataset(Dataset):
    """``base`` with every image corrupted (:func:`corrupt_image`); items keep their other fields."""

    def __init__(self, base: Dataset, corruption: str, severity: int, seed: int = 0) -> None:
        if corruption not in CORRUPTIONS:
            raise ConfigError(f"unknown corruption '{corruption}'; available: {', '.join(CORRUPTIONS)}")
        if not 1 <= int(severity) <= 5:
            raise ConfigError(f"corruption severity must be 1-5, got {severity}")
        self.base, self.corruption, self.severity, self.seed = base, corruption, int(severity), int(seed)

    def __len__(self) -> int:
        return len(cast(Sized, self.base))  # a map-style dataset (Dataset does not declare its length)

    def __getitem__(self, index: int) -> Optional[Dict[str, Any]]:
        item = self.base[index]
        if item is None:
            return None
        item = dict(item)
        item["image"] = corrupt_image(torch.as_tensor(item["image"]), self.corruption, self.severity,
                                      image_seed(self.seed, self.corruption, self.severity, int(index)))
        return item


def matched_ood_dataset(root: str, class_names: Sequence[str], image_size: int, cfg_data) -> Dataset:
    """A labelled folder whose class folders are named like (a subset of) the training classes, relabelled to the
    training class indices; a folder named like no training class is a one-line error."""
    from selfsup.data.sources.folder import FolderDataset

    root_path = Path(root)
    if not root_path.exists():
        raise ConfigError(f"--ood {root}: no such folder")
    if not root_path.is_dir():
        raise ConfigError(f"--ood {root}: is a file, not a folder of class folders")
    try:
        ds = FolderDataset(root_path, image_size, skip_corrupt=cfg_data.skip_corrupt, max_pixels=cfg_data.max_pixels)
    except DataError as exc:
        raise DataError(f"--ood {root}: {exc}") from None
    names = list(ds.class_names or [])
    if not names:
        raise DataError(f"--ood {root}: no class folders (an out-of-distribution test set must be labelled)")
    index = {n: i for i, n in enumerate(class_names)}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise DataError(f"--ood {root}: class folder(s) {', '.join(unknown[:5])} match no training class "
                        f"({', '.join(list(class_names)[:10])}{', ...' if len(class_names) > 10 else ''})")
    mapping = torch.tensor([index[n] for n in names], dtype=torch.long)
    return _Relabelled(ds, mapping)


class _Relabelled(Dataset):
    def __init__(self, base, mapping: torch.Tensor) -> None:
        self.base, self.mapping = base, mapping
        self.labels = mapping[base.labels]

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        item = self.base[index]
        if item is None:
            return None
        item = dict(item)
        item["label"] = int(self.mapping[int(item["label"])])
        return item


def run_robustness(cfg, checkpoint: Optional[str], *, corruptions: Sequence[str] = CORRUPTIONS,
                   severities: Sequence[int] = (1, 2, 3, 4, 5), test_limit: Optional[int] = None,
                   ood: Sequence[str] = (), progress: bool = True, data=None) -> Dict[str, Any]:
    """Clean linear probe, then zero-shot accuracy on every (corruption, severity) and every ``ood`` folder."""
    from torch.utils.data import Subset

    from selfsup.data.base import collate
    from selfsup.engine.devices import device_for
    from selfsup.eval.features import extract_features
    from selfsup.eval.linear import fit_logistic_lbfgs
    from selfsup.eval.run import features, load_backbone, probe_data
    from selfsup.metrics.accuracy import topk_accuracy

    for c in corruptions:
        if c not in CORRUPTIONS:
            raise ConfigError(f"unknown corruption '{c}'; available: {', '.join(CORRUPTIONS)}")
    if corruptions:
        _corrupt_fn()  # fail before any work when the extra is missing
    data = data or probe_data(cfg)
    ood_sets: Dict[str, Dataset] = {}
    if ood:  # every --ood folder is checked before any work
        names = data.train.class_names
        if not names:
            raise ConfigError(f"data.dataset={cfg.data.dataset} has no class names to match --ood folders against")
        for root in ood:
            ood_sets[str(root)] = matched_ood_dataset(root, names, data.train.image_size, cfg.data)
    backbone = load_backbone(cfg, checkpoint).to(device_for(cfg))
    xtr, ytr, xte, yte = features(cfg, backbone, data, progress)
    lc = cfg.eval.linear
    res = fit_logistic_lbfgs(xtr, ytr, xte, yte, num_classes=data.train.num_classes, l2_grid=lc.l2_grid,
                             val_fraction=lc.val_fraction, max_iter=lc.max_iter, seed=cfg.seed,
                             device=device_for(cfg), return_model=True)
    w, b, mean, std = (res[k].cpu() for k in ("weight", "bias", "mean", "std"))

    def accuracy(ds: Dataset, desc: str) -> float:
        x, y = extract_features(backbone, ds, preprocess=data.preprocess(cfg), batch_size=cfg.eval.batch_size,
                                device=device_for(cfg), collate_fn=collate, progress=False, desc=desc)
        logits = ((x - mean) / std) @ w.T + b
        return topk_accuracy(logits, y, ks=(1,))["top1"]

    test = data.test
    if test_limit is not None and test_limit < len(test):
        test = Subset(test, torch.randperm(len(test), generator=torch.Generator().manual_seed(cfg.seed))
                      [:test_limit].sort().values.tolist())
    clean = accuracy(test, "clean") if test is not data.test else float(res["top1"])
    table: Dict[str, Dict[int, float]] = {}
    cells = [(c, s) for c in corruptions for s in severities]
    with tqdm(total=len(cells), desc="corruptions", unit="set", disable=not progress, dynamic_ncols=True) as bar:
        for c, s in cells:
            table.setdefault(c, {})[int(s)] = accuracy(CorruptedDataset(test, c, s, cfg.seed), f"{c}-{s}")
            bar.set_postfix_str(f"{c} s{s}: {table[c][int(s)]:.1f}%")
            bar.update(1)
    per_corruption = {c: float(np.mean(list(v.values()))) for c, v in table.items()}
    out: Dict[str, Any] = {"clean_top1": clean, "num_test": len(test), "l2": res["l2"], "severities": list(severities),
                           "corruptions": per_corruption, "by_severity": table}
    if per_corruption:
        out["mean_corrupted_top1"] = float(np.mean(list(per_corruption.values())))
        out["groups"] = {g: float(np.mean([per_corruption[c] for c in cs if c in per_corruption]))
                         for g, cs in GROUPS.items() if any(c in per_corruption for c in cs)}
    if ood_sets:
        out["ood"] = {root: accuracy(ds, f"ood {root}") for root, ds in ood_sets.items()}
    return out


def robustness_table(res: Dict[str, Any]) -> List[str]:
    """Markdown lines in the layout of RELICv2's Table 9: one column per corruption, then the mean."""
    names = [c for c in CORRUPTIONS if c in res["corruptions"]]  # Table 9's order, whatever order the dict has
    names += [c for c in res["corruptions"] if c not in names]
    short = {"gaussian_noise": "Gauss", "shot_noise": "Shot", "impulse_noise": "Impulse", "defocus_blur": "Defocus",
             "glass_blur": "Glass", "motion_blur": "Motion", "zoom_blur": "Zoom", "snow": "Snow", "frost": "Frost",
             "fog": "Fog", "brightness": "Bright", "contrast": "Contrast", "elastic_transform": "Elastic",
             "pixelate": "Pixel", "jpeg_compression": "JPEG"}
    head = "| clean | " + " | ".join(short.get(n, n) for n in names) + " | mean |"
    rule = "|" + "---:|" * (len(names) + 2)
    row = (f"| {res['clean_top1']:.2f} | " + " | ".join(f"{res['corruptions'][n]:.2f}" for n in names)
           + f" | {res.get('mean_corrupted_top1', float('nan')):.2f} |")
    return [head, rule, row]
