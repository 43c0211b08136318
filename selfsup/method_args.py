"""The config layer's registry of method arguments, and the checks they share.

Each method defines its arguments dataclass (the papers' names for its hyper-parameters, with a ``name`` field and a
``validate()`` that turns a bad value into a one-line :class:`~selfsup.errors.ConfigError`) in its own file, beside its
networks and loss, and registers both with one decorator, ``@register_method("relicv2", args=RELICv2Args)``
(:func:`selfsup.methods.base.register_method`), which calls :func:`register_method_args`.

The registry lives here, in the config layer, so that :func:`selfsup.config.load_config` knows every method's options
without importing the methods (lower layers never import higher ones): whoever loads a config imports
:mod:`selfsup.methods` first (the CLI does, as do the engine and eval modules that load configs), which registers them
all, as :mod:`selfsup.data.sources` registers the datasets.
"""

from __future__ import annotations

from typing import Dict

from selfsup.errors import ConfigError

#: method name -> its arguments dataclass (with a ``name`` field and ``validate()``).
METHOD_ARGS: Dict[str, type] = {}

MLP_NORMS = ("batch", "layer", "none")  # normalisation choices of the heads (selfsup.models.heads.MLP)


def register_method_args(name: str, cls: type) -> type:
    """Make a method's arguments dataclass selectable with ``method.name=<name>``. Its ``name`` field must default to
    ``name``: a config without ``method.name`` gets RELICv2's arguments, and the stored ``config.yaml`` of a run names
    its method by that field."""
    if getattr(cls, "name", None) != name:
        raise TypeError(f"{cls.__name__}.name defaults to {getattr(cls, 'name', None)!r}; registered as {name!r}")
    METHOD_ARGS[name] = cls
    return cls


def at_least(args, keys, low: int = 1) -> None:
    """``method.<key> >= low`` for every key (counts and sizes), else a one-line :class:`ConfigError`."""
    for key in keys:
        if getattr(args, key) < low:
            raise ConfigError(f"method.{key} must be >= {low}, got {getattr(args, key)}")


def positive(args, keys) -> None:
    """``method.<key> > 0`` for every key (temperatures, rates), else a one-line :class:`ConfigError`."""
    for key in keys:
        if getattr(args, key) <= 0:
            raise ConfigError(f"method.{key} must be > 0, got {getattr(args, key)}")


def check_alpha(alpha) -> None:
    """Config check of SSLight's re-balancing weight ``method.alpha`` (every method has it): in [0, 1] or null."""
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"method.alpha must be in [0, 1] or null, got {alpha}")
