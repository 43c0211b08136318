"""Every hostile value that a config *accepts* must also train: one step of pretraining per accepted value.

`test_bad_config` checks that a bad value is refused at load with one line. A value that passes that gate is promised
to work, so here each accepted (key, value) pair, over the whole schema and every method's own fields, runs one step.
The outcome must be a finished step or a one-line :class:`SelfsupError`, never another exception and never a hang.
This is how the late failures listed in `test_known_late_failures_are_refused_at_load` were found (seed=-1 reached
NumPy, model.width=1e30 reached torch.empty, train.num_nodes=2 an index error in Lightning).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import signal

import pytest

import selfsup.methods  # noqa: F401  (registers every method's arguments before the parametrize below reads them)
from selfsup.config import Config, load_config
from selfsup.errors import SelfsupError
from selfsup.method_args import METHOD_ARGS
from tests.conftest import TINY
from tests.hostile.test_bad_config import HOSTILE, _leaves

pytestmark = pytest.mark.slow

# Keys a training step does not read (evaluation, naming, output) or that only make a correct run slow:
# train.compile=true compiles the networks with Inductor (tens of seconds on this CPU), which is its job.
# train.devices / train.num_nodes > 1 start more processes: Lightning's launcher re-executes the calling program (here
# pytest itself, which then forks again until memory runs out), so they are tested from the CLI in test_ddp and in
# test_bad_config.test_devices_this_machine_lacks_are_one_line.
# saliency.* is read by `selfsup saliency`, never by pretraining (tests/saliency/, tests/cli/).
SKIP = ("eval.", "saliency.", "out", "name", "train.progress", "train.compile", "train.devices", "train.num_nodes")
# Small heads for every method, so a step costs a fraction of a second; a field under test overrides its entry.
SMALL = {"projector_hidden": 32, "projector_dim": 16, "predictor_hidden": 32, "out_dim": 64, "hidden_dim": 32,
         "bottleneck_dim": 16, "num_prototypes": 16, "queue_size": 64, "queue_length": 32, "num_negatives": 4,
         "embedding_dim": 16, "head_hidden": 32, "patch_size": 4}
# The views the pretext tasks take (large views only; the patch tasks cut 3 x patch_size crops from one view).
PRETEXT_VIEWS = {"rotation": ["views.small.count=0"], "exemplar": ["views.small.count=0"],
                 "jigsaw": ["views.small.count=0", "views.large.count=1", "views.large.size=12"],
                 "relpatch": ["views.small.count=0", "views.large.count=1", "views.large.size=12"]}
STEP_LIMIT_S = 60


def _timeout(*_):
    raise TimeoutError(f"one training step took over {STEP_LIMIT_S} s")


def _one_step_each(base: list, keys: list, tmp_path) -> tuple:
    """Run one step per accepted ``key=value``; return (how many ran, {problem: [overrides]})."""
    from selfsup.engine.trainer import pretrain

    ran, problems = 0, {}
    previous = signal.signal(signal.SIGALRM, _timeout)
    logging.disable(logging.WARNING)  # accepted-but-odd values warn (k clamped, ...); the warnings are not under test
    try:
        for key in keys:
            for value in HOSTILE:
                out = tmp_path / f"r{ran}"
                try:
                    cfg = load_config(None, [*base, f"out={out}", f"{key}={value}"])
                except SelfsupError:
                    continue  # refused at load: test_bad_config's part
                ran += 1
                signal.alarm(STEP_LIMIT_S)
                try:
                    pretrain(cfg)
                except SelfsupError as exc:
                    if not str(exc) or "\n" in str(exc).strip():
                        problems.setdefault(f"not one line: {str(exc)[:80]!r}", []).append(f"{key}={value}")
                except Exception as exc:  # noqa: BLE001 - the point is to list every kind
                    first = str(exc).splitlines()[0][:100] if str(exc) else ""
                    problems.setdefault(f"{type(exc).__name__}: {first}", []).append(f"{key}={value}")
                finally:
                    signal.alarm(0)
                    shutil.rmtree(out, ignore_errors=True)
    finally:
        signal.signal(signal.SIGALRM, previous)
        logging.disable(logging.NOTSET)
    return ran, problems


def test_every_accepted_value_trains_one_step_or_says_why(tmp_path):
    keys = [k for k in _leaves(Config) if not k.startswith(SKIP)]
    base = [*TINY, "train.steps=1", "monitor.online_linear=true"]
    ran, problems = _one_step_each(base, keys, tmp_path)
    assert ran > 100, ran  # most keys accept some of the values (seed=2, views.large.count=2, ...)
    assert not problems, problems


@pytest.mark.parametrize("method", sorted(METHOD_ARGS))
def test_every_accepted_method_value_trains_one_step_or_says_why(method, tmp_path):
    fields = [f.name for f in dataclasses.fields(METHOD_ARGS[method]) if f.name != "name"]
    generic = [o for o in TINY if not o.startswith("method.")]
    base = [*generic, *PRETEXT_VIEWS.get(method, []), "train.steps=1", f"method.name={method}",
            *(f"method.{k}={v}" for k, v in SMALL.items() if k in fields)]
    if not fields:  # nothing to vary (Rotation): the method's own step must train
        from selfsup.engine.trainer import pretrain

        assert pretrain(load_config(None, [*base, f"out={tmp_path / 'plain'}"])).step == 1
        return
    ran, problems = _one_step_each(base, [f"method.{f}" for f in fields], tmp_path)
    assert ran > 0, method
    assert not problems, problems
