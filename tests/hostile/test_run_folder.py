"""One run folder, one writer: a second ``selfsup pretrain`` into a folder being written is refused in one line; the
temporary files of a killed run's atomic writes are removed at the next start (and nothing else is); a resume whose
tensors or fields do not fit says which, in one line; ``data.skip_corrupt`` counts distinct images, across resumes."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from selfsup.config import load_config
from selfsup.engine.skips import union
from selfsup.engine.trainer import pretrain
from selfsup.errors import CheckpointError
from selfsup.metafiles import RunLock
from tests.conftest import TINY, run_cli
from tests.hostile.common import assert_clean, assert_one_line_error, refused_untouched

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

RECIPE = "relicv2_shapes"  # what `selfsup pretrain` uses when no recipe is named
QUICK = ["monitor.online_linear=false", "monitor.knn_every_steps=0", "train.threads=1"]
SHAPES_ONLY = ("data.dataset=", "data.train_size=", "data.test_size=", "data.num_classes=", "views.mask_p=")


def _steps(log: Path) -> list:
    with open(log, newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def _cli_env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


@pytest.fixture
def finished(tmp_path, one_thread):
    """A run folder whose run stopped (with its checkpoint) at step 2 of 6."""
    pretrain(load_config(RECIPE, [*TINY, f"out={tmp_path / 'run'}", *QUICK]), stop_at_step=2)
    return tmp_path / "run"


@pytest.mark.slow  # two real pretraining processes
def test_a_second_process_on_a_run_folder_is_refused_and_the_first_finishes(tmp_path):
    """The first run is paused (SIGSTOP) while it holds the folder, however slowly the others start on a loaded
    machine; once resumed it is past its time budget and ends at its next step."""
    out = tmp_path / "run"
    args = ["pretrain", *TINY, f"out={out}", *QUICK, "train.steps=100000", "train.max_time_s=10"]
    first = subprocess.Popen([sys.executable, "-m", "selfsup.cli.main", *args], env=_cli_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ((out / "train_log.csv").is_file() and len(_steps(out / "train_log.csv")) >= 2):
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the first run did not start training"
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGSTOP)
        seconds = []
        try:
            live_tmp = out / ".last.ckpt.abc123.tmp"  # as if the first process were writing its checkpoint now
            live_tmp.write_bytes(b"being written")
            started = time.monotonic()
            seconds += [subprocess.Popen([sys.executable, "-m", "selfsup.cli.main", *a], env=_cli_env(),
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                        for a in ([*args, "--resume"], args)]  # resumed, and a fresh run into the same folder
            results = []
            for p in seconds:
                out_text, err_text = p.communicate(timeout=120)
                results.append(subprocess.CompletedProcess(p.args, p.returncode, out_text, err_text))
            assert time.monotonic() - started < 90
        finally:
            os.kill(first.pid, signal.SIGCONT)
            for p in seconds:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        for res in results:
            assert_one_line_error(res, "another selfsup process is writing the run folder", str(out))
            assert "pretrain finished" not in res.stdout
        assert live_tmp.read_bytes() == b"being written"  # a refused start cleans nothing up
        live_tmp.unlink()
        stdout, stderr = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0 and "Traceback" not in stderr, stderr[-2000:]
    assert "stopped early" in stdout
    steps = _steps(out / "train_log.csv")
    assert len(steps) > 2 and steps == list(range(len(steps)))  # no step twice, none missing


def test_a_refused_run_leaves_the_folder_byte_identical(finished):
    """While another process holds the folder (here: this one), a second run writes nothing there: no curves, no
    config, no clean-up of temporary files (they may be the holder's)."""
    (finished / ".last.ckpt.abc123.tmp").write_bytes(b"the holder's")
    with RunLock(finished, "run folder"):  # (a fresh run's refusal: the test above)
        refused_untouched([finished], "pretrain", *TINY, f"out={finished}", *QUICK, "--resume",
                          words=["another selfsup process is writing the run folder", str(finished)])


def test_stray_temp_files_of_the_trainer_are_removed_at_the_next_start(finished):
    (finished / "snapshots").mkdir()
    ours = [finished / ".last.ckpt.abc123.tmp", finished / ".last_good.ckpt.k2j_9xqz.tmp",
            finished / ".backbone.safetensors.q1w2e3r4.tmp", finished / ".config.yaml.zz00zz00.tmp",
            finished / "snapshots" / ".backbone_step00000002.safetensors.a1b2c3d4.tmp",
            finished / "snapshots" / ".backbone_0.5min.safetensors.a1b2c3d4.tmp"]
    user = [finished / "notes.tmp", finished / "my.tmp", finished / ".last.ckpt.tmp", finished / "last.ckpt.abc.tmp",
            finished / ".mine.ckpt.abc123.tmp", finished / ".last.ckpt.abc123.tmp.bak",
            finished / "snapshots" / ".last.ckpt.abc123.tmp", finished / "snapshots" / "keep.tmp"]
    for p in ours + user:
        p.write_bytes(b"x")
    (finished / "target.txt").write_text("user data")
    link = finished / ".backbone.safetensors.lnk123.tmp"  # a link with our name is not ours to remove
    link.symlink_to(finished / "target.txt")
    res = run_cli("pretrain", *TINY, f"out={finished}", *QUICK, "--resume")
    assert_clean(res)
    assert [p.name for p in ours if p.exists()] == []
    assert [p.name for p in user if not p.exists()] == []
    assert link.is_symlink() and (finished / "target.txt").read_text() == "user data"
    assert _steps(finished / "train_log.csv") == list(range(6))


def test_resume_with_other_shapes_or_a_missing_field_is_one_line(finished):
    res = run_cli("pretrain", *TINY, f"out={finished}", *QUICK, "method.projector_dim=8", "--resume",
                  "--allow-changes")
    line = assert_one_line_error(res, str(finished / "last.ckpt"), "method.projector_dim", "--allow-changes",
                                 "(16, 32) in the checkpoint, (8, 32) now")
    assert "projector." in line and "Error(s)" not in line
    ckpt = finished / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    del state["step"]
    torch.save(state, ckpt)
    res = run_cli("pretrain", *TINY, f"out={finished}", *QUICK, "--resume")
    assert_one_line_error(res, str(ckpt), "'step'", "missing")


def test_resume_from_another_optimiser_or_a_backbone_file_is_one_line(finished):
    with pytest.raises(CheckpointError) as err:  # the checkpoint's LARS state has no 'step' for AdamW
        pretrain(load_config(RECIPE, [*TINY, f"out={finished}", *QUICK, "optim.name=adamw"]), resume="auto",
                 allow_changes=True)
    msg = str(err.value)
    assert "\n" not in msg
    assert "optim.name=lars" in msg and "adamw" in msg and str(finished / "last.ckpt") in msg
    with pytest.raises(CheckpointError, match="backbone.safetensors holds a backbone's weights only"):
        pretrain(load_config(RECIPE, [*TINY, f"out={finished}", *QUICK]),
                 resume=str(finished / "backbone.safetensors"))


def _twelve_good_four_corrupt(root: Path) -> Path:
    """A flat folder of 12 readable PNGs and 4 files that are not images."""
    root.mkdir()
    for k in range(12):
        Image.new("RGB", (20, 18), (20 * k, 100, 255 - 20 * k)).save(root / f"good{k:02d}.png")
    for k in range(4):
        (root / f"bad{k}.png").write_bytes(b"not a png" * (k + 1))
    return root


def test_skip_corrupt_counts_distinct_images_across_resumes(tmp_path, one_thread):
    root = _twelve_good_four_corrupt(tmp_path / "images")
    out = tmp_path / "run"
    folder = [o for o in TINY if not o.startswith(SHAPES_ONLY)] + [
        "data.dataset=folder", f"data.root={root}", "data.skip_corrupt=true", "views.mask_p=0",
        "train.batch_size=4", *QUICK]
    # 4 steps an epoch: every bad file is drawn in each epoch; 6 steps, then 6 more after the resume (3 epochs)
    first = pretrain(load_config(RECIPE, [*folder, f"out={out}", "train.steps=12"]), stop_at_step=6)
    assert first.skipped == 4 and first.step == 6
    res = run_cli("pretrain", *folder, f"out={out}", "train.steps=12", "--resume")
    assert_clean(res)
    assert "skipped 4 unreadable images" in res.stdout, res.stdout
    with open(out / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(12)) and rows[-1]["skipped"] == "4"
    state = torch.load(out / "last.ckpt", weights_only=True)
    assert state["skipped"] == 4 and len(state["skipped_indices"]) == 4


def test_a_damaged_train_log_keeps_only_sound_earlier_rows(finished):
    """A log with a foreign column, a cut row, a repeated step, text in the step column and undecodable bytes: the
    resumed run keeps the sound rows before its step and logs one row per step after it."""
    log = finished / "train_log.csv"
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["0", "1"]
    lines = ["step,loss,foo", f"0,{rows[0]['loss']},x", "zero,1.0,x", "0,9.0,x", f"1,{rows[1]['loss']},x,extra", "1"]
    log.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe,\x00\n3,1.0\n")
    pretrain(load_config(RECIPE, [*TINY, f"out={finished}", *QUICK]), resume="auto")
    with open(log, newline="") as f:
        rows2 = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows2] == list(range(6))
    assert rows2[0]["loss"] == rows[0]["loss"] and rows2[1]["loss"] == rows[1]["loss"] and "foo" not in rows2[0]


