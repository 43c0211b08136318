"""Hostile packs and shard folders: ``selfsup data pack`` never writes into its own source nor replaces a folder it did
not write, keeps the old split until the new one is complete, refuses a bad ``--chunk-bytes`` before any work; the
shard reader refuses a damaged ``selfsup.json`` / ``labels.npy`` and a test split of other classes in one line.

Every fixture is generated here (tiny PNGs); each CLI check runs ``selfsup`` in a subprocess.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup.config import DataConfig
from selfsup.data import shards
from selfsup.data.datasets import build_dataset
from selfsup.data.shards import FORMAT, ShardDataset, pack, parse_chunk_bytes
from selfsup.data.sources.folder import folder_dataset
from selfsup.errors import ConfigError, DataError
from tests.conftest import TINY, run_cli
from tests.hostile.common import assert_clean, assert_one_line_error, refused_untouched, tree

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

#: TINY without the keys that only the shapes dataset reads
SHARD_TINY = [o for o in TINY if o.partition("=")[0] not in ("data.dataset", "data.train_size", "data.test_size",
                                                               "data.num_classes", "train.steps")]


def images(root: Path, classes=("a", "b"), n=2, seed=0) -> Path:
    """``root/<class>/<k>.png`` (or flat ``root/<k>.png`` when ``classes`` is empty), ``n`` tiny PNGs each."""
    rng = np.random.default_rng(seed)
    for c in classes or ("",):
        d = root / c
        d.mkdir(parents=True, exist_ok=True)
        for k in range(n):
            Image.fromarray((rng.random((10, 12, 3)) * 255).astype(np.uint8)).save(d / f"{k}.png")
    return root


def source(root: Path, classes=("a", "b"), test=True, seed=0) -> Path:
    """An image folder with ``train/`` (and ``val/`` when ``test``)."""
    images(root / "train", classes, seed=seed)
    if test:
        images(root / "val", classes, seed=seed + 1)
    return root


def refused_here(capsys, roots, *args: str, words=()) -> str:
    """:func:`refused_untouched` in this process (``selfsup.cli.main.main``: the same code path without the ~4 s of a
    fresh interpreter): rc 2, one ``selfsup: error:`` line containing ``words``, every folder of ``roots`` unchanged."""
    from selfsup.cli.main import main

    before = [tree(r) for r in roots]
    capsys.readouterr()
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("selfsup: error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (rc, err)
    for w in words:
        assert w in lines[0], (w, lines[0])
    for r, b in zip(roots, before):
        assert tree(r) == b, f"{r} was changed by selfsup {' '.join(map(str, args))}"
    return lines[0]


def hidden(folder: Path):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A two-class source packed (in-process) into ``out``."""
    base = tmp_path_factory.mktemp("packed")
    src = source(base / "src")
    cfg = DataConfig(dataset="folder", root=str(src))
    pack({"train": folder_dataset(cfg, "train"), "test": folder_dataset(cfg, "test")}, base / "out", progress=False)
    return base / "out"


