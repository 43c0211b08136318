"""Streaming shards: `selfsup data pack` keeps every image and label, records decode exactly as the files do, a
corrupt record gets the file's one-line error or skip-and-count, and a shard folder trains under 2-process DDP with an
exact resume."""

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.config import DataConfig, load_config
from selfsup.data.datasets import build_dataset
from selfsup.data.shards import ShardDataset, pack
from selfsup.data.sources.folder import folder_dataset
from selfsup.engine.checkpoint import load_checkpoint
from selfsup.errors import DataError
from tests.conftest import TINY, run_cli


def _tree(root, per_class=5, broken=False):
    for split, shapes in (("", [(40, 30), (30, 44), (90, 24), (28, 28), (33, 50)]), ("val", [(30, 30), (20, 36)])):
        for c in ("cat", "dog"):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for k, (w, h) in enumerate(shapes[:per_class]):
                arr = (np.random.default_rng(hash((split, c, k)) % 2**32).random((h, w, 3)) * 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{k}.{'jpg' if k % 2 else 'png'}")
    if broken:
        (root / "dog" / "zz_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg at all")
    return root


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    base = tmp_path_factory.mktemp("shards")
    src = _tree(base / "src", broken=True)
    cfg = DataConfig(dataset="folder", root=str(src))
    written = pack({"train": folder_dataset(cfg, "train"), "test": folder_dataset(cfg, "test")}, base / "out",
                   workers=2, chunk_bytes="4KB", progress=False)  # several chunks from two workers
    return src, base / "out", written


@pytest.mark.parametrize("for_views", [False, True])
def test_records_equal_the_files(packed, for_views):
    src, out, written = packed
    assert written["train"]["records"] == 11 and written["test"]["records"] == 4
    assert len(list((out / "train").glob("chunk-*.bin"))) > 2
    for split in ("train", "test"):
        folder = build_dataset(DataConfig(dataset="folder", root=str(src), skip_corrupt=True, image_size=16), split,
                               for_views=for_views)
        shards = build_dataset(DataConfig(dataset="shards", root=str(out), skip_corrupt=True, image_size=16), split,
                               for_views=for_views)
        assert len(shards) == len(folder) and shards.class_names == folder.class_names == ["cat", "dog"]
        by_name = {str(p.relative_to(folder.directory)): i for i, p in enumerate(folder.files)}
        assert sorted(shards.names) == sorted(by_name)
        assert sorted(shards.labels.tolist()) == sorted(folder.labels.tolist())
        for k, name in enumerate(shards.names):
            a, b = shards[k], folder[by_name[name]]
            if b is None:  # the broken file
                assert a is None
                continue
            assert a["label"] == b["label"] == int(shards.labels[k]) and a["index"] == k
            assert torch.equal(a["image"], b["image"]), name


def test_corrupt_record_one_line_error_or_skip_and_count(packed):
    src, out, written = packed
    assert written["train"]["unreadable_files"] == 0  # the broken file's bytes are stored; decoding fails later
    ds = ShardDataset(out / "train", 16)
    k = ds.names.index("dog/zz_broken.jpg")
    with pytest.raises(DataError) as err:
        ds[k]
    msg = str(err.value)
    assert "\n" not in msg and f"record {k} (dog/zz_broken.jpg)" in msg and str(out / "train") in msg
    skipping = ShardDataset(out / "train", 16, skip_corrupt=True)
    assert skipping[k] is None and skipping[k] is None and skipping.num_skipped == 2


def test_a_folder_that_is_not_shards_is_a_one_line_error(tmp_path, packed):
    proc = run_cli("pretrain", *TINY, "data.dataset=shards", f"data.root={tmp_path}", f"out={tmp_path / 'r'}")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "selfsup data pack" in proc.stderr
    _, out, _ = packed
    (tmp_path / "bad" / "train").mkdir(parents=True)
    for name in ("index.json", "labels.npy"):
        (tmp_path / "bad" / "train" / name).write_bytes((out / "train" / name).read_bytes())
    (tmp_path / "bad" / "train" / "selfsup.json").write_text('{"format": "other"}')
    with pytest.raises(DataError, match="pack it again"):
        ShardDataset(tmp_path / "bad" / "train", 16)


def test_data_pack_cli(tmp_path):
    src = _tree(tmp_path / "src", per_class=2)
    proc = run_cli("data", "pack", str(src), str(tmp_path / "out"), "--workers", "1", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "train: 4 images (2 classes)" in proc.stdout and "test: 4 images" in proc.stdout
    assert "data.dataset=shards data.root=" in proc.stdout
    proc = run_cli("data", "pack", str(tmp_path / "nowhere"), str(tmp_path / "o2"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "nowhere" in proc.stderr
    (tmp_path / "afile").write_text("x")  # an OUT that is a file, or under one: one line, nothing written
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        proc = run_cli("data", "pack", str(src), str(out), "-q")
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "OUT " in proc.stderr, out
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.slow
def test_shards_train_under_two_process_ddp_with_an_exact_resume(tmp_path, packed):
    from selfsup.engine.batches import StepBatchSampler
    from selfsup.engine.trainer import pretrain

    _, out, written = packed
    # litdata's record order depends on which packing worker wrote which chunk: pick the first seed whose 4 steps draw
    # the corrupt record wherever it landed, so that the run always has a rank that must refill its batch
    broken = written["train"]["names"].index("dog/zz_broken.jpg")
    seed = next(s for s in range(100) if any(broken in b for b in StepBatchSampler(
        written["train"]["records"], 4, rank=0, world_size=1, seed=s, start_step=0, total_steps=4)))
    common = [*TINY, f"seed={seed}", "data.dataset=shards", f"data.root={out}", "data.image_size=16",
              "data.skip_corrupt=true", "views.mask_p=0", "train.batch_size=4", "train.steps=4", "model.norm=group",
              "method.head_norm=none", "train.accelerator=cpu", "train.devices=2", "train.strategy=ddp_spawn",
              "train.threads=1", "monitor.knn_every_steps=0", "monitor.online_linear=false"]
    full = pretrain(load_config(None, [*common, f"out={tmp_path / 'full'}"]))
    cfg = load_config(None, [*common, f"out={tmp_path / 'cut'}"])
    first = pretrain(cfg, stop_at_step=2)
    rest = pretrain(cfg, resume="auto")
    assert first.step == 2 and rest.step == 4
    assert first.losses + rest.losses == full.losses
    a, b = load_checkpoint(tmp_path / "full" / "last.ckpt"), load_checkpoint(tmp_path / "cut" / "last.ckpt")
    assert a["skipped"] == b["skipped"] > 0  # the corrupt record was drawn: a rank refilled its batch (_refill)
    for key in a["method"]:
        assert torch.equal(a["method"][key], b["method"][key]), key
