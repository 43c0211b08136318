"""Frozen-backbone feature extraction and an on-disk feature cache.

Both linear protocols and the kNN probe read the backbone's pooled pre-logits representation of centre-cropped,
normalised images (no augmentation): the Revisiting-SSL L-BFGS protocol fits on such cached features (method-details A6,
B 2.4), the kNN probe compares them (Wu et al. 2018; DINO ``eval_knn``), and the SGD protocol (RELICv2 App. D.1)
uses them for its test set. :class:`FeatureCache` keeps them in a ``.safetensors`` file so that repeated probes of the
same backbone on the same data skip the forward passes.

This module does not depend on ``selfsup.data``: a dataset is any map-style ``torch.utils.data.Dataset`` whose
items are dicts with ``image`` (uint8 ``(3, S, S)``) and ``label`` (int); batched fetching through ``__getitems__`` is
used by the ``DataLoader`` when the dataset has it. The caller passes the preprocessing (centre crop, resize,
normalisation) as a callable on uint8 batches.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sized, Tuple, Union, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from selfsup.errors import DataError

log = logging.getLogger("selfsup.eval")

Preprocess = Callable[[torch.Tensor], torch.Tensor]


def default_collate(items: List[Optional[Mapping[str, Any]]]) -> Dict[str, torch.Tensor]:
    """Stack ``image`` into ``(B, 3, S, S)`` uint8 and ``label`` into ``(B,)`` int64; ``None`` items are dropped."""
    kept = [it for it in items if it is not None]
    if not kept:
        return {"image": torch.empty(0, 3, 0, 0, dtype=torch.uint8), "label": torch.empty(0, dtype=torch.long)}
    images = torch.stack([torch.as_tensor(it["image"]) for it in kept])
    labels = torch.tensor([int(it["label"]) for it in kept], dtype=torch.long)
    return {"image": images, "label": labels}


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode (BatchNorm uses and keeps its running statistics, dropout is off) and restore the
    previous ``training`` flag of every submodule afterwards, even when they were mixed."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def to_device_batch(images: torch.Tensor, device: Union[str, torch.device]) -> torch.Tensor:
    """Move a uint8 batch to ``device`` (asynchronously from pinned memory on CUDA)."""
    device = torch.device(device)
    return images.to(device, non_blocking=device.type == "cuda")


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last memory format when it is a 4-D image batch (faster convolutions), else unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def autocast_for(device: Union[str, torch.device], amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``amp`` is set; a no-op otherwise (CPU features stay float32)."""
    device = torch.device(device)
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_loader(dataset: Dataset, batch_size: int, collate_fn: Optional[Callable], device: Union[str, torch.device],
                num_workers: int = 0, batch_sampler=None) -> DataLoader:
    """A ``DataLoader`` in dataset order (or over ``batch_sampler``), pinned memory when the target is CUDA."""
    pin = torch.device(device).type == "cuda"
    collate_fn = collate_fn or default_collate
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_fn, num_workers=num_workers,
                          pin_memory=pin, persistent_workers=num_workers > 0)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False, collate_fn=collate_fn,
                      num_workers=num_workers, pin_memory=pin)