def copy_split(split: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for f in split.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


# --------------------------------------------------------------------------------------------------------------------
# Where a pack may write
# --------------------------------------------------------------------------------------------------------------------

def test_pack_into_its_own_source_or_another_dataset_is_refused(tmp_path, capsys):
    src = source(tmp_path / "src")
    flat = images(tmp_path / "flat", classes=())
    other = source(tmp_path / "other", seed=5)
    roots = [src, flat, other]
    refused_untouched(roots, "data", "pack", str(src), str(src), "-q", words=["OUT", "source"])
    # OUT in SRC's training folder, beside it, in its test folder, in a flat SRC (listed as images next time); OUT
    # holding SRC; OUT in --test-root
    for args in ((src, src / "train"), (src, src / "out"), (src, src / "val" / "a"), (flat, flat / "out"),
                 (src / "train", src), (src / "train", other / "val" / "o", "--test-root", other / "val")):
        refused_here(capsys, roots, "data", "pack", *args, "-q", words=["OUT", "source"])
    # another image folder with its own train/: its images are not ours to replace
    line = refused_untouched(roots, "data", "pack", str(src), str(other), "-q", words=["OUT", str(other / "train")])
    assert "did not write" in line
    assert not (tmp_path / "flat" / "out").exists() and not (src / "out").exists()


def test_pack_twice_replaces_only_its_own_splits(tmp_path, capsys):
    src = source(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("my notes")
    assert_clean(run_cli("data", "pack", str(src), str(out), "-q", "--workers", "1"))
    first = json.loads((out / "train" / "selfsup.json").read_text())
    assert first["classes"] == ["a", "b"] and (out / "test" / "selfsup.json").is_file()
    # a second source, three classes and no test split: train is replaced, the old test split (ours) removed
    src2 = images(tmp_path / "src2", classes=("x", "y", "z"), seed=3)
    res = run_cli("data", "pack", str(src2), str(out), "-q", "--workers", "1")
    assert_clean(res)
    assert "removed" in res.stdout
    second = json.loads((out / "train" / "selfsup.json").read_text())
    assert second["classes"] == ["x", "y", "z"] and second["records"] == 6
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "train"]  # no partial or old folder left
    assert (out / "README.md").read_text() == "my notes"
    assert ShardDataset(out / "train", 16).num_classes == 3
    # a file of the user's inside OUT/train: the split is no longer only ours
    (out / "train" / "notes.txt").write_text("mine")
    line = refused_here(capsys, [out, src], "data", "pack", src, out, "-q", words=[str(out / "train")])
    assert "did not write" in line


def test_a_failed_pack_keeps_the_old_split_and_leaves_no_partial_folder(tmp_path, monkeypatch):
    src = source(tmp_path / "src")
    cfg = DataConfig(dataset="folder", root=str(src))
    splits = {"train": folder_dataset(cfg, "train"), "test": folder_dataset(cfg, "test")}
    out = tmp_path / "out"
    pack(splits, out, progress=False)
    before = tree(out)
    real = shards._reader
    calls = []

    def failing(directory):  # the test split's read-back fails, after the train split was written
        calls.append(directory)
        if len(calls) == 2:
            raise OSError("disk gone")
        return real(directory)

    monkeypatch.setattr(shards, "_reader", failing)
    with pytest.raises(OSError, match="disk gone"):
        pack(splits, out, progress=False)
    assert tree(out) == before and hidden(out) == []
    # a stale partial folder of a killed pack is not ours to judge by name: it is left alone, never reused
    stale = out / ".train.partial"
    stale.mkdir()
    (stale / "x").write_text("?")
    monkeypatch.setattr(shards, "_reader", real)
    pack(splits, out, progress=False)
    assert (stale / "x").read_text() == "?" and hidden(out) == [".train.partial"]


def test_bad_chunk_bytes_is_refused_before_any_work(tmp_path, capsys):
    src = source(tmp_path / "src", test=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("keep")
    refused_untouched([src, out], "data", "pack", str(src), str(out), "--chunk-bytes", "abc", "-q",
                      words=["--chunk-bytes", "abc"])
    for value in ("0", "-5", "12XB"):
        refused_here(capsys, [src, out], "data", "pack", src, out, f"--chunk-bytes={value}", "-q",
                     words=["--chunk-bytes", value])
        refused_here(capsys, [src], "data", "pack", src, tmp_path / "new", f"--chunk-bytes={value}", "-q",
                     words=["--chunk-bytes"])
    assert hidden(out) == [] and not (tmp_path / "new").exists()


def test_parse_chunk_bytes():
    assert parse_chunk_bytes("64MB") == 64_000_000 and parse_chunk_bytes("4kb") == 4000
    assert parse_chunk_bytes(" 12 ") == 12 and parse_chunk_bytes("3B") == 3 and parse_chunk_bytes(7) == 7
    assert parse_chunk_bytes("1TB") == 10 ** 12
    for bad in ("abc", "0", "-5", "12XB", "", "1.5MB", "MB", "0KB", 0, -3, True, "1e6"):
        with pytest.raises(ConfigError, match="--chunk-bytes"):
            parse_chunk_bytes(bad)


# --------------------------------------------------------------------------------------------------------------------
# Reading a shard split
# --------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("meta, field", [
    ([1, 2], "must be a mapping"),
    ({"format": FORMAT, "records": "4", "classes": ["a", "b"]}, "records"),
    ({"format": FORMAT, "records": 4.0, "classes": ["a", "b"]}, "records"),
    ({"format": FORMAT, "records": 4, "classes": "ab"}, "classes"),
    ({"format": FORMAT, "records": 4, "classes": ["a", 2]}, "classes[1]"),
    ({"format": FORMAT, "records": 4, "classes": ["a", "a"]}, "classes"),
    ({"format": FORMAT, "records": 4, "classes": ["a", "b"], "names": "x"}, "names"),
    ({"format": FORMAT, "records": 4, "classes": ["a", "b"], "names": [1, 2, 3, 4]}, "names[0]"),
    ({"format": FORMAT, "records": 4, "classes": ["a", "b"], "names": ["a"]}, "names"),
    ({"format": "other", "records": 4}, "pack it again"),
])
def test_a_damaged_selfsup_json_is_one_line_naming_file_and_field(tmp_path, packed, meta, field):
    split = copy_split(packed / "train", tmp_path / "s" / "train")
    (split / "selfsup.json").write_text(json.dumps(meta))
    with pytest.raises(DataError) as err:
        ShardDataset(split, 16)
    msg = str(err.value)
    assert "\n" not in msg and str(split / "selfsup.json") in msg and field in msg, msg


