"""Fine-tuning: the schedules, which layers the SSLight head keeps, gradients that reach the encoder (and only with a
non-zero encoder rate), learning on a separable toy set, and the CLI on tiny data with saved subsets."""

import json

import pytest
import torch
from torch import nn

from selfsup.config import FinetuneEvalConfig, load_config
from selfsup.errors import ConfigError
from selfsup.eval.finetune import Trunk, finetune, finetune_lr, head_prefix, pretrained_head
from selfsup.models.heads import MLP
from tests.conftest import TINY, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def test_step_schedule_decays_by_gamma_at_each_milestone_epoch():
    cfg = FinetuneEvalConfig(schedule="step", milestones=[12, 16], gamma=0.2, epochs=20)
    spe, total = 3, 60
    lr = [finetune_lr(s, spe, total, 10.0, cfg) for s in range(total)]
    assert lr[0] == lr[12 * spe - 1] == 10.0  # epochs 0-11
    assert lr[12 * spe] == pytest.approx(2.0) and lr[16 * spe - 1] == pytest.approx(2.0)  # epochs 12-15
    assert lr[16 * spe] == pytest.approx(0.4) and lr[-1] == pytest.approx(0.4)  # epochs 16-19


def test_cosine_schedule_reaches_final_lr():
    cfg = FinetuneEvalConfig(schedule="cosine", final_lr=1e-6)
    assert finetune_lr(0, 5, 100, 0.12, cfg) == pytest.approx(0.12)
    assert finetune_lr(50, 5, 100, 0.12, cfg) == pytest.approx((0.12 + 1e-6) / 2)
    assert finetune_lr(100, 5, 100, 0.12, cfg) == pytest.approx(1e-6)
    assert finetune_lr(100, 5, 100, 0.0, cfg) == 0.0  # a frozen group stays frozen


def test_second_layer_of_the_head():
    three = MLP(8, 16, 4, num_layers=3, activation="gelu")  # Linear BN GELU Linear BN GELU Linear
    kept = head_prefix(three, 2)
    assert [type(m) for m in kept] == [nn.Linear, nn.BatchNorm1d, nn.GELU, nn.Linear, nn.BatchNorm1d, nn.GELU]
    assert kept[3] is three[3]  # the pretrained layers themselves
    two = MLP(8, 16, 4)  # Linear BN ReLU Linear: its second layer is the output
    assert len(head_prefix(two, 2)) == 4 and len(head_prefix(two, 1)) == 3
    with pytest.raises(ConfigError, match="only 2 Linear"):
        head_prefix(two, 3)
    trunk = Trunk(nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1)), head_prefix(three, 2))
    assert trunk.num_features == 16 and trunk(torch.randn(4, 3, 8, 8)).shape == (4, 16)


