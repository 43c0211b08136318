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
  after files were added, would otherwise silently pick other images. Every other field is checked as well when the
  file is read back (:func:`load_subset`): ``num_labels`` must count the indices, the indices must be distinct,
  in range and labelled, and their per-class counts must be the class-balanced ones of the stored ``fraction``; the
  ``fraction`` and ``seed`` must be those asked for. A file that disagrees with itself is refused in one line naming
  the file and the field, never used.
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


def _expected_counts(labels: Tensor, fraction: float) -> Dict[int, int]:
    """Per labelled class, how many of its examples :func:`class_balanced_subset` draws at ``fraction``."""
    out: Dict[int, int] = {}
    for c, n in zip(*[t.tolist() for t in torch.unique(labels, return_counts=True)]):
        if c >= 0:
            out[int(c)] = n if fraction >= 1 else max(1, int(round(fraction * n)))
    return out


def load_subset(path: Path, identity: Dict[str, Any], labels: Optional[Tensor] = None,
                fraction: Optional[float] = None, seed: Optional[int] = None) -> Tensor:
    """The indices stored in ``path``, after checking every field: the format, that it was drawn for the dataset
    described by ``identity``, that ``num_labels`` counts the indices, that the indices are distinct and in range,
    and (with the dataset's ``labels``) that they index labelled examples in the class-balanced numbers its
    ``fraction`` gives. ``fraction`` and ``seed``, when given, must be the file's. Anything else is one
    :class:`DataError` line naming the file and the field: a subset that disagrees with itself or with the data is
    never used."""
    from selfsup.metafiles import Fields, read_json

    path = Path(path)
    what = "label subset"
    f = Fields(read_json(path, what), path, what)
    if f.raw("format", None) != FORMAT:
        raise DataError(f"{path} is not a selfsup label-subset file (field format must be {FORMAT!r})")
    ident = f.mapping("identity")
    for key, want in identity.items():
        if ident.raw(key, None) != want:
            diff = [k for k in identity if ident.raw(k, None) != identity[k]]
            raise DataError(f"the label subset {path} was drawn for another dataset (differs in: {', '.join(diff)}); "
                            "delete it or point eval.finetune.subset_dir elsewhere")
    size = int(identity["size"])
    stored_fraction = f.number("fraction", lo=0, hi=1)
    if stored_fraction <= 0:
        raise f.error("fraction", f"must be in (0, 1], not {stored_fraction}")
    if fraction is not None and stored_fraction != float(fraction):
        raise f.error("fraction", f"is {stored_fraction:g}, not the {float(fraction):g} asked for")
    stored_seed = f.integer("seed")
    if seed is not None and stored_seed != int(seed):
        raise f.error("seed", f"is {stored_seed}, not the {int(seed)} asked for")
    indices = f.list("indices", of=int)
    if not indices:
        raise f.error("indices", "is empty")
    for i, v in enumerate(indices):
        if not 0 <= v < size:
            raise f.error(f"indices[{i}]", f"= {v} is outside the dataset's {size} images")
    seen: set = set()
    for v in indices:
        if v in seen:
            raise f.error("indices", f"holds index {v} more than once")
        seen.add(v)
    num = f.integer("num_labels", lo=0)
    if num != len(indices):
        raise f.error("num_labels", f"is {num}, but the file holds {len(indices)} indices")
    index = torch.tensor(sorted(indices), dtype=torch.long)
    if labels is not None:
        labels = torch.as_tensor(labels).long().flatten()
        picked = labels[index]
        if bool((picked < 0).any()):
            bad = int(index[picked < 0][0])
            raise f.error("indices", f"holds index {bad}, an unlabelled image")
        want = _expected_counts(labels, stored_fraction)
        have = {int(c): int(n) for c, n in zip(*[t.tolist() for t in torch.unique(picked, return_counts=True)])}
        for c in sorted(set(want) | set(have)):
            if have.get(c, 0) != want.get(c, 0):
                raise f.error("indices", f"hold {have.get(c, 0)} images of class {c}, but a class-balanced "
                                         f"{stored_fraction:g} subset has {want.get(c, 0)} (per class: "
                                         f"max(1, round(fraction * n_c)))")
    return index


def subset_for(labels: Tensor, identity: Dict[str, Any], fraction: float, seed: int, folder: Path) -> tuple:
    """``(indices, path)``: the subset file in ``folder`` for (dataset, fraction, seed), read if it exists (and
    validated), drawn and written otherwise."""
    path = Path(folder) / subset_filename(identity, fraction, seed)
    if path.exists() or path.is_symlink():
        return load_subset(path, identity, labels, fraction, seed), path
    indices = class_balanced_subset(labels, fraction, seed)
    try:
        save_subset(path, indices, identity, fraction, seed)
    except OSError as exc:
        raise ConfigError(f"eval.finetune.subset_dir={folder}: cannot write {path.name}: "
                          f"{exc.strerror or exc}") from None
    return indices, path
