"""SwAV (and MoCo-v2) under DDP with 2 CPU processes (gloo) match 1 process on the same global batch.

As in ``tests/engine/test_ddp.py``: GroupNorm in the backbone and no BatchNorm in the heads, so only the cross-process
parts differ: SwAV's Sinkhorn must run over the *global* batch (plus the queue) on every process, the queue must hold
the global batch's embeddings (MoCo: keys) on every process, and the per-process losses must average to the global one.
The SwAV run uses the queue from step 1 (queue_length = batch) and trains the prototypes from step 0.
"""

import pytest
import torch

from selfsup.config import load_config
from selfsup.engine.checkpoint import load_checkpoint
from selfsup.engine.trainer import pretrain
from tests.conftest import TINY

pytestmark = pytest.mark.slow

BASE = [o for o in TINY if not o.startswith("method.")]
METHODS = {
    "swav": ["method.name=swav", "method.projector_hidden=32", "method.projector_dim=16", "method.num_prototypes=12",
             "method.queue_length=16", "method.queue_start_epoch=0", "method.freeze_prototypes_epochs=0"],
    "mocov2": ["method.name=mocov2", "method.projector_hidden=32", "method.projector_dim=16", "method.queue_size=40",
               "method.momentum=0.9"],
}


def _cfg(tmp_path, method, name, devices):
    return load_config(None, [*BASE, *METHODS[method], f"out={tmp_path / name}", "model.norm=group",
                              "method.head_norm=none", "optim.name=sgd", "optim.momentum=0.0",
                              "optim.weight_decay=0.0", "optim.base_lr=0.5", "train.steps=3",
                              "train.accelerator=cpu", f"train.devices={devices}",
                              "train.strategy=" + ("ddp_spawn" if devices > 1 else "auto"), "train.threads=1"])


@pytest.mark.parametrize("method", ["swav", "mocov2"])
def test_two_processes_match_one(tmp_path, method):
    one = pretrain(_cfg(tmp_path, method, "one", 1))
    two = pretrain(_cfg(tmp_path, method, "two", 2))
    assert two.losses == pytest.approx(one.losses, rel=1e-5, abs=1e-6)
    a = load_checkpoint(tmp_path / "one" / "last.ckpt")["method"]
    b = load_checkpoint(tmp_path / "two" / "last.ckpt")["method"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), rtol=1e-4, atol=1e-6), key
    assert a["queue"].abs().sum() > 0  # the queue was filled (and, for SwAV, used at steps 1 and 2)
