"""Hostile inputs of the saliency commands and of the evaluations that read user files.

* the mask cache is replaced kill-safely (the old one stays readable until the new one is complete, then only the
  files the cache itself wrote are removed), and its fingerprint is read field by field;
* a saliency network's stored metadata and a fit folder's own files are checked, one line naming the file;
* ``saliency predict --out`` / ``saliency fit out=`` that are files are refused before any work;
* a label-subset file that disagrees with itself or with the data is refused, never used;
* a probe (transfer, linear, kNN, fine-tune) on a one-class train split is refused instead of reporting 100 %;
* ``eval robustness --ood`` folders that are missing, empty, files or of other classes are refused before any work.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import selfsup.saliency.cache as cache_mod
from selfsup.config import load_config
from selfsup.data.base import InMemoryDataset
from selfsup.data.masks import MaskCache, dataset_fingerprint
from selfsup.data.subsets import class_balanced_subset, dataset_identity, load_subset, save_subset, subset_for
from selfsup.errors import CheckpointError, ConfigError, DataError, SelfsupError
from selfsup.saliency.cache import create_cache, write_cache
from tests.hostile.common import refused_untouched, tree

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def one_line(exc: pytest.ExceptionInfo, *words: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


def _dataset(n: int = 12, seed: int = 0, labels=None) -> InMemoryDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 3 if labels is None else torch.as_tensor(labels)
    return InMemoryDataset(images, y, num_classes=int(y.max()) + 1, mean=[0.5] * 3, std=[0.25] * 3)


def _masks(n: int, value: int) -> np.ndarray:
    return np.full((n, 4, 4), value, np.uint8)


def png_folder(root: Path, classes, n: int = 3) -> Path:
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (10, 10), (40 * k + 10 * i, 90, 200 - 30 * k)).save(root / c / f"{i}.png")
    return root


# ------------------------------------------------------------------------------------------------------------------
# Mask cache: replacement, ownership, fingerprint
# ------------------------------------------------------------------------------------------------------------------

def test_a_failed_cache_replacement_keeps_the_old_cache_readable(tmp_path, monkeypatch):
    ds = _dataset()
    fp = dataset_fingerprint(ds, "folder", "train")
    (tmp_path / "notes.txt").write_text("the user's")
    old = write_cache(tmp_path, "train", _masks(12, 255), fp)
    old_name = old.path.name

    # 1. the writer dies after the new array is complete, before the switch (the fingerprint write raises)
    def boom(path, data):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(cache_mod, "atomic_write_bytes", boom)
        with pytest.raises(OSError):
            write_cache(tmp_path, "train", _masks(12, 0), fp)
    again = MaskCache.open(tmp_path, "train", fp)
    assert again.path.name == old_name and int(again.masks.min()) == 255  # the old content, still valid
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["notes.txt", "train.json", old_name])

    # 2. a kill while the new array is being filled: create() without finish() leaves the old cache as it was
    arr, finish = create_cache(tmp_path, "train", fp, 4)
    arr[:] = 7
    assert int(MaskCache.open(tmp_path, "train", fp).masks.min()) == 255
    finish.abort()

    # 3. a failure while predicting (the array half filled): abort() removes only the new file
    arr, finish = create_cache(tmp_path, "train", fp, 4)
    arr[:6] = 0
    finish.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["notes.txt", "train.json", old_name])

    # 4. a complete replacement: the new content, the old array gone, the user's file untouched
    new = write_cache(tmp_path, "train", _masks(12, 0), fp)
    assert new.path.name != old_name and not (tmp_path / old_name).exists()
    assert int(MaskCache.open(tmp_path, "train", fp).masks.max()) == 0
    assert (tmp_path / "notes.txt").read_text() == "the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["notes.txt", "train.json", new.path.name])


def test_a_legacy_cache_opens_and_only_its_own_array_is_replaced(tmp_path):
    ds = _dataset()
    fp = dataset_fingerprint(ds, "folder", "train")
    np.save(tmp_path / "train.npy", _masks(12, 255))
    (tmp_path / "train.json").write_text(json.dumps(dict(fp, mask_size=4)))
    (tmp_path / "test.npy").write_bytes(b"someone else's")
    assert int(MaskCache.open(tmp_path, "train", fp).masks.min()) == 255
    write_cache(tmp_path, "train", _masks(12, 0), fp)
    assert not (tmp_path / "train.npy").exists()  # the old cache's own array (named by its own fingerprint)
    assert (tmp_path / "test.npy").read_bytes() == b"someone else's"
    assert int(MaskCache.open(tmp_path, "train", fp).masks.max()) == 0


@pytest.mark.parametrize("payload, words", [
    ([1, 2, 3], ["must be a mapping", "list"]),
    ({"dataset": "folder", "split": "train", "size": "12", "image_size": 8, "sha256": "x"}, ["field size"]),
    ({"dataset": "folder", "split": "train", "size": 12, "image_size": 8, "sha256": "x", "mask_size": 4.5},
     ["field mask_size"]),
    ({"dataset": "folder", "split": "train", "size": 12, "image_size": 8, "sha256": "x", "array": "../x.npy"},
     ["field array"]),
    ({"dataset": ["folder"], "split": "train", "size": 12, "image_size": 8, "sha256": "x"}, ["field dataset"]),
    ({"split": "train", "size": 12, "image_size": 8, "sha256": "x"}, ["field dataset", "missing"]),
])
def test_a_bad_fingerprint_is_one_line_naming_file_and_field(tmp_path, payload, words):
    fp = dataset_fingerprint(_dataset(), "folder", "train")
    write_cache(tmp_path, "train", _masks(12, 255), fp)
    meta = tmp_path / "train.json"
    meta.write_text(json.dumps(payload))
    with pytest.raises(DataError) as e:
        MaskCache.open(tmp_path, "train", fp)
    one_line(e, str(meta), *words)
    # and a writer refuses to replace a train.json that is not a mask cache's: nothing in the folder changes
    before = tree(tmp_path)
    with pytest.raises(ConfigError) as e:
        write_cache(tmp_path, "train", _masks(12, 0), fp)
    one_line(e, "train.json", "refusing")
    assert tree(tmp_path) == before


def test_an_array_of_the_wrong_shape_is_refused(tmp_path):
    fp = dataset_fingerprint(_dataset(), "folder", "train")
    cache = write_cache(tmp_path, "train", _masks(12, 255), fp)
    np.save(cache.path, np.zeros((12, 4, 5), np.uint8))
    with pytest.raises(DataError) as e:
        MaskCache.open(tmp_path, "train", fp)
    one_line(e, str(cache.path))
    record = json.loads((tmp_path / "train.json").read_text())
    (tmp_path / record["array"]).unlink()
    with pytest.raises(DataError) as e:
        MaskCache.open(tmp_path, "train", fp)
    one_line(e, "missing")


def test_predict_refuses_its_output_folder_before_any_work(tmp_path):
    from selfsup.saliency.predict import predict_cache

    cfg = load_config(None, ["data.train_size=8", "data.test_size=4", "data.image_size=8"])
    afile = tmp_path / "afile"
    afile.write_text("keep")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "train.json").write_text("[1, 2]")
    before = tree(tmp_path)
    # the network does not exist: each refusal must come first (a CheckpointError would mean work began)
    for out, words in ((afile, ["--out", "is a file"]), (afile / "masks", ["--out", str(afile)]),
                       (foreign, ["--out", "train.json", "refusing"])):
        with pytest.raises(ConfigError) as e:
            predict_cache(cfg, tmp_path / "no_net", out, "train", progress=False)
        one_line(e, *words)
    assert tree(tmp_path) == before


# ------------------------------------------------------------------------------------------------------------------
# Saliency network metadata and fit folders
# ------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("mean", '"abc"'), ("std", "[0.2, 0.2]"), ("std", "[0, 1, 1]"),
                                          ("image_size", "sixteen"), ("image_size", "16.5"), ("config", "[1, 2]"),
                                          ("config", "{not json"), ("mean", "[NaN, 0, 0]")])
def test_saliency_net_metadata_of_the_wrong_type_is_one_line(tmp_path, field, value):
    from safetensors.torch import save_file

    from selfsup.saliency.network import load_saliency_net

    meta = {"format": "selfsup-saliency-1", "image_size": "16", "mean": "[0.5, 0.5, 0.5]", "std": "[0.2, 0.2, 0.2]",
            "config": "{}"}
    meta[field] = value
    p = tmp_path / "saliency_net.safetensors"
    save_file({"w": torch.zeros(1)}, str(p), metadata=meta)
    with pytest.raises(CheckpointError) as e:
        load_saliency_net(tmp_path, load_config(None, []))
    one_line(e, str(p), field)


def test_a_saliency_net_that_is_not_safetensors_is_one_line(tmp_path):
    from selfsup.saliency.network import load_saliency_net

    p = tmp_path / "saliency_net.safetensors"
    p.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(CheckpointError) as e:
        load_saliency_net(p, load_config(None, []))
    one_line(e, str(p))


def test_fit_folders_that_are_not_a_fits_own_are_refused_untouched(tmp_path):
    from selfsup.saliency.fit import fit_saliency, load_stage_maps

    def cfg(out):
        return load_config("saliency_shapes", ["data.train_size=16", "data.test_size=8", "data.image_size=16",
                                               f"out={out}"])

    afile = tmp_path / "afile"
    afile.write_text("keep")
    for out in (afile, afile / "sub"):
        with pytest.raises(ConfigError) as e:
            fit_saliency(cfg(out), progress=False)
        one_line(e, "out=", str(afile))
    # a folder of the user's files, or whose signature is not a JSON mapping (a list, binary), is not a fit folder
    for sig in (None, b"[1, 2]", b"\x00\x01\x02"):
        d = tmp_path / f"user{0 if sig is None else len(sig)}"
        d.mkdir()
        (d / "config.yaml").write_text("mine: 1\n")
        if sig is not None:
            (d / "fit_signature.txt").write_bytes(sig)
        before = tree(d)
        with pytest.raises(ConfigError) as e:
            fit_saliency(cfg(d), progress=False)
        one_line(e, str(d), "refusing")
        assert tree(d) == before
    assert afile.read_text() == "keep"
    # a stored stage file that is damaged or of another shape names itself
    bad = tmp_path / "mr.npy"
    bad.write_bytes(b"garbage")
    with pytest.raises(SelfsupError) as e:
        load_stage_maps(bad, 4, 8)
    one_line(e, str(bad))
    np.save(bad, np.zeros((4, 8, 8), np.float32))
    with pytest.raises(SelfsupError) as e:
        load_stage_maps(bad, 4, 8)
    one_line(e, str(bad), "uint8")


# ------------------------------------------------------------------------------------------------------------------
# Label subsets
# ------------------------------------------------------------------------------------------------------------------

def _subset_file(tmp_path):
    y = torch.cat([torch.zeros(40), torch.ones(20), torch.full((10,), 2)]).long()
    ident = dataset_identity("shapes", "train", y, 3)
    idx, path = subset_for(y, ident, 0.1, 0, tmp_path)
    assert torch.bincount(y[idx]).tolist() == [4, 2, 1]
    return y, ident, path, json.loads(path.read_text())


def _edits(y, payload):
    idx = payload["indices"]
    c0 = [i for i in range(len(y)) if y[i] == 0 and i not in idx]
    c2_member = next(i for i in idx if y[i] == 2)
    return {
        "num_labels disagrees": (dict(payload, num_labels=payload["num_labels"] + 1), "num_labels"),
        "index out of range": (dict(payload, indices=[*idx[:-1], len(y)]), "indices["),
        "negative index": (dict(payload, indices=[-1, *idx[1:]]), "indices[0]"),
        "duplicated index": (dict(payload, indices=[idx[0], *idx[:-1]]), "more than once"),
        "class balance off": (dict(payload, indices=[c0[0] if i == c2_member else i for i in idx]), "class"),
        "index not an integer": (dict(payload, indices=[str(idx[0]), *idx[1:]]), "indices[0]"),
        "fraction of another subset": (dict(payload, fraction=0.5), "fraction"),
        "seed a string": (dict(payload, seed="0"), "seed"),
        "identity a list": (dict(payload, identity=[1]), "identity"),
        "indices a mapping": (dict(payload, indices={"0": 1}), "indices"),
        "a list instead of a mapping": ([payload], "must be a mapping"),
    }


def test_a_subset_file_that_disagrees_with_itself_is_refused_in_one_line(tmp_path):
    y, ident, path, payload = _subset_file(tmp_path)
    for name, (edited, word) in _edits(y, payload).items():
        path.write_text(json.dumps(edited))
        with pytest.raises(DataError) as e:
            subset_for(y, ident, 0.1, 0, tmp_path)
        one_line(e, str(path), word)
        assert json.loads(path.read_text()) == edited, name  # refused, not redrawn over the user's file
    path.write_text(json.dumps(payload))
    assert torch.bincount(y[subset_for(y, ident, 0.1, 0, tmp_path)[0]]).tolist() == [4, 2, 1]


def test_load_subset_without_labels_still_checks_the_file_itself(tmp_path):
    y = torch.arange(30) % 3
    ident = dataset_identity("shapes", "train", y, 3)
    path = tmp_path / "s.json"
    save_subset(path, class_balanced_subset(y, 0.2, 0), ident, 0.2, 0)
    assert load_subset(path, ident).numel() == 6
    payload = json.loads(path.read_text())
    path.write_text(json.dumps(dict(payload, indices=payload["indices"][:-1])))
    with pytest.raises(DataError) as e:
        load_subset(path, ident)
    one_line(e, str(path), "num_labels")


# ------------------------------------------------------------------------------------------------------------------
# Probes on one class; --ood folders
# ------------------------------------------------------------------------------------------------------------------

def test_a_probe_on_one_class_is_refused_and_test_classes_absent_from_train_are_warned(caplog):
    from selfsup.eval.run import check_probe_labels

    cfg = load_config(None, [])
    with pytest.raises(DataError) as e:
        check_probe_labels(cfg, _dataset(labels=[0] * 12), _dataset(labels=[0] * 12))
    one_line(e, "data.dataset=shapes", "1 labelled class")
    with caplog.at_level(logging.WARNING, logger="selfsup.eval"):  # warned (a data.limit may cut classes), scored
        check_probe_labels(cfg, _dataset(labels=[0, 1] * 6), _dataset(labels=[0, 1, 2] * 4))
    assert "class(es) 2" in caplog.text
    with pytest.raises(DataError) as e:
        check_probe_labels(cfg, _dataset(labels=[0, 1] * 6), _dataset(labels=[-1, 0] * 6))
    one_line(e, "unlabelled")
    check_probe_labels(cfg, _dataset(labels=[0, 1, 2] * 4), _dataset(labels=[0, 1] * 6))  # a subset is fine


def test_ood_folders_are_checked_before_any_work(tmp_path, monkeypatch):
    import selfsup.eval.run as run_mod
    from selfsup.eval.robustness import run_robustness

    data = png_folder(tmp_path / "data" / "train", ["a", "b"]).parent
    png_folder(data / "test", ["a", "b"], n=2)
    cfg = load_config(None, ["data.dataset=folder", f"data.root={data}", "data.image_size=8",
                             "model.backbone=convnet_tiny"])

    def no_work(*a, **k):
        raise AssertionError("the probe ran before the --ood folders were checked")

    monkeypatch.setattr(run_mod, "load_backbone", no_work)
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (10, 10)).save(flat / "0.png")
    other = png_folder(tmp_path / "other", ["a", "zebra"], n=1)
    for root, words in ((tmp_path / "missing", ["no such folder"]), (tmp_path / "empty", ["no images"]),
                        (tmp_path / "afile", ["is a file"]), (flat, ["no class folders"]), (other, ["zebra"])):
        with pytest.raises(SelfsupError) as e:
            run_robustness(cfg, None, corruptions=(), ood=[str(root)], progress=False)
        one_line(e, f"--ood {root}", *words)


# ------------------------------------------------------------------------------------------------------------------
# The CLI contract: one line, exit 2, nothing touched
# ------------------------------------------------------------------------------------------------------------------

def test_cli_refusals(tmp_path):
    afile = tmp_path / "afile.txt"
    afile.write_text("keep me")
    fitdir = tmp_path / "fit"
    fitdir.mkdir()
    # saliency predict --out: an existing file: refused before the network is even looked at
    refused_untouched([tmp_path], "saliency", "predict", "--net", str(fitdir), "--out", str(afile),
                      words=["--out", str(afile)])
    # saliency fit: its output folder (out=) is a file
    refused_untouched([tmp_path], "saliency", "fit", "saliency_shapes", f"out={afile}", "-q",
                      words=["out=", str(afile)])
    # transfer to a one-class folder: refused, not "top-1 100.00%"
    one = png_folder(tmp_path / "one" / "train", ["cat"]).parent
    png_folder(one / "test", ["cat"], n=2)
    common = ["data.dataset=folder", "data.image_size=8", "model.backbone=convnet_tiny", "eval.batch_size=8", "-q"]
    refused_untouched([tmp_path], "eval", "transfer", "--random-init", f"data.root={one}", *common,
                      words=[str(one / "train"), "1 labelled class"])
    # --ood of classes the training data does not have
    two = png_folder(tmp_path / "two" / "train", ["cat", "dog"]).parent
    png_folder(two / "test", ["cat", "dog"], n=2)
    zoo = png_folder(tmp_path / "zoo", ["zebra"], n=1)
    refused_untouched([tmp_path], "eval", "robustness", "--random-init", f"data.root={two}", *common,
                      "--corruptions", "none", "--ood", str(zoo), words=[f"--ood {zoo}", "zebra"])
