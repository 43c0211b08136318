"""``selfsup.cli.main`` assembles one module per command; parsing checked in process (no subprocess needed)."""

import argparse
import json

import pytest

from selfsup.cli import main as cli
from selfsup.cli.main import build_parser, main
from selfsup.eval import protocols as registry
from selfsup.eval.protocols import Protocol, register_protocol

COMMANDS = ["pretrain", "eval", "demo", "views", "export", "analyze", "report", "compare", "study", "saliency", "data",
            "recipes"]


def _subcommands(parser: argparse.ArgumentParser) -> dict:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_main_assembles_every_command_in_help_order():
    assert list(_subcommands(build_parser())) == COMMANDS
    for module in cli.COMMANDS:
        assert callable(module.add_parser) and callable(module.run), module.__name__
    parsers = _subcommands(build_parser())
    for name in COMMANDS:  # every command dispatches to its module's run
        assert parsers[name].get_default("handler").__module__.startswith("selfsup.cli."), name


def test_every_protocol_is_an_eval_subcommand():
    eval_parser = _subcommands(build_parser())["eval"]
    assert list(_subcommands(eval_parser)) == [p.name for p in registry.protocols()]


def test_help_describes_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for word in ("pretrain", "eval", "demo"):
        assert word in out
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    out = capsys.readouterr().out
    assert "--resume" in out and "key=value" in out


@pytest.mark.parametrize("command", ["eval", "views", "data", "saliency"])
def test_a_command_without_its_action_prints_its_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command])
    assert exc.value.code == 0 and f"usage: selfsup {command}" in capsys.readouterr().out


def test_parsing(capsys):
    p = build_parser()
    args = p.parse_args(["eval", "robustness", "--random-init", "--corruptions", "fog", "--ood", "a", "--ood", "b"])
    assert (args.protocol, args.corruptions, args.ood, args.severities) == ("robustness", "fog", ["a", "b"],
                                                                           "1,2,3,4,5")
    assert args.protocol_options == ["corruptions", "severities", "test_limit", "ood"]
    assert p.parse_args(["eval", "knn", "-c", "run"]).protocol_options == []
    for argv, words in ((["pretrain", "relicv2_shapes", "--recipe", "demo"], "two recipes given"),
                        (["pretrain", "--bogus"], "unrecognized arguments: --bogus"),
                        (["eval", "linear"], "one of the arguments --checkpoint/-c --random-init is required"),
                        (["eval", "robustness", "-c", "x", "--test-limit", "a"], "--test-limit"),
                        (["nope"], "invalid choice: 'nope'")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and words in err, (argv, err)


def test_positional_recipe_and_overrides_after_options():
    p = build_parser()
    args, extra = p.parse_known_args(["pretrain", "dino_fmnist", "--quiet", "train.steps=3"])
    args.overrides.extend(extra)
    cli._positional_recipe(args, p)
    assert (args.recipe, args.overrides, args.quiet) == ("dino_fmnist", ["train.steps=3"], True)
    args = p.parse_args(["pretrain"])
    cli._positional_recipe(args, p)
    assert args.recipe == "relicv2_shapes"


@pytest.fixture
def plugin_protocol():
    """A protocol registered by this test module (and removed after the test)."""
    registry.protocols()
    saved = dict(registry.PROTOCOLS)

    @register_protocol("halves")
    class Halves(Protocol):
        help = "a protocol of the tests: half of --value"
        frozen = False

        def add_arguments(self, parser):
            parser.add_argument("--value", type=float, default=10.0, help="the number to halve")

        def run(self, ctx):
            return {"top1": ctx.options["value"] / 2, "checkpoint": ctx.checkpoint}

        def summary(self, res, ctx):
            return [f"halves on {ctx.cfg.data.dataset}, {ctx.source}: top-1 {res['top1']:.2f}%"]

        def name_parts(self, cfg, presets):
            return ["half"]

    yield
    registry.PROTOCOLS.clear()
    registry.PROTOCOLS.update(saved)


def test_a_registered_protocol_is_a_subcommand_and_dispatches(plugin_protocol, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "halves" in out and "a protocol of the tests" in out
    out_json = tmp_path / "h.json"
    assert main(["eval", "halves", "--random-init", "--recipe", "relicv2_shapes", "--value", "7",
                 "--out", str(out_json), "data.num_classes=4"]) == 0
    assert capsys.readouterr().out == "halves on shapes, random init: top-1 3.50%\n"
    res = json.loads(out_json.read_text())
    assert res["protocol"] == "halves" and res["top1"] == 3.5 and res["checkpoint"] is None
    assert res["source"] == "random init" and res["dataset"] == "shapes"
    assert res["command"].startswith("selfsup eval halves --random-init")
