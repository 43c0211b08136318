"""The Revisiting study runner: the grid, resumability (finished cells skipped), outputs, and the pretext accuracy."""

import json

import pytest

from selfsup.cli.main import main
from selfsup.config import load_config
from selfsup.errors import ConfigError
from selfsup.experiments.study import Cell, cell_config, pretext_accuracy, study_cells

TINY_STUDY = ["data.train_size=48", "data.test_size=24", "data.image_size=16", "views.large.size=16",
              "train.batch_size=8", "train.steps=2", "monitor.knn_every_steps=0", "eval.batch_size=64",
              "eval.taps.max_dims=128", "eval.linear.max_iter=20", "eval.linear.l2_grid=[0.001]"]


def test_grid_order_and_cell_configs(tmp_path):
    cells = study_cells(["rotation", "jigsaw"], ["resnet50v2", "vgg19bn"], [2, 4])
    assert [c.name for c in cells[:3]] == ["random_resnet50v2_k2", "rotation_resnet50v2_k2", "jigsaw_resnet50v2_k2"]
    assert len(cells) == 2 * 2 * 3
    cfg = cell_config(Cell("jigsaw", "vgg19bn", 8), "shapes", 1, ["train.steps=3"], tmp_path, ["rotation", "jigsaw"])
    assert cfg.method.name == "jigsaw" and cfg.model.backbone == "vgg19bn" and cfg.model.width == 2.0
    assert list(cfg.model.stage_units) == [1] * 5 and cfg.train.steps == 3
    assert cfg.out == str(tmp_path / "cells" / "jigsaw_vgg19bn_k8")
    base = cell_config(Cell("random", "resnet50v1", 4), "shapes", None, [], tmp_path, ["exemplar"])
    assert base.method.name == "exemplar" and base.model.stage_units is None and base.model.width == 1.0
    scoped = cell_config(Cell("jigsaw", "vgg19bn", 4), "shapes", 1, ["jigsaw:method.patch_size=5", "rotation:x=1"],
                         tmp_path, ["jigsaw"])
    assert scoped.method.patch_size == 5
    with pytest.raises(ConfigError, match="no recipe 'rotation_nosuchdata'"):
        cell_config(Cell("rotation", "resnet50v1", 4), "nosuchdata", None, [], tmp_path, ["rotation"])


def test_pretext_accuracy_of_an_untrained_rotation_net_is_near_chance():
    cfg = load_config("rotation_shapes", [*TINY_STUDY, "model.width=0.125", "data.test_size=64"])
    acc = pretext_accuracy(cfg, None, limit=64)
    assert 0 <= acc <= 60  # 4-way task, random weights


@pytest.mark.slow
def test_study_cli_writes_table_and_figures_and_skips_done_cells(tmp_path, capsys):
    out = tmp_path / "study"
    args = ["study", "--quiet", "--data", "shapes", "--methods", "rotation,relpatch", "--archs", "revnet50,vgg19bn",
            "--widths", "0.5", "--stage-units", "1", "--out", str(out), *TINY_STUDY,
            "relpatch:method.patch_size=4", "relpatch:views.large.size=12"]  # patch tasks: views of 3 x patch
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "| rotation |" in text and "| relpatch |" in text and "| random |" in text
    study = json.loads((out / "study.json").read_text())
    assert len(study["cells"]) == 6
    for cell in study["cells"]:
        assert cell["results"]["lbfgs"]["1"]["pre_logits"] >= 0
        if cell["method"] != "random":
            assert 0 <= cell["pretext_top1"] <= 100 and cell["steps"] == 2
    for name in ("table.md", "table.csv", "heatmap.png", "pretext_vs_downstream.png", "depth.png", "width.png"):
        assert (out / name).stat().st_size > 0, name
    assert "**" in (out / "table.md").read_text()  # the best per column is marked
    stamp = (out / "cells" / "rotation_revnet50_k0.5" / "cell.json").stat().st_mtime_ns
    assert main(args) == 0  # everything done: every cell is skipped
    assert (out / "cells" / "rotation_revnet50_k0.5" / "cell.json").stat().st_mtime_ns == stamp
    # --report-only on a larger grid runs nothing and tabulates the finished cells (the new width stays blank)
    wider = [a if a != "0.5" else "0.5,1" for a in args]
    assert main([*wider, "--report-only"]) == 0
    assert not (out / "cells" / "rotation_revnet50_k1").exists()
    assert ("revnet50 k=1" in (out / "table.md").read_text()
            and len(json.loads((out / "study.json").read_text())["cells"]) == 6)


def test_study_bad_options_are_one_line(capsys):
    for bad, msg in ((["--widths", "a"], "--widths must be numbers"), (["--methods", ","], "--methods needs"),
                     (["--stage-units", "0"], "--stage-units must be >= 1")):
        assert main(["study", "--data", "shapes", *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err