class _Toy(torch.utils.data.Dataset):
    """Two classes told apart by which half of the image is bright; uint8 items like every selfsup dataset."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        self.images = torch.randint(0, 60, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
        for i, y in enumerate(self.labels.tolist()):
            self.images[i, :, :, :4] += 150 if y == 0 else 0
            self.images[i, :, :, 4:] += 150 if y == 1 else 0

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": int(self.labels[i])}


def _net():
    torch.manual_seed(0)
    return Trunk(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(1)))


def _run(trunk, cfg, log=None):
    pre = lambda x: x.float() / 255.0  # noqa: E731
    return finetune(trunk, _Toy(64, 0), _Toy(64, 1), train_transform=lambda x, g: pre(x), test_transform=pre,
                    num_classes=2, cfg=cfg, log_fn=log, progress=False)


def test_gradients_reach_the_encoder_only_with_an_encoder_rate():
    base = dict(epochs=2, batch_size=16, head_lr=0.5, weight_decay=0.0, schedule="step", milestones=[1], gamma=0.5)
    trunk = _net()
    before = [p.detach().clone() for p in trunk.parameters()]
    logs = []
    _run(trunk, FinetuneEvalConfig(**base, encoder_lr=0.0), logs.append)
    assert all(torch.equal(a, b) for a, b in zip(before, trunk.parameters()))  # frozen encoder: a linear probe
    assert [r["lr_head"] for r in logs] == [0.5] * 4 + [0.25] * 4 and all(r["lr_encoder"] == 0 for r in logs)
    trunk = _net()
    _run(trunk, FinetuneEvalConfig(**base, encoder_lr=0.05))
    assert all(not torch.equal(a, b) for a, b in zip(before, trunk.parameters()))


def test_fine_tuning_learns_a_separable_task_and_restores_modes():
    trunk = _net().eval()
    res = _run(trunk, FinetuneEvalConfig(epochs=15, batch_size=16, head_lr=0.5, encoder_lr=0.05, schedule="cosine"))
    assert res["top1"] >= 95.0 and res["steps"] == 15 * 4 and res["num_train"] == 64
    assert not trunk.training  # the caller's eval mode is back


def test_a_diverging_rate_stops_with_a_message():
    from selfsup.errors import NonFiniteLossError

    class Poisoned(nn.Module):  # what a diverged encoder gives: non-finite features
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))
            self.num_features = 192

        def forward(self, x):
            return x.flatten(1) * self.w * float("nan")

    with pytest.raises(NonFiniteLossError, match="non-finite in epoch 1; lower eval.finetune.head_lr"):
        _run(Poisoned(), FinetuneEvalConfig(epochs=3, batch_size=16))


def test_pretrained_head_of_every_method():
    import selfsup.methods  # noqa: F401
    from selfsup.methods.base import build_method

    small = ["method.projector_hidden=16", "method.projector_dim=8", "method.predictor_hidden=16",
             "method.out_dim=16", "method.hidden_dim=16", "method.bottleneck_dim=8", "method.num_prototypes=8"]
    for name in ("relicv2", "simclr", "mocov2", "swav", "byol", "dino"):
        over = [o for o in TINY if not o.startswith("method.")] + [f"method.name={name}"]
        over += [o for o in small if o.split("=")[0].split(".")[1] in _fields(name)]
        head = pretrained_head(build_method(load_config(None, over)))
        assert isinstance(head[0], nn.Linear) and head[0].in_features == 256, name  # convnet_tiny: 256 features


def _fields(name):
    import dataclasses

    from selfsup.method_args import METHOD_ARGS

    return {f.name for f in dataclasses.fields(METHOD_ARGS[name])}


@pytest.mark.slow
def test_cli_finetune_on_tiny_data(tmp_path):
    run = tmp_path / "run"
    r = run_cli("pretrain", *TINY, f"out={run}")
    assert r.returncode == 0, r.stderr[-2000:]
    sub = tmp_path / "subsets"
    common = ["--quiet", "eval.finetune.epochs=2", "eval.finetune.batch_size=8", f"eval.finetune.subset_dir={sub}"]
    out = tmp_path / "ft.json"
    r = run_cli("eval", "finetune", "-c", str(run), "--preset", "relicv2_semi_10pct", "--out", str(out), *common,
                "eval.finetune.labels=0.25")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["num_train"] == 16 and res["labels_fraction"] == 0.25 and 0 <= res["top1"] <= 100
    assert "fine-tune (25% labels = 16 images" in r.stdout
    files = list(sub.glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["num_labels"] == 16
    # the SSLight preset: the classifier on the projector, which only last.ckpt holds
    r = run_cli("eval", "finetune", "-c", str(run), "--preset", "sslight_semi_10pct", *common,
                "eval.finetune.labels=0.25")
    assert r.returncode == 0 and "classifier on the projector" in r.stdout, r.stderr[-2000:]
    r = run_cli("eval", "finetune", "-c", str(run / "backbone.safetensors"), "--preset", "sslight_semi_10pct",
                *common)
    assert r.returncode == 2 and "needs the run's last.ckpt" in r.stderr and r.stderr.count("\n") == 1
    # random init: the supervised baseline on the same subset file
    r = run_cli("eval", "finetune", "--random-init", *TINY, "--preset", "relicv2_semi_10pct", *common,
                "eval.finetune.labels=0.25")
    assert r.returncode == 0 and "random init" in r.stdout, r.stderr[-2000:]
    assert len(list(sub.glob("*.json"))) == 1
    r = run_cli("eval", "finetune", "-c", str(run), "--preset", "nope", *common)
    assert r.returncode == 2 and "unknown preset" in r.stderr
