"""``selfsup study``, ``analyze`` and ``export`` against hostile inputs: a finished study rerun with other settings, a
damaged or old ``cell.json``, a method or architecture the study cannot run, output paths that cannot be written, and
damaged snapshots. Each is one ``selfsup: error:`` line before any work, and nothing of the user's is touched."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from selfsup.cli.main import main
from selfsup.errors import ConfigError
from tests.hostile.common import refused_untouched, tree

pytestmark = pytest.mark.usefixtures("one_thread")

#: the smallest study: 1 method, 1 architecture (1 unit per stage), 1 width, no baselines, 2 steps
SETTINGS = ["data.train_size=48", "data.test_size=24", "data.image_size=16", "views.large.size=16",
            "train.batch_size=8", "monitor.knn_every_steps=0", "eval.batch_size=64", "eval.taps.max_dims=128",
            "eval.linear.max_iter=20", "eval.linear.l2_grid=[0.001]"]
CELL = "rotation_vgg19bn_k0.5"


def study_args(out: Path, *extra: str, steps: int = 2, methods: str = "rotation", archs: str = "vgg19bn") -> list:
    return ["study", "--quiet", "--data", "shapes", "--methods", methods, "--archs", archs, "--widths", "0.5",
            "--stage-units", "1", "--no-baselines", "--out", str(out), *SETTINGS, f"train.steps={steps}", *extra]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished one-cell study (built once; tests that damage it work on a copy)."""
    root = tmp_path_factory.mktemp("study")
    out = root / "study"
    assert main(study_args(out)) == 0
    assert (out / "cells" / CELL / "cell.json").is_file()
    return out


def one_line(capsys, args, *words) -> str:
    """``main(args)`` in this process: exit 2 and exactly one error line containing ``words``."""
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("selfsup: error:") and "\n" not in err, err
    for w in words:
        assert w in err, (w, err)
    return err