def test_an_older_checkpoint_with_only_a_skip_count_still_resumes(finished):
    state = torch.load(finished / "last.ckpt", weights_only=True)
    state.pop("skipped_indices", None)
    state["skipped"] = 3
    torch.save(state, finished / "last.ckpt")
    res = pretrain(load_config(RECIPE, [*TINY, f"out={finished}", *QUICK]), resume="auto")
    assert res.step == 6 and res.skipped == 3


class _TwoRanks:
    """A stand-in for a 2-process Fabric whose other process holds ``other``: enough for :func:`union`'s
    collectives (a max of the lengths, then a gather of padded index lists)."""

    world_size = 2
    device = torch.device("cpu")

    def __init__(self, other):
        self.other = sorted(other)

    def all_reduce(self, t, reduce_op):
        assert reduce_op == "max"
        return torch.maximum(t, torch.tensor(float(len(self.other))))

    def all_gather(self, t):
        theirs = torch.full_like(t, -1)
        theirs[:len(self.other)] = torch.tensor(self.other, dtype=torch.int64)
        return torch.stack([t, theirs])


def test_skipped_images_are_a_union_over_processes():
    assert union(_TwoRanks({3, 9}), {1, 3}) == {1, 3, 9}
    assert union(_TwoRanks({5, 6, 7}), set()) == {5, 6, 7}
    assert union(_TwoRanks(set()), set()) == set()


@pytest.mark.slow
def test_ddp_counts_each_unreadable_image_once(tmp_path):
    """2 CPU processes (ddp_spawn): the run folder's lock does not lock the run's own processes out, and the skipped
    images are the union over the processes (4), not a sum of skip events."""
    root = _twelve_good_four_corrupt(tmp_path / "images")
    folder = [o for o in TINY if not o.startswith(SHAPES_ONLY)] + [
        "data.dataset=folder", f"data.root={root}", "data.skip_corrupt=true", "views.mask_p=0",
        "train.batch_size=4", "train.steps=12", "model.norm=group", "method.head_norm=none",
        "train.accelerator=cpu", "train.devices=2", "train.strategy=ddp_spawn", *QUICK]
    res = pretrain(load_config(RECIPE, [*folder, f"out={tmp_path / 'run'}"]))
    assert res.step == 12 and res.skipped == 4
    with open(tmp_path / "run" / "train_log.csv", newline="") as f:
        assert list(csv.DictReader(f))[-1]["skipped"] == "4"
