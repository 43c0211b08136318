"""Shared test settings: offline, 2 threads, and a tiny RELICv2 config that trains in a fraction of a second a step."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import selfsup.methods  # noqa: E402,F401  (registers the methods)

torch.set_num_threads(2)

# Small enough for a CPU test, big enough to exercise every part: 2 large + 1 small views, masks, negatives, EMA.
TINY = [
    "data.dataset=shapes", "data.image_size=16", "data.train_size=64", "data.test_size=32", "data.num_classes=4",
    "views.large.count=2", "views.large.size=16", "views.small.count=1", "views.small.size=8", "views.mask_p=0.5",
    "model.backbone=convnet_tiny", "method.name=relicv2", "method.projector_hidden=32", "method.projector_dim=16",
    "method.predictor_hidden=32", "method.num_negatives=4", "train.batch_size=16", "train.steps=6",
    "train.progress=false", "train.ckpt_every_steps=2", "optim.warmup_steps=1", "eval.batch_size=64",
]


@pytest.fixture
def one_thread():
    """Small tensors: one thread avoids OpenMP barrier waits when other test processes share the cores.

    Modules that only use small tensors opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture
def tiny_overrides(tmp_path):
    return [*TINY, f"out={tmp_path / 'run'}"]


def run_cli(*args, cwd=None, timeout=300):
    """``selfsup ARGS`` in a fresh process (offline, unbuffered, this checkout first on the path). Skipped under
    ``make test-fast`` (``SELFSUP_FAST=1``): each run pays the package's import time; ``make test`` runs them all."""
    if os.environ.get("SELFSUP_FAST"):
        pytest.skip("end-to-end CLI run in a fresh process (make test runs it)")
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.run([sys.executable, "-m", "selfsup.cli.main", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