def copy_of(study: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "study"
    shutil.copytree(study, dst)
    return dst


def test_rerun_with_other_settings_is_refused_naming_cell_and_key(study, tmp_path, capsys):
    line = refused_untouched([study], *study_args(study, steps=3), words=[CELL, "train.steps", "--out"])
    assert "2 -> 3" in line
    # the probe settings make the cell's numbers too; --report-only builds no table from cells of other settings
    one_line(capsys, study_args(study, "eval.taps.fractions=[0.5,1]"), CELL, "eval.taps.fractions")
    one_line(capsys, [*study_args(study, steps=3), "--report-only"], CELL, "train.steps")
    # keys that only steer logging or progress do not count: the same study is reused as it is
    before = tree(study)
    assert main(study_args(study, "train.log_every_steps=7")) == 0
    assert "| rotation |" in capsys.readouterr().out
    assert tree(study)[f"cells/{CELL}/cell.json"] == before[f"cells/{CELL}/cell.json"]


def test_method_without_pretext_accuracy_or_unknown_arch_is_refused_before_any_training(tmp_path, capsys):
    from selfsup.experiments.study import run_study

    out = tmp_path / "fresh"
    t0 = time.time()
    one_line(capsys, study_args(out, methods="rotation,simclr"), "--methods", "simclr",
             "rotation, exemplar, jigsaw, relpatch")
    assert time.time() - t0 < 10  # no cell was pretrained
    # an unknown architecture, one that refuses the width, and a value listed twice, likewise
    one_line(capsys, study_args(out, archs="vgg19bn,nosuch"), "--archs nosuch: unknown architecture", "vgg19bn")
    with pytest.raises(ConfigError, match="--archs vit_tiny_16 --widths 0.5"):
        run_study(["rotation"], ["vit_tiny_16"], [0.5], "shapes", out, progress=False)
    with pytest.raises(ConfigError, match="--methods lists rotation twice"):
        run_study(["rotation", "rotation"], ["vgg19bn"], [0.5], "shapes", out, progress=False)
    assert not out.exists()


def test_study_out_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    before = tree(tmp_path)
    one_line(capsys, study_args(target), "--out", str(target), "is a file")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("damage, words", [
    (b"\x00\x01 not json", ["cell.json", "binary"]),
    (b"{\"method\": \"rot", ["cell.json", "not valid JSON"]),
    (b"[1, 2, 3]", ["cell.json", "must be a mapping"]),
    ("k", ["cell.json", "field k", "must be a number"]),
    ("taps", ["cell.json", "field taps[0]", "must be a string"]),
    ("results", ["cell.json", "field results.lbfgs.1.pre_logits", "must be a number"]),
    ("fraction", ["cell.json", "field results.lbfgs.all", "label fraction"]),
    ("pretext", ["cell.json", "field pretext_top1", "must be a number"]),
    ("other cell", ["cell.json", "not those of cell " + CELL]),
    ("no config", ["cell.json", "older selfsup without its config", "new --out"]),
])
def test_damaged_or_old_cell_json_is_refused_naming_the_file(study, tmp_path, capsys, damage, words):
    out = copy_of(study, tmp_path)
    path = out / "cells" / CELL / "cell.json"
    if isinstance(damage, bytes):
        path.write_bytes(damage)
    else:
        cell = json.loads(path.read_text())
        if damage == "k":
            cell["k"] = "0.5"
        elif damage == "taps":
            cell["taps"] = [1, 2]
        elif damage == "results":
            cell["results"]["lbfgs"]["1"]["pre_logits"] = "high"
        elif damage == "fraction":
            cell["results"]["lbfgs"]["all"] = cell["results"]["lbfgs"]["1"]
        elif damage == "pretext":
            cell["pretext_top1"] = [50]
        elif damage == "other cell":
            cell["method"] = "jigsaw"
        elif damage == "no config":
            del cell["config"]
        path.write_text(json.dumps(cell))
    before = tree(out)
    for extra in ([], ["--report-only"]):
        one_line(capsys, [*study_args(out), *extra], str(path), *words)
    assert tree(out) == before


# --------------------------------------------------------------------------------------------------------------------
# analyze and export, on the finished cell (a run folder)
# --------------------------------------------------------------------------------------------------------------------

@pytest.fixture
def run(study, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(study / "cells" / CELL, dst)
    return dst


@pytest.mark.parametrize("snapshot, words", [
    (b"\x13\x37 random bytes, not safetensors" * 10, ["backbone_step00000002.safetensors", "not a readable"]),
    (b"{\"images_seen\": 5}", ["backbone_step00000002.safetensors", "not a readable"]),
    ("truncated", ["backbone_step00000002.safetensors", "not a readable"]),
    ("abc", ["backbone_step00000002.safetensors", "field images_seen", "'abc'"]),
    ("-3", ["backbone_step00000002.safetensors", "field images_seen"]),
])
def test_analyze_refuses_a_damaged_snapshot_naming_file_and_field(run, tmp_path, capsys, snapshot, words):
    snap = run / "snapshots" / "backbone_step00000002.safetensors"
    snap.parent.mkdir()
    if isinstance(snapshot, bytes):
        snap.write_bytes(snapshot)
    else:
        save_file({"w": torch.zeros(64)}, str(snap), metadata={"images_seen": "16" if snapshot == "truncated"
                                                               else snapshot, "step": "2"})
        if snapshot == "truncated":
            snap.write_bytes(snap.read_bytes()[:-100])
    out = tmp_path / "analysis"
    before = tree(run)
    one_line(capsys, ["analyze", str(run), "--out", str(out), "--quiet", "--no-embedding"], *words)
    assert tree(run) == before and not out.exists()


def test_analyze_out_that_is_a_file(run, tmp_path, capsys):
    target = tmp_path / "figures.png"
    target.write_bytes(b"png")
    before = tree(tmp_path)
    one_line(capsys, ["analyze", str(run), "--out", str(target), "--quiet"], "--out", str(target))
    assert tree(tmp_path) == before


def test_export_into_a_place_that_cannot_be_written(run, tmp_path, capsys):
    note = tmp_path / "somefile.txt"
    note.write_text("mine\n")
    before = tree(tmp_path)
    one_line(capsys, ["export", "-c", str(run), "--out", str(note / "x.safetensors")], "--out", str(note))
    one_line(capsys, ["export", "-c", str(run), "--out", "/proc/selfsup-x.safetensors"], "--out",
             "/proc/selfsup-x.safetensors", "cannot be written")
    assert tree(tmp_path) == before and not Path("/proc/selfsup-x.safetensors").exists()


def test_export_write_failure_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """An OSError during the atomic write (a full disk) names --out; neither the file nor a temporary is left."""
    import safetensors.torch

    from selfsup.models.export import save_export

    def failing(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", failing)
    with pytest.raises(ConfigError, match=r"^--out .*x\.safetensors cannot be written: No space left on device$"):
        save_export(tmp_path / "x.safetensors", {"w": torch.zeros(2)}, {"format": "selfsup"})
    assert list(tmp_path.iterdir()) == []
