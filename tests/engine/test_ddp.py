"""DDP with 2 CPU processes (gloo) computes the same losses and gradients as 1 process on the same global batch.

Norm layers that use batch statistics would differ between a batch split over 2 processes and the whole batch (CPU gloo
has no SyncBatchNorm), so this test uses GroupNorm in the backbone and no BatchNorm in the heads: what is left is
exactly the cross-process part: sharded data and view parameters, the gathered negatives, and gradient averaging.
Plain SGD (no momentum, no weight decay) makes the parameter change after each step -lr * gradient. The online
classifier of the quality monitor is compared too: every rank trains it on the gathered global batch.
"""

import pytest
import torch

from selfsup.config import load_config
from selfsup.engine.checkpoint import load_checkpoint
from selfsup.engine.trainer import pretrain

pytestmark = pytest.mark.slow


def _cfg(tmp_path, tiny_overrides, name, devices):
    return load_config(None, [*tiny_overrides, f"out={tmp_path / name}", "model.norm=group", "method.head_norm=none",
                              "optim.name=sgd", "optim.momentum=0.0", "optim.weight_decay=0.0", "optim.base_lr=0.5",
                              "train.steps=3", "train.accelerator=cpu", f"train.devices={devices}",
                              "train.strategy=" + ("ddp_spawn" if devices > 1 else "auto"), "train.threads=1"])


def test_two_processes_match_one(tmp_path, tiny_overrides):
    one = pretrain(_cfg(tmp_path, tiny_overrides, "one", 1))
    two = pretrain(_cfg(tmp_path, tiny_overrides, "two", 2))
    assert two.losses == pytest.approx(one.losses, rel=1e-5, abs=1e-6)
    ckpt_one = load_checkpoint(tmp_path / "one" / "last.ckpt")
    ckpt_two = load_checkpoint(tmp_path / "two" / "last.ckpt")
    a, b = ckpt_one["method"], ckpt_two["method"]
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), key
    # the online classifier trains on the gathered global batch: the same classifier as one process's
    clf_one, clf_two = ckpt_one["monitor"]["classifier"], ckpt_two["monitor"]["classifier"]
    assert clf_one["linear.weight"].abs().sum() > 0
    for key in clf_one:
        assert torch.allclose(clf_one[key].float(), clf_two[key].float(), rtol=1e-4, atol=1e-6), key
    # training moved the online weights away from the target's EMA copy, so the equality above is not trivial
    moved = [k for k in a if k.startswith("backbone.") and not torch.equal(a[k], a["target_" + k])]
    assert moved
