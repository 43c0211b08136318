"""The loop: exact resume, NaN stop with the last good checkpoint kept, checkpoint safety, logs."""

import csv
import math

import pytest
import torch

from selfsup.config import load_config
from selfsup.engine.batches import StepBatchSampler
from selfsup.engine.checkpoint import load_checkpoint, save_checkpoint
from selfsup.engine.trainer import pretrain
from selfsup.errors import CheckpointError, NonFiniteLossError
from selfsup.methods.relicv2 import RELICv2
from tests.conftest import TINY


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_resume_reproduces_the_uninterrupted_loss_curve(tmp_path, tiny_overrides):
    full = pretrain(load_config(None, [*tiny_overrides, f"out={tmp_path / 'a'}"]))
    assert len(full.losses) == 6 and all(math.isfinite(v) for v in full.losses)

    cfg_b = load_config(None, [*tiny_overrides, f"out={tmp_path / 'b'}"])
    first = pretrain(cfg_b, stop_at_step=3)
    assert first.stopped_early and first.step == 3
    assert load_checkpoint(tmp_path / "b" / "last.ckpt")["step"] == 3
    rest = pretrain(cfg_b, resume="auto")
    assert rest.step == 6
    assert first.losses + rest.losses == full.losses  # bit-exact on the CPU

    a = load_checkpoint(tmp_path / "a" / "last.ckpt")
    b = load_checkpoint(tmp_path / "b" / "last.ckpt")
    for key in a["method"]:
        assert torch.equal(a["method"][key], b["method"][key]), key
    # the CSV log holds each step once, in order, across the interruption
    rows = _rows(tmp_path / "b" / "train_log.csv")
    assert [int(r["step"]) for r in rows] == list(range(6))
    assert [float(r["loss"]) for r in rows] == pytest.approx(full.losses)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_overrides, monkeypatch):
    original = RELICv2.forward

    def poisoned(self, views, ctx):
        out = original(self, views, ctx)
        if ctx.step >= 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(RELICv2, "forward", poisoned)
    cfg = load_config(None, tiny_overrides)
    with pytest.raises(NonFiniteLossError) as err:
        pretrain(cfg)
    msg = str(err.value)
    assert "nan at step 3" in msg and "last.ckpt (step 2)" in msg and "\n" not in msg
    state = load_checkpoint(tmp_path / "run" / "last.ckpt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())


def test_checkpoints_refuse_pickled_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.ckpt"
    torch.save({"format": "selfsup-checkpoint-v1", "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_checkpoint(path)
    truncated = tmp_path / "trunc.ckpt"
    save_checkpoint(truncated, {"step": 1, "w": torch.ones(1000)})
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(CheckpointError):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.ckpt")


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    minimal = {"method": {}, "optimizer": {}, "config": {}}
    save_checkpoint(path, {"step": 1, **minimal})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"step": 2, **minimal})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_step_batch_sampler_resumes_and_shards():
    full = list(StepBatchSampler(50, 8, rank=0, world_size=1, seed=3, start_step=0, total_steps=14))
    assert len(full) == 14 and all(len(b) == 8 for b in full)
    assert sorted(sum(full[:6], [])) == sorted(set(sum(full[:6], [])))  # no repeats within an epoch (6 steps)
    later = list(StepBatchSampler(50, 8, rank=0, world_size=1, seed=3, start_step=9, total_steps=14))
    assert later == full[9:]
    r0 = list(StepBatchSampler(50, 8, rank=0, world_size=2, seed=3, start_step=0, total_steps=14))
    r1 = list(StepBatchSampler(50, 8, rank=1, world_size=2, seed=3, start_step=0, total_steps=14))
    assert [a + b for a, b in zip(r0, r1)] == full


def test_snapshots_after_the_given_minutes(tmp_path, tiny_overrides):
    from safetensors import safe_open

    from selfsup.engine.snapshots import snapshot_path

    pretrain(load_config(None, [*tiny_overrides, "train.snapshot_minutes=[1e-9,1000]"]))
    first = snapshot_path(tmp_path / "run", 1e-9)
    assert first.is_file() and not snapshot_path(tmp_path / "run", 1000).exists()
    with safe_open(str(first), framework="pt") as f:
        meta = f.metadata()
    assert meta["step"] == "1" and meta["images_seen"] == "16" and float(meta["trained_s"]) > 0
    with pytest.raises(Exception, match="train.snapshot_minutes"):
        load_config(None, [*tiny_overrides, "train.snapshot_minutes=[0]"])


def test_masking_without_a_mask_source_is_one_line(tmp_path):
    """views.mask_p > 0 on data without masks stops before training, saying how to give masks (no silent p_m = 0)."""
    from PIL import Image

    from selfsup.errors import ConfigError

    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(8):
        Image.new("RGB", (12, 12), (30 * i, 10, 10)).save(root / f"{i}.png")
    cfg = load_config(None, [*TINY, "data.dataset=folder", f"data.root={root}", "views.mask_p=0.1",
                             f"out={tmp_path / 'run'}", "train.batch_size=4", "monitor.knn_every_steps=0"])
    with pytest.raises(ConfigError) as err:
        pretrain(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "views.mask_p=0" in msg and "no foreground masks" in msg
    assert not (tmp_path / "run" / "last.ckpt").exists()
    # a random ablation source (RELICv2 Table 16) needs no masks in the data, and the masks change the views
    ablation = load_config(None, [*TINY, "data.dataset=folder", f"data.root={root}", "views.mask_p=1.0",
                                  "views.mask_source=center_rect", "views.mask_area=0.3", "train.steps=2",
                                  f"out={tmp_path / 'ablation'}", "train.batch_size=4", "monitor.knn_every_steps=0"])
    plain = load_config(None, [*TINY, "data.dataset=folder", f"data.root={root}", "views.mask_p=0", "train.steps=2",
                               f"out={tmp_path / 'plain'}", "train.batch_size=4", "monitor.knn_every_steps=0"])
    assert pretrain(ablation).losses[0] != pretrain(plain).losses[0]
