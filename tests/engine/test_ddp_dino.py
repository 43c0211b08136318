"""DINO under DDP: 2 CPU processes (gloo) match 1 process on the same global batch: losses, weights and the centre.

As in ``test_ddp.py``: GroupNorm in the backbone and no BatchNorm in the head (CPU gloo has no SyncBatchNorm), plain SGD.
What is left is DINO's cross-process part: each process's loss on its slice (DDP averages the gradients), the reported
loss all-reduced to the global value, and the centre updated from the teacher outputs of the *global* batch. The last
layer trains from step 0 (``freeze_last_layer_epochs=0``) and the teacher temperature moves during the run.
"""

import pytest
import torch

from selfsup.config import load_config
from selfsup.engine.checkpoint import load_checkpoint
from selfsup.engine.trainer import pretrain
from tests.methods.test_dino import DINO_TINY

pytestmark = pytest.mark.slow


def _cfg(tmp_path, name, devices):
    return load_config(None, [*DINO_TINY, f"out={tmp_path / name}", "model.norm=group", "method.head_norm=none",
                              "method.freeze_last_layer_epochs=0", "method.teacher_temperature_warmup_epochs=1",
                              "optim.name=sgd", "optim.momentum=0.0", "optim.weight_decay=0.0", "optim.base_lr=0.5",
                              "train.steps=3", "train.accelerator=cpu", f"train.devices={devices}",
                              "train.strategy=" + ("ddp_spawn" if devices > 1 else "auto"), "train.threads=1"])


def test_two_processes_match_one(tmp_path):
    one = pretrain(_cfg(tmp_path, "one", 1))
    two = pretrain(_cfg(tmp_path, "two", 2))
    assert two.losses == pytest.approx(one.losses, rel=1e-5, abs=1e-6)
    a = load_checkpoint(tmp_path / "one" / "last.ckpt")["method"]
    b = load_checkpoint(tmp_path / "two" / "last.ckpt")["method"]
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), key
    assert a["center"].abs().sum() > 0
    # training moved the student away from the teacher, so the equality above is not trivial
    moved = [k for k in a if k.startswith(("backbone.", "head.")) and not torch.equal(a[k], a["teacher_" + k])]
    assert any(k.startswith("head.last_layer") for k in moved) and any(k.startswith("backbone.") for k in moved)
