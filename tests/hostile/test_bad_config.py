"""Hostile config values, tried over every field of the schema (every method's too), and the inputs around them.

The contract: a bad value is a one-line :class:`ConfigError` when the config is loaded, never a traceback later; a
non-finite float is never a setting; an empty override is refused rather than read as "unset".
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from selfsup.config import Config, load_config
from selfsup.errors import ConfigError
from selfsup.method_args import METHOD_ARGS
from tests.conftest import run_cli

HOSTILE = ["nan", "inf", "-inf", "-1", "0", "1e30", "-1e30", "abc", "[]", "[nan]", "{}", "null", "0.5", "2"]


def _leaves(cls, prefix=""):
    """Dotted keys of every leaf field of a config dataclass (nested dataclasses expanded)."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out.extend(_leaves(type(default), f"{prefix}{f.name}."))
        elif f.name != "method":
            out.append(f"{prefix}{f.name}")
    return out


def _try(recipe, overrides):
    try:
        cfg = load_config(recipe, overrides)
    except ConfigError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, (overrides, msg)
        return None
    return cfg


def _finite(cfg):
    def walk(obj):
        if dataclasses.is_dataclass(obj):
            for f in dataclasses.fields(obj):
                walk(getattr(obj, f.name))
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)
        elif isinstance(obj, float):
            assert obj == obj and abs(obj) != float("inf")

    walk(cfg)


@pytest.mark.slow  # every config field x every hostile value: about a minute
def test_every_field_refuses_hostile_values_with_one_line():
    keys = _leaves(Config)
    assert len(keys) > 80  # the whole schema, not a hand-picked list
    accepted = 0
    for key in keys:
        for value in HOSTILE:
            cfg = _try("relicv2_shapes", [f"{key}={value}"])
            if cfg is not None:
                accepted += 1
                _finite(cfg)
    assert accepted > 0  # some values are legitimate for some keys (e.g. seed=2)


@pytest.mark.parametrize("method", sorted(METHOD_ARGS) or ["relicv2"])
def test_every_method_field_refuses_hostile_values(method):
    import selfsup.methods  # noqa: F401

    cls = METHOD_ARGS[method]
    for f in dataclasses.fields(cls):
        if f.name == "name":
            continue
        for value in HOSTILE:
            cfg = _try("relicv2_shapes", [f"method.name={method}", f"method.{f.name}={value}"])
            if cfg is not None:
                _finite(cfg)


@pytest.mark.parametrize("override, words", [
    ("train.epochs=nan", "train.epochs must be a finite number"),
    ("optim.base_lr=inf", "optim.base_lr must be a finite number"),
    ("method.temperature=nan", "method.temperature must be a finite number"),
    ("train.threads=-2", "train.threads must be > 0"),
    ("optim.betas=[0.9,1.5]", "optim.betas must be two values in [0, 1)"),
    ("train.max_time_s=-5", "train.max_time_s must be > 0"),
    ("train.steps=", "has no value; write train.steps=null"),
    ("data.max_pixels=0", "data.max_pixels must be > 0"),
    ("seed=-1", "seed must be in [0, 2**32)"),  # found by running one step per accepted value (NumPy refused it)
    ("model.width=1e30", "model.width must be in (0, 64]"),  # an overflow in torch.empty
])
def test_known_late_failures_are_refused_at_load(override, words):
    with pytest.raises(ConfigError, match=__import__("re").escape(words)):
        load_config("relicv2_shapes", [override])


def test_devices_this_machine_lacks_are_one_line(tmp_path):
    from selfsup.engine.trainer import pretrain

    cores = os.cpu_count() or 1
    for overrides, words in ((["train.accelerator=cuda"], "no CUDA GPU"),
                             ([f"train.devices={cores * 8}", "train.accelerator=cpu", f"train.batch_size={cores * 8}"],
                              "CPU processes, but this machine has"),
                             (["train.num_nodes=2", "train.accelerator=cpu"], "needs a multi-node launcher")):
        import torch

        if "cuda" in overrides[0] and torch.cuda.is_available():
            continue
        cfg = load_config("relicv2_shapes", [f"out={tmp_path / 'r'}", *overrides])
        with pytest.raises(ConfigError, match=words):
            pretrain(cfg)


def test_out_that_is_a_file_and_eval_out_that_is_a_folder(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = run_cli("pretrain", "relicv2_shapes", f"out={tmp_path / 'afile'}", "train.steps=1", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "is a file, not a folder" in r.stderr
    r = run_cli("pretrain", "relicv2_shapes", f"out={tmp_path / 'afile' / 'sub'}", "train.steps=1", cwd=tmp_path)
    assert r.returncode == 2 and "cannot be created" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "adir").mkdir()
    r = run_cli("eval", "knn", "--random-init", "--recipe", "relicv2_shapes", "--out", str(tmp_path / "adir"),
                "data.train_size=64", "data.test_size=32", cwd=tmp_path)
    assert r.returncode == 2 and "is a folder; give a file name" in r.stderr and "Traceback" not in r.stderr


def test_a_folder_named_like_a_recipe_does_not_shadow_it(tmp_path):
    (tmp_path / "demo").mkdir()  # what `selfsup demo --out demo` leaves behind
    cfg = load_config("demo", [])
    assert cfg.name == "demo"
    (tmp_path / "notarecipe").mkdir()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert load_config("demo", []).name == "demo"
        with pytest.raises(ConfigError, match="is a folder, not a recipe"):
            load_config("notarecipe", [])
    finally:
        os.chdir(cwd)
