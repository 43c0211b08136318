"""Class-balanced label subsets: counts per class, determinism, and files that refuse another dataset."""

import json

import pytest
import torch

from selfsup.data.subsets import (
    class_balanced_subset,
    dataset_identity,
    load_subset,
    save_subset,
    subset_filename,
    subset_for,
)
from selfsup.errors import DataError


def _labels():
    # class 0: 100 images, class 1: 50, class 2: 7, shuffled together; two unlabelled (-1)
    y = torch.cat([torch.zeros(100), torch.ones(50), torch.full((7,), 2), torch.full((2,), -1)]).long()
    return y[torch.randperm(y.numel(), generator=torch.Generator().manual_seed(3))]


def test_counts_per_class_are_the_fraction_rounded_and_at_least_one():
    y = _labels()
    idx = class_balanced_subset(y, 0.1, seed=0)
    counts = torch.bincount(y[idx], minlength=3).tolist()
    assert counts == [10, 5, 1]  # round(0.1 * 7) = 1; a class never disappears
    assert torch.equal(idx, torch.sort(idx).values) and idx.unique().numel() == idx.numel()
    assert (y[idx] >= 0).all()  # unlabelled images are never drawn
    assert torch.bincount(y[class_balanced_subset(y, 0.01, 0)], minlength=3).tolist() == [1, 1, 1]
    assert class_balanced_subset(y, 1.0, 0).numel() == 157


def test_seeded_and_different_per_seed():
    y = _labels()
    assert torch.equal(class_balanced_subset(y, 0.2, 5), class_balanced_subset(y, 0.2, 5))
    assert not torch.equal(class_balanced_subset(y, 0.2, 5), class_balanced_subset(y, 0.2, 6))
    with pytest.raises(ValueError):
        class_balanced_subset(y, 0.0, 0)


def test_file_round_trip_and_reuse(tmp_path):
    y = _labels()
    ident = dataset_identity("shapes", "train", y, 3)
    idx, path = subset_for(y, ident, 0.1, 0, tmp_path)
    assert path.name == subset_filename(ident, 0.1, 0) == "shapes_train159_10pct_seed0.json"
    payload = json.loads(path.read_text())
    assert payload["num_labels"] == 16 and payload["identity"] == ident
    # a second call reads the file, it does not redraw: edit the file (one image swapped for another of its class,
    # so the file stays consistent) and see the edit come back
    first = payload["indices"][0]
    other = next(i for i in range(y.numel()) if y[i] == y[first] and i not in payload["indices"])
    payload["indices"] = [other, *payload["indices"][1:]]
    path.write_text(json.dumps(payload))
    again, _ = subset_for(y, ident, 0.1, 0, tmp_path)
    assert again.tolist() == sorted(payload["indices"])
    assert torch.equal(load_subset(path, ident), again)
    assert idx.numel() == 16


def test_a_file_for_another_dataset_is_refused_in_one_line(tmp_path):
    y = _labels()
    ident = dataset_identity("shapes", "train", y, 3)
    path = tmp_path / "s.json"
    save_subset(path, class_balanced_subset(y, 0.1, 0), ident, 0.1, 0)
    y2 = y.clone()
    y2[0] = (y2[0] + 1) % 3  # one label changed: same size, different data
    with pytest.raises(DataError, match="drawn for another dataset.*labels_sha256") as exc:
        load_subset(path, dataset_identity("shapes", "train", y2, 3))
    assert "\n" not in str(exc.value)
    with pytest.raises(DataError, match="differs in: size"):
        load_subset(path, dataset_identity("shapes", "train", y[:-1], 3))
    path.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_subset(path, ident)
    bad = {"format": "selfsup-label-subset-1", "identity": ident, "fraction": 0.1, "seed": 0, "num_labels": 2,
           "indices": [0, 10 ** 6]}
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"indices\[1\] = 1000000 is outside"):
        load_subset(path, ident)
