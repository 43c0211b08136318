"""The registry of evaluation protocols: every built-in protocol is registered with its settings, result-file name
and report row; one registered elsewhere is found the same way."""

import dataclasses
from pathlib import Path

import pytest

from selfsup.config import EvalConfig, load_config
from selfsup.errors import ConfigError
from selfsup.eval import protocols as registry
from selfsup.eval.protocols import (
    EvalContext,
    Protocol,
    get_protocol,
    protocol_for_result,
    protocols,
    register_protocol,
)
from selfsup.eval.report_run import eval_row
from selfsup.eval.run import result_name, run_folder

BUILT_IN = ["linear", "knn", "finetune", "transfer", "taps", "robustness"]


@pytest.fixture
def restore_registry():
    """Protocols registered by a test are gone after it."""
    protocols()  # the built-ins first
    saved = dict(registry.PROTOCOLS)
    yield
    registry.PROTOCOLS.clear()
    registry.PROTOCOLS.update(saved)


def test_every_built_in_protocol_is_registered_in_help_order():
    assert [p.name for p in protocols()][:len(BUILT_IN)] == BUILT_IN
    for p in protocols():
        assert p.help and type(p).run is not Protocol.run, p.name
        assert get_protocol(p.name) is p


def test_settings_are_the_eval_sections_of_the_config():
    fields = {f.name: f for f in dataclasses.fields(EvalConfig)}
    for p in protocols():
        if p.settings is None:
            continue
        assert p.name in fields, p.name  # eval.<name>
        assert isinstance(fields[p.name].default_factory(), p.settings), p.name
    assert get_protocol("robustness").settings is None  # its options are command-line options


def test_unknown_protocol_is_one_config_error():
    with pytest.raises(ConfigError, match="unknown evaluation protocol 'lineer'; available: linear, knn"):
        get_protocol("lineer")


def test_result_files_of_linear_carry_the_probe_name():
    assert protocol_for_result("lbfgs") is get_protocol("linear")
    assert protocol_for_result("sgd") is get_protocol("linear")
    assert protocol_for_result("nope") is None


@pytest.mark.parametrize("overrides, presets, name, expected", [
    ([], [], "linear", "linear_lbfgs_shapes"),
    (["eval.linear.protocol=sgd"], [], "linear", "linear_sgd_shapes"),
    ([], [], "knn", "knn_shapes"),
    ([], [], "finetune", "finetune_10pct_backbone_shapes"),
    (["eval.finetune.labels=0.01", "eval.finetune.head=projector"], [], "finetune",
     "finetune_1pct_projector_shapes"),
    ([], ["relicv2_semi_1pct"], "finetune", "finetune_relicv2_semi_1pct_shapes"),
    (["eval.transfer.mode=finetune"], [], "transfer", "transfer_finetune_shapes"),
    ([], [], "taps", "taps_shapes"),
    (["eval.taps.fractions=[1.0,0.1,0.05]"], [], "taps", "taps_labels1-0p1-0p05_shapes"),
    ([], [], "robustness", "robustness_shapes"),
])
def test_result_names(overrides, presets, name, expected):
    cfg = load_config("relicv2_shapes", overrides)
    assert result_name(get_protocol(name), cfg, presets) == expected


def test_run_folder(tmp_path):
    assert run_folder(None) is None and run_folder(str(tmp_path)) is None
    (tmp_path / "last.ckpt").write_bytes(b"")
    assert run_folder(str(tmp_path)) == tmp_path and run_folder(str(tmp_path / "backbone.safetensors")) == tmp_path


def test_figures_go_next_to_out_else_into_the_run(tmp_path):
    cfg = load_config("relicv2_shapes", [])
    assert EvalContext(cfg, None, "random init").figure_dir is None
    assert EvalContext(cfg, "r", "r", run_dir=tmp_path).figure_dir == tmp_path / "evals"
    assert EvalContext(cfg, "r", "r", run_dir=tmp_path, out=Path("x/y.json")).figure_dir == Path("x")


def test_report_rows_come_from_the_protocols():
    assert eval_row("linear_lbfgs_shapes", {"protocol": "lbfgs", "top1": 50.0, "l2": 0.01})["detail"] == \
        "L-BFGS, l2=0.01"
    assert eval_row("linear_sgd_shapes", {"protocol": "sgd", "top1": 50.0, "epochs": 3})["detail"] == ""
    assert eval_row("transfer_linear_x", {"protocol": "transfer", "mode": "linear", "top1": 1.0,
                                          "mean_per_class": 2.0, "chosen": {"l2": 0.1}})["detail"] == \
        "linear; mean per-class 2.00; l2=0.1"
    row = eval_row("knn_shapes", {"protocol": "knn", "k5_top1": 40.0, "k5_top5": 90.0, "k7_top1": 41.0})
    assert (row["top1"], row["top5"], row["detail"]) == (40.0, 90.0, "k=5: 40.00, k=7: 41.00")
    row = eval_row("taps_shapes", {"protocol": "taps", "taps": ["a"]})
    assert row["detail"] == "" and row["top1"] is None


def test_a_protocol_registered_elsewhere_is_found(restore_registry):
    @register_protocol("constant")
    class Constant(Protocol):
        help = "always 42"
        frozen = False

        def run(self, ctx):
            return {"top1": 42.0}

        def report_row(self, res):
            return {"detail": ["constant"]}

    assert get_protocol("constant").name == "constant" and protocols()[-1].name == "constant"
    assert eval_row("constant_shapes", {"protocol": "constant", "top1": 42.0})["detail"] == "constant"
    with pytest.raises(ValueError, match="registered twice"):
        register_protocol("linear")(Constant)
