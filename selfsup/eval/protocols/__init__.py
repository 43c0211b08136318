"""Evaluation protocols by name (timm-style): ``selfsup eval <protocol>`` is built from this registry.

A protocol is one module of this package holding a :class:`Protocol` subclass decorated with
``@register_protocol(name)``. The class says, in one place:

* what its subcommand is: :attr:`~Protocol.help` (also the subcommand's description) and
  :meth:`~Protocol.add_arguments` for options of its own;
* which settings it reads: :attr:`~Protocol.settings`, the ``eval.<name>`` dataclass. The dataclasses stay in
  :mod:`selfsup.config`, where :class:`~selfsup.config.EvalConfig` composes them, because config loading sits below
  the eval layer and must know every option without importing it;
* how it runs: :meth:`~Protocol.run` on an :class:`EvalContext` (with the frozen backbone already loaded when
  :attr:`~Protocol.frozen`, else from ``ctx.checkpoint`` itself);
* what the terminal shows (:meth:`~Protocol.summary`), how its result file in ``<run>/evals/`` is named
  (:meth:`~Protocol.name_parts`) and what its row of ``selfsup report`` adds (:meth:`~Protocol.report_row`).

Every module of this package is imported the first time the registry is read (:func:`protocols`,
:func:`get_protocol`, :func:`protocol_for_result`), so adding a protocol is one new file here (plus its tests and a
preset in ``selfsup/recipes/eval/``), with no list to edit. A protocol module keeps its heavy imports (torch, the
probes) inside :meth:`~Protocol.run`: reading the registry (``selfsup report`` does, for its rows) stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from selfsup.config import Config
from selfsup.errors import ConfigError

__all__ = ["EvalContext", "Protocol", "register_protocol", "protocols", "get_protocol", "protocol_for_result",
           "number"]


@dataclass
class EvalContext:
    """One evaluation as ``selfsup eval`` runs it (built by :func:`selfsup.eval.run.prepare_eval`)."""

    cfg: Config
    checkpoint: Optional[str]  # a run folder, last.ckpt or backbone.safetensors; None: a random-init backbone
    source: str  # how the summary names the backbone: the checkpoint as given, or "random init"
    progress: bool = True
    options: Dict[str, Any] = field(default_factory=dict)  # the protocol's own command-line options
    presets: Sequence[str] = ()  # --preset: evaluation presets layered over the config
    out: Optional[Path] = None  # --out: the result JSON
    run_dir: Optional[Path] = None  # the run folder of the checkpoint, where the result is kept (evals/)
    name: str = ""  # the result's file name in <run>/evals/, without .json: protocol, setting, dataset
    backbone: Any = None  # the frozen representation, loaded before run() for protocols with ``frozen = True``

    @property
    def figure_dir(self) -> Optional[Path]:
        """Where a protocol's figures go: next to --out, else in the run's evals/ (None: neither)."""
        if self.out is not None:
            return Path(self.out).parent
        return self.run_dir / "evals" if self.run_dir is not None else None


class Protocol:
    """An evaluation protocol: subclass it, set the attributes, override what differs from the defaults."""

    name: str = ""  # set by register_protocol
    help: str = ""  # the subcommand's help and description
    settings: Optional[type] = None  # the eval.<name> dataclass of selfsup.config (None: no settings of its own)
    frozen: bool = True  # run() gets the loaded representation in ctx.backbone; False: it builds its own networks
    result_names: Tuple[str, ...] = ()  # other "protocol" values its result files carry (linear: lbfgs, sgd)
    order: int = 100  # place in `selfsup eval --help` (then by name)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Options of this protocol's own, after the common ones; they reach :meth:`run` as ``ctx.options``."""

    def run(self, ctx: EvalContext) -> Dict[str, Any]:
        """Evaluate; a flat dict of JSON-serialisable results (written to --out and ``<run>/evals/``)."""
        raise NotImplementedError

    def summary(self, res: Dict[str, Any], ctx: EvalContext) -> List[str]:
        """The lines printed after the run."""
        return []

    def name_parts(self, cfg: Config, presets: Sequence[str]) -> List[str]:
        """What defines the setting, between the protocol and the dataset in the result's file name."""
        return []

    def report_row(self, res: Dict[str, Any]) -> Dict[str, Any]:
        """What this protocol adds to its row of ``selfsup report`` (``res`` already checked by
        :func:`selfsup.eval.report_run.check_eval`): ``detail``, a list of texts, and ``top1`` / ``top5`` where the
        headline numbers are not the generic ones."""
        return {}


def number(v: Any, spec: str = ".2f") -> str:
    """A number of a result file for a report row ("-" when absent)."""
    return "-" if v is None else format(v, spec)


#: protocol name -> the registered protocol (read it through :func:`protocols`, which imports every module first)
PROTOCOLS: Dict[str, Protocol] = {}
_discovered = False


def register_protocol(name: str):
    """Class decorator: make a :class:`Protocol` subclass ``selfsup eval <name>``."""

    def wrap(cls: type) -> type:
        old = PROTOCOLS.get(name)
        if old is not None and type(old).__qualname__ != cls.__qualname__:
            raise ValueError(f"evaluation protocol '{name}' is registered twice ({type(old).__qualname__}, "
                             f"{cls.__qualname__})")
        protocol = cls()
        protocol.name = name
        PROTOCOLS[name] = protocol
        return cls

    return wrap


def _discover() -> None:
    """Import every module of this package once: each registers its protocol."""
    global _discovered
    if _discovered:
        return
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _discovered = True


def protocols() -> List[Protocol]:
    """Every registered protocol, in the order of ``selfsup eval --help``."""
    _discover()
    return sorted(PROTOCOLS.values(), key=lambda p: (p.order, p.name))


def get_protocol(name: str) -> Protocol:
    _discover()
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown evaluation protocol '{name}'; available: "
                          f"{', '.join(p.name for p in protocols())}")
    return PROTOCOLS[name]


def protocol_for_result(value: str) -> Optional[Protocol]:
    """The protocol whose result files carry ``"protocol": value`` (its name or one of its result_names), if any."""
    _discover()
    if value in PROTOCOLS:
        return PROTOCOLS[value]
    return next((p for p in PROTOCOLS.values() if value in p.result_names), None)
