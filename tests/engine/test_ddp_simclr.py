"""SimCLR under DDP with 2 CPU processes (gloo): the same losses and weights as 1 process on the same global batch.

SimCLR's negatives are the other images of the *global* batch, so this checks ``gather_with_grad`` end to end: without
it each process would contrast only its own half of the batch and the losses would differ. As in ``test_ddp.py``, the
backbone uses GroupNorm and the projector no BatchNorm (CPU gloo has no SyncBatchNorm), and plain SGD makes each
update -lr * gradient.
"""

import pytest
import torch

from selfsup.config import load_config
from selfsup.engine.checkpoint import load_checkpoint
from selfsup.engine.trainer import pretrain
from tests.conftest import TINY

pytestmark = pytest.mark.slow


def _cfg(tmp_path, name, devices):
    return load_config(None, [*(o for o in TINY if not o.startswith("method.")), f"out={tmp_path / name}",
                              "method.name=simclr", "method.projector_hidden=32", "method.projector_dim=16",
                              "model.norm=group", "method.head_norm=none", "optim.name=sgd", "optim.momentum=0.0",
                              "optim.weight_decay=0.0", "optim.base_lr=0.5", "train.steps=3", "train.accelerator=cpu",
                              f"train.devices={devices}", "train.strategy=" + ("ddp_spawn" if devices > 1 else "auto"),
                              "train.threads=1"])


def test_two_processes_match_one(tmp_path):
    one = pretrain(_cfg(tmp_path, "one", 1))
    two = pretrain(_cfg(tmp_path, "two", 2))
    assert two.losses == pytest.approx(one.losses, rel=1e-5, abs=1e-6)
    a = load_checkpoint(tmp_path / "one" / "last.ckpt")["method"]
    b = load_checkpoint(tmp_path / "two" / "last.ckpt")["method"]
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), key
    # the weights after 3 steps differ from those after 1 step, so the equality above is not trivial
    first = _cfg(tmp_path, "first", 1)
    pretrain(first, stop_at_step=1)
    c = load_checkpoint(tmp_path / "first" / "last.ckpt")["method"]
    assert any(not torch.equal(a[k], c[k]) for k in a if k.startswith("backbone."))
