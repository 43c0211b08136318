"""DDP with 2 CPU processes (gloo) computes the same losses and weights as 1 process on the same global batch, for
every family of cross-process logic: RELICv2's gathered negatives and EMA target (plus the monitor's online
classifier, trained on the gathered batch), SimCLR's ``gather_with_grad`` over the global batch, DINO's centre, and the
queues of SwAV and MoCo-v2.

One harness for all of them. Norm layers that use batch statistics would differ between a batch split over 2 processes
and the whole batch (CPU gloo has no SyncBatchNorm), so the backbone uses GroupNorm and the heads no BatchNorm; what is
left is exactly the cross-process part: sharded data and view parameters, gathered embeddings, and gradient averaging.
Plain SGD (no momentum, no weight decay) makes the parameter change after each step -lr * gradient.
"""

import pytest
import torch

from selfsup.config import load_config
from selfsup.engine.checkpoint import load_checkpoint
from selfsup.engine.trainer import pretrain
from tests.conftest import TINY
from tests.methods.test_dino import DINO_TINY

pytestmark = pytest.mark.slow

NO_METHOD = [o for o in TINY if not o.startswith("method.")]
METHODS = {
    "relicv2": TINY,
    "simclr": [*NO_METHOD, "method.name=simclr", "method.projector_hidden=32", "method.projector_dim=16"],
    "dino": [*DINO_TINY, "method.freeze_last_layer_epochs=0", "method.teacher_temperature_warmup_epochs=1"],
    "swav": [*NO_METHOD, "method.name=swav", "method.projector_hidden=32", "method.projector_dim=16",
             "method.num_prototypes=12", "method.queue_length=16", "method.queue_start_epoch=0",
             "method.freeze_prototypes_epochs=0"],
    "mocov2": [*NO_METHOD, "method.name=mocov2", "method.projector_hidden=32", "method.projector_dim=16",
               "method.queue_size=40", "method.momentum=0.9"],
}


def _cfg(tmp_path, method, name, devices):
    return load_config(None, [*METHODS[method], f"out={tmp_path / name}", "model.norm=group", "method.head_norm=none",
                              "optim.name=sgd", "optim.momentum=0.0", "optim.weight_decay=0.0", "optim.base_lr=0.5",
                              "train.steps=3", "train.accelerator=cpu", f"train.devices={devices}",
                              "train.strategy=" + ("ddp_spawn" if devices > 1 else "auto"), "train.threads=1"])


def _not_trivial(method, a, one, tmp_path):
    """The equality is not trivial: training moved what the method's cross-process logic acts on."""
    if method == "relicv2":  # the online weights left the target's EMA copy
        assert [k for k in a if k.startswith("backbone.") and not torch.equal(a[k], a["target_" + k])]
    elif method == "dino":  # the centre moved, and the student left the teacher
        assert a["center"].abs().sum() > 0
        moved = [k for k in a if k.startswith(("backbone.", "head.")) and not torch.equal(a[k], a["teacher_" + k])]
        assert any(k.startswith("head.last_layer") for k in moved) and any(k.startswith("backbone.") for k in moved)
    elif method in ("swav", "mocov2"):  # the queue was filled (and, for SwAV, used at steps 1 and 2)
        assert a["queue"].abs().sum() > 0
    else:  # the weights after 3 steps differ from those after 1
        pretrain(_cfg(tmp_path, method, "first", 1), stop_at_step=1)
        c = load_checkpoint(tmp_path / "first" / "last.ckpt")["method"]
        assert any(not torch.equal(a[k], c[k]) for k in a if k.startswith("backbone."))


@pytest.mark.parametrize("method", list(METHODS))
def test_two_processes_match_one(tmp_path, method):
    one = pretrain(_cfg(tmp_path, method, "one", 1))
    two = pretrain(_cfg(tmp_path, method, "two", 2))
    assert two.losses == pytest.approx(one.losses, rel=1e-5, abs=1e-6)
    ckpt_one = load_checkpoint(tmp_path / "one" / "last.ckpt")
    ckpt_two = load_checkpoint(tmp_path / "two" / "last.ckpt")
    a, b = ckpt_one["method"], ckpt_two["method"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), rtol=1e-4, atol=1e-6), key
    # the online classifier trains on the gathered global batch: the same classifier as one process's
    clf_one, clf_two = ckpt_one["monitor"]["classifier"], ckpt_two["monitor"]["classifier"]
    assert clf_one["linear.weight"].abs().sum() > 0
    for key in clf_one:
        assert torch.allclose(clf_one[key].float(), clf_two[key].float(), rtol=1e-4, atol=1e-6), key
    _not_trivial(method, a, one, tmp_path)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_through_torchrun_match_one_process(tmp_path):
    """The documented multi-node launch (docs/scaling.md): ``torchrun --nnodes 2 --node-rank R`` once per "node"
    (here both on localhost, 1 process each) with ``train.num_nodes=2``, gives the single process's losses and
    weights."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    args = [*TINY, "model.norm=group", "method.head_norm=none", "method.ema_base=0.99", "optim.name=sgd",
            "optim.momentum=0.0", "optim.weight_decay=0.0", "optim.base_lr=0.5", "train.steps=3",
            "train.accelerator=cpu", "train.devices=1", "train.threads=1"]
    one = pretrain(load_config("relicv2_shapes", [*args, f"out={tmp_path / 'one'}"]))
    args += [f"out={tmp_path / 'nodes'}", "train.num_nodes=2", "train.strategy=ddp"]
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
                "--master-addr=127.0.0.1", f"--master-port={port}"]
    procs = [subprocess.Popen([*torchrun, f"--node-rank={r}", "-m", "selfsup.cli.main", "pretrain", "relicv2_shapes",
                               "--quiet", *args],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    a = load_checkpoint(tmp_path / "one" / "last.ckpt")
    b = load_checkpoint(tmp_path / "nodes" / "last.ckpt")
    assert b["step"] == 3 and b["config"]["train"]["num_nodes"] == 2
    for key in a["method"]:
        assert torch.allclose(a["method"][key].float(), b["method"][key].float(), rtol=1e-4, atol=1e-6), key
    _not_trivial("relicv2", a["method"], one, tmp_path)