@torch.no_grad()
def extract_features(backbone: nn.Module, dataset: Dataset, *, preprocess: Preprocess, batch_size: int = 512,
                     device: Union[str, torch.device] = "cpu", collate_fn: Optional[Callable] = None,
                     progress: bool = True, desc: str = "features", amp: bool = False,
                     num_workers: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of every image of ``dataset``, in dataset order: ``(N, F)`` float32 and ``(N,)`` int64, on
    the CPU.

    The backbone runs in eval mode (its previous mode is restored afterwards, submodule by submodule) without gradients.
    Each uint8 batch is moved to ``device`` first and ``preprocess`` runs there (so the crop/resize/normalise of the
    caller can use the GPU), then the input goes to the backbone in channels-last format. ``amp`` turns on bf16
    autocast, on CUDA only; features are returned in float32 either way. Outputs with more than two dimensions are
    flattened. ``backbone`` must already be on ``device``. Items that a ``collate_fn`` drops (e.g. skipped corrupt
    images) are simply absent, with their labels, so N may be below ``len(dataset)``.

    ``progress`` shows a tqdm bar in images (its rate is images/s).
    """
    loader = make_loader(dataset, batch_size, collate_fn, device, num_workers)
    feats: List[torch.Tensor] = []
    labels: List[torch.Tensor] = []
    skipped = 0
    # map-style datasets have a length (Dataset does not declare it)
    with eval_mode(backbone), tqdm(total=len(cast(Sized, dataset)), desc=desc, unit="img", unit_scale=True,
                                   disable=not progress, dynamic_ncols=True, leave=False) as bar:
        for batch in loader:
            images = batch["image"]
            skipped += int(batch.get("skipped", 0))
            if images.shape[0] == 0:
                continue
            x = preprocess(to_device_batch(images, device))
            with autocast_for(device, amp):
                out = backbone(channels_last(x))
            feats.append(out.float().flatten(1).cpu())
            labels.append(torch.as_tensor(batch["label"]).long().cpu())
            bar.update(images.shape[0])
    where = getattr(dataset, "directory", type(dataset).__name__)
    if skipped:
        log.warning("%s: %d unreadable images skipped (data.skip_corrupt=true)", where, skipped)
    if not feats:
        raise DataError(f"no readable image in {where}: all {len(cast(Sized, dataset))} were skipped as unreadable")
    return torch.cat(feats), torch.cat(labels)


class FeatureCache:
    """Features and labels of one split stored in a ``.safetensors`` file, tagged with a key.

    The key says what produced the features (e.g. from :meth:`make_key` over the checkpoint, its modification time, the
    dataset and the evaluation transform); :meth:`load` returns None when the file is missing, unreadable or was
    written under another key, so a stale cache is recomputed rather than reused. Writes are atomic (temporary file,
    then rename). Extra string metadata can be stored next to the key.

    >>> cache = FeatureCache("runs/x/features/train.safetensors")  # doctest: +SKIP
    >>> x, y = cache.get_or_compute(key, lambda: extract_features(...))  # doctest: +SKIP
    """

    FORMAT = "selfsup-features-1"

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = Path(path)

    @staticmethod
    def make_key(*parts: Any, **named: Any) -> str:
        """A short stable hash of ``parts`` and ``named`` (JSON with sorted keys; non-JSON values through ``str``)."""
        text = json.dumps({"parts": list(parts), "named": named}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, features: torch.Tensor, labels: torch.Tensor, key: str = "",
             metadata: Optional[Mapping[str, Any]] = None) -> Path:
        from safetensors.torch import save_file

        if features.ndim != 2 or labels.ndim != 1 or features.shape[0] != labels.shape[0]:
            raise ValueError(f"features (N, F) and labels (N,) do not match: {tuple(features.shape)} vs "
                             f"{tuple(labels.shape)}")
        meta = {str(k): str(v) for k, v in (metadata or {}).items()}
        meta.update(format=self.FORMAT, key=str(key), num=str(features.shape[0]), dim=str(features.shape[1]))
        tensors = {"features": features.detach().float().cpu().contiguous(),
                   "labels": labels.detach().long().cpu().contiguous()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=meta)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return self.path

    def metadata(self) -> Optional[Dict[str, str]]:
        """The stored metadata (including ``key``), or None when the file is missing or unreadable."""
        from safetensors import safe_open

        if not self.exists():
            return None
        try:
            with safe_open(str(self.path), framework="pt") as f:
                return dict(f.metadata() or {})
        except Exception as exc:  # a truncated or foreign file: treat as absent
            log.warning("feature cache %s is unreadable (%s); ignoring it", self.path, exc)
            return None

    def load(self, key: Optional[str] = None) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """``(features, labels)`` when the file exists, is readable and, if ``key`` is given, was saved under it."""
        from safetensors.torch import load_file

        meta = self.metadata()
        if meta is None or meta.get("format") != self.FORMAT:
            return None
        if key is not None and meta.get("key") != str(key):
            log.info("feature cache %s was written for another key; recomputing", self.path)
            return None
        try:
            tensors = load_file(str(self.path), device="cpu")
        except Exception as exc:
            log.warning("feature cache %s is unreadable (%s); ignoring it", self.path, exc)
            return None
        return tensors["features"], tensors["labels"]

    def get_or_compute(self, key: str, compute: Callable[[], Tuple[torch.Tensor, torch.Tensor]],
                       metadata: Optional[Mapping[str, Any]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Load the features saved under ``key``, or run ``compute()``, save its result and return it."""
        hit = self.load(key)
        if hit is not None:
            log.info("features from cache %s", self.path)
            return hit
        features, labels = compute()
        self.save(features, labels, key=key, metadata=metadata)
        return features, labels
