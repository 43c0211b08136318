"""A method registers once, with its arguments: ``@register_method(name, args=...)`` fills both registries, the
config layer's (:data:`selfsup.method_args.METHOD_ARGS`, what ``load_config`` checks ``method.*`` against) and the
methods layer's (:data:`selfsup.methods.base.METHODS`, what ``build_method`` builds)."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from selfsup.config import load_config
from selfsup.errors import ConfigError
from selfsup.method_args import METHOD_ARGS
from selfsup.methods.base import METHODS, Method, register_method


def test_every_method_has_its_arguments_in_its_own_file():
    assert set(METHODS) == set(METHOD_ARGS)
    for name, cls in METHODS.items():
        args = METHOD_ARGS[name]
        assert args.__module__ == cls.__module__, name
        assert args().name == name


@pytest.fixture
def registries():
    """Both registries as they were before the test."""
    before = dict(METHOD_ARGS), dict(METHODS)
    yield
    for registry, saved in zip((METHOD_ARGS, METHODS), before):
        registry.clear()
        registry.update(saved)


def test_one_decorator_fills_both_registries(registries):
    @dataclasses.dataclass
    class ToyArgs:
        name: str = "toy"
        width: int = 3

        def validate(self) -> None:
            pass

    @register_method("toy", args=ToyArgs)
    class Toy(Method):
        pass

    assert METHOD_ARGS["toy"] is ToyArgs and METHODS["toy"] is Toy
    cfg = load_config(None, ["method.name=toy", "method.width=5"])
    assert isinstance(cfg.method, ToyArgs) and cfg.method.width == 5
    with pytest.raises(ConfigError, match="method.depth"):
        load_config(None, ["method.name=toy", "method.depth=5"])


def test_arguments_must_name_their_method(registries):
    @dataclasses.dataclass
    class WrongArgs:
        name: str = "other"

    with pytest.raises(TypeError, match="registered as 'wrong'"):
        register_method("wrong", args=WrongArgs)(type("Wrong", (Method,), {}))
    assert "wrong" not in METHOD_ARGS and "wrong" not in METHODS


def test_load_config_before_the_methods_are_imported_says_so():
    code = ("from selfsup.config import load_config\n"
            "from selfsup.errors import ConfigError\n"
            "try:\n    load_config(None, [])\nexcept ConfigError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.strip() == ("unknown method.name 'relicv2'; available: none (no method is registered: "
                           "import selfsup.methods first)")
