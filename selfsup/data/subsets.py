"""Class-balanced label subsets (the 1% / 10% semi-supervised splits), saved to files so that runs are comparable.

SimCLR, BYOL, RELICv2 and SSLight fine-tune on ImageNet's fixed 1% and 10% subsets (SimCLR's lists). selfsup reads any
labelled dataset, so it draws the subset itself:

* **Class-balanced.** For every class ``c`` with ``n_c`` training images, ``max(1, round(fraction * n_c))`` of them are
  drawn without replacement (every class keeps at least one labelled image: a 1% subset of a class with 50 images
  would otherwise be empty, and the classifier could never predict it).
* **Seeded.** One ``torch.Generator`` seeded with ``seed`` permutes each class's indices, classes in label order, so
  a (dataset, fraction, seed) triple always gives the same subset on every machine.
* **Saved and validated.** :func:`subset_for` writes the indices as JSON together with the identity of the dataset
  they index (name, split, size, number of classes and a SHA-256 of the label vector). A file whose identity does not
  match the dataset in hand is refused with one line: a subset drawn for another dataset, or for the same folder
  after files were added, would otherwise silently pick other images.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import Tensor

from selfsup.errors import ConfigError, DataError

FORMAT = "selfsup-label-subset-1"


def class_balanced_subset(labels: Tensor, fraction: float, seed: int = 0) -> Tensor:
    """Sorted int64 indices into ``labels``: per class, a seeded random ``max(1, round(fraction * n_c))`` of its
    examples (all of them when ``fraction`` is 1). Negative labels (unlabelled) are never drawn."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    labels = torch.as_tensor(labels).long().flatten()
    gen = torch.Generator().manual_seed(int(seed))
    chosen = []
    for c in torch.unique(labels).tolist():
        if c < 0:
            continue
        idx = torch.nonzero(labels == c).flatten()
        k = idx.numel() if fraction >= 1 else max(1, int(round(fraction * idx.numel())))
        chosen.append(idx[torch.randperm(idx.numel(), generator=gen)[:k]])
    if not chosen:
        raise DataError("the dataset has no labelled images to draw a subset from")
    return torch.sort(torch.cat(chosen)).values


def dataset_identity(name: str, split: str, labels: Tensor, num_classes: Optional[int]) -> Dict[str, Any]:
    """What a subset file must match: the dataset's name, split, size, class count and a hash of its labels."""
    labels = torch.as_tensor(labels).long().contiguous()
    return {"dataset": str(name), "split": str(split), "size": int(labels.numel()),
            "num_classes": None if num_classes is None else int(num_classes),
            "labels_sha256": hashlib.sha256(labels.numpy().tobytes()).hexdigest()}


def subset_filename(identity: Dict[str, Any], fraction: float, seed: int) -> str:
    pct = f"{100 * fraction:g}".replace(".", "p")
    return f"{identity['dataset']}_{identity['split']}{identity['size']}_{pct}pct_seed{seed}.json"


def save_subset(path: Path, indices: Tensor, identity: Dict[str, Any], fraction: float, seed: int) -> None:
    """Write the subset atomically (a temporary file in the same folder, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "fraction": float(fraction), "seed": int(seed), "num_labels": int(indices.numel()),
               "identity": identity, "indices": [int(i) for i in indices.tolist()]}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_subset(path: Path, identity: Dict[str, Any]) -> Tensor:
    """The indices stored in ``path``, after checking that they were drawn for the dataset described by ``identity``."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read the label subset {path}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"{path} is not a selfsup label-subset file")
    stored = payload.get("identity")
    if stored != identity:
        diff = [k for k in identity if not isinstance(stored, dict) or stored.get(k) != identity[k]]
        raise DataError(f"the label subset {path} was drawn for another dataset (differs in: {', '.join(diff)}); "
                        "delete it or point eval.finetune.subset_dir elsewhere")
    indices = payload.get("indices")
    if (not isinstance(indices, list) or not indices or not all(isinstance(i, int) for i in indices)
            or min(indices) < 0 or max(indices) >= identity["size"] or len(set(indices)) != len(indices)):
        raise DataError(f"the label subset {path} holds invalid indices")
    return torch.tensor(sorted(indices), dtype=torch.long)


def subset_for(labels: Tensor, identity: Dict[str, Any], fraction: float, seed: int, folder: Path) -> tuple:
    """``(indices, path)``: the subset file in ``folder`` for (dataset, fraction, seed), read if it exists (and
    validated), drawn and written otherwise."""
    path = Path(folder) / subset_filename(identity, fraction, seed)
    if path.exists():
        return load_subset(path, identity), path
    indices = class_balanced_subset(labels, fraction, seed)
    try:
        save_subset(path, indices, identity, fraction, seed)
    except OSError as exc:
        raise ConfigError(f"eval.finetune.subset_dir={folder}: cannot write {path.name}: "
                          f"{exc.strerror or exc}") from None
    return indices, path