@pytest.mark.parametrize("labels, words", [
    (np.zeros((2, 2), dtype=np.int64), "1-D integer"),
    (np.zeros(4, dtype=np.float32), "1-D integer"),
    (np.zeros(3, dtype=np.int64), "3 labels"),
    (np.array([0, 1, 2, 1]), "label 2 of record 2"),
    (np.array([0, -1, 1, 1]), "label -1 of record 1"),
])
def test_bad_labels_are_one_line_naming_the_file(tmp_path, packed, labels, words):
    split = copy_split(packed / "train", tmp_path / "s" / "train")
    np.save(split / "labels.npy", labels)
    with pytest.raises(DataError) as err:
        ShardDataset(split, 16)
    msg = str(err.value)
    assert "\n" not in msg and str(split / "labels.npy") in msg and words in msg, msg
    (split / "labels.npy").write_bytes(b"garbage, not npy")
    with pytest.raises(DataError, match="labels.npy"):
        ShardDataset(split, 16)


def test_pretraining_on_damaged_shards_is_refused_in_one_line(tmp_path, packed):
    """Labels beyond the class count used to crash the online monitor mid-run."""
    root = tmp_path / "bad"
    for name in ("train", "test"):
        copy_split(packed / name, root / name)
    np.save(root / "train" / "labels.npy", np.array([0, 1, 5, 1]))
    common = [*SHARD_TINY, "data.dataset=shards", f"data.root={root}", "data.image_size=16", "train.steps=2",
              "train.batch_size=4"]
    res = run_cli("pretrain", *common, f"out={tmp_path / 'r1'}")
    assert_one_line_error(res, str(root / "train" / "labels.npy"), "label 5")


def test_unlabelled_shards_still_read(tmp_path):
    src = images(tmp_path / "flat", classes=(), n=3)
    cfg = DataConfig(dataset="folder", root=str(src))
    pack({"train": folder_dataset(cfg, "train")}, tmp_path / "out", progress=False)
    ds = ShardDataset(tmp_path / "out" / "train", 16)
    assert ds.class_names is None and ds.labels.tolist() == [-1, -1, -1]


def test_shard_splits_of_different_classes_are_refused(tmp_path):
    three = source(tmp_path / "three", classes=("a", "b", "c"), test=False)
    two = source(tmp_path / "two", classes=("a", "b"), seed=2)
    out = tmp_path / "out"
    pack({"train": folder_dataset(DataConfig(dataset="folder", root=str(three)), "train"),
          "test": folder_dataset(DataConfig(dataset="folder", root=str(two)), "test")}, out, progress=False)
    cfg = DataConfig(dataset="shards", root=str(out), image_size=16)
    assert build_dataset(cfg, "train").num_classes == 3
    with pytest.raises(DataError) as err:
        build_dataset(cfg, "test")
    assert str(out / "train") in str(err.value) and str(out / "test") in str(err.value)
    res = run_cli("eval", "knn", "--random-init", "-q", *SHARD_TINY, "data.dataset=shards", f"data.root={out}",
                  "data.image_size=16")
    assert_one_line_error(res, str(out / "train"), str(out / "test"), "classes")
    # a test split of the same classes (packed from the same source) is scored
    pack({"train": folder_dataset(DataConfig(dataset="folder", root=str(two)), "train"),
          "test": folder_dataset(DataConfig(dataset="folder", root=str(two)), "test")}, out, progress=False)
    assert build_dataset(cfg, "test").class_names == ["a", "b"]
