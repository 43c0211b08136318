"""The one supervised loop: it learns, updates only what it trains, applies the schedules of ``selfsup.schedules`` step
by step or epoch by epoch, calls its hooks, stops and checks losses when asked, and restores the modules' modes."""

import math

import pytest
import torch
from torch import nn

from selfsup.engine.supervised import Batch, LoopSettings, TensorBatches, train_supervised
from selfsup.errors import NonFiniteLossError
from selfsup.schedules import step_decay, warmup_cosine

pytestmark = pytest.mark.usefixtures("one_thread")


def _blobs(n=240, dim=5, classes=3, seed=0):
    """Linearly separable Gaussian blobs around well-separated centres."""
    g = torch.Generator().manual_seed(seed)
    centres = 4.0 * torch.randn(classes, dim, generator=torch.Generator().manual_seed(123))
    y = torch.arange(n) % classes
    return centres[y] + 0.5 * torch.randn(n, dim, generator=g), y


def _linear(dim=5, classes=3):
    torch.manual_seed(0)
    return nn.Linear(dim, classes)


def test_loss_goes_down_on_a_separable_problem():
    x, y = _blobs()
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    epochs = []
    res = train_supervised(model, opt, TensorBatches(x, y, 32, torch.Generator().manual_seed(0)),
                           LoopSettings(epochs=8, accuracy=True), on_epoch=epochs.append)
    assert res.steps == 8 * (240 // 32) and not res.stopped and res.last is epochs[-1]
    assert epochs[-1].loss < 0.1 * epochs[0].loss and epochs[-1].top1 == 100.0
    with torch.no_grad():
        assert (model(x).argmax(1) == y).all()


def test_gradients_reach_only_the_trainable_parameters():
    """A frozen encoder (BatchNorm included) runs in ``prepare``: no gradient, no update, no running-stat change, its
    mode (train) back afterwards; the head in the optimiser gets gradients and moves."""
    x, y = _blobs()
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU()).train()
    head = nn.Linear(8, 3).eval()
    enc_before = {k: v.clone() for k, v in encoder.state_dict().items()}
    head_before = [p.detach().clone() for p in head.parameters()]
    modes = []

    def prepare(batch):
        modes.append((encoder.training, head.training, torch.is_grad_enabled()))
        return Batch(encoder(batch.inputs), batch.targets)

    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    train_supervised(head, opt, TensorBatches(x, y, 64, torch.Generator().manual_seed(1)), LoopSettings(epochs=2),
                     prepare=prepare, train=[head], frozen=[encoder])
    assert set(modes) == {(False, True, False)}  # encoder in eval mode, head in train mode, no autograd in prepare
    for k, v in encoder.state_dict().items():
        assert torch.equal(v, enc_before[k]), k
    assert all(p.grad is None for p in encoder.parameters())
    assert all(p.grad is not None and not torch.equal(p, b) for p, b in zip(head.parameters(), head_before))
    assert encoder.training and all(m.training for m in encoder.modules()) and not head.training  # modes restored


def test_per_step_schedule_equals_selfsup_schedules():
    """Two groups with their own peaks follow one warm-up + cosine, set before every step (``peak`` = the group's
    starting rate); ``StepInfo.lrs`` are the rates each step used."""
    x, y = _blobs(100)
    model = _linear()
    opt = torch.optim.SGD([{"params": [model.weight], "lr": 0.5}, {"params": [model.bias], "lr": 0.05}], lr=1.0)
    total = 3 * math.ceil(100 / 16)
    seen = []
    train_supervised(model, opt, TensorBatches(x, y, 16, torch.Generator().manual_seed(0)),
                     LoopSettings(epochs=3, lr_schedule=lambda k, peak: warmup_cosine(k, total, 4, peak, 0.1 * peak)),
                     on_step=lambda s: seen.append((s.step, s.lrs)))
    assert [s for s, _ in seen] == list(range(1, 3 * 6 + 1))  # 100 // 16 = 6 steps per epoch (last batch dropped)
    for step, lrs in seen:
        assert lrs == [warmup_cosine(step - 1, total, 4, peak, 0.1 * peak) for peak in (0.5, 0.05)]


def test_per_epoch_schedule_equals_selfsup_schedules_and_the_epoch_hook_runs_each_epoch():
    x, y = _blobs(90)
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    steps, epochs = [], []
    settings = LoopSettings(epochs=5, schedule_unit="epoch",
                            lr_schedule=lambda epoch, peak: step_decay(peak, epoch, [2, 4], 0.1))
    train_supervised(model, opt, TensorBatches(x, y, 30, torch.Generator().manual_seed(0)), settings,
                     on_step=lambda s: steps.append((s.epoch, s.lr)), on_epoch=epochs.append)
    assert [e.epoch for e in epochs] == [0, 1, 2, 3, 4]
    assert [e.steps for e in epochs] == [3, 6, 9, 12, 15] and all(e.epoch_steps == 3 and e.seen == 90 for e in epochs)
    assert all(math.isnan(e.top1) for e in epochs)  # accuracy not asked for
    assert steps == [(e, step_decay(0.2, e, [2, 4], 0.1)) for e in range(5) for _ in range(3)]


def test_a_step_hook_stops_the_run_and_prepare_can_skip_batches():
    x, y = _blobs(64)
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    epochs = []
    data = [Batch(x[i:i + 8], y[i:i + 8]) for i in range(0, 64, 8)]
    res = train_supervised(model, opt, data, LoopSettings(epochs=4), on_step=lambda s: s.step == 5,
                           prepare=lambda b: None if b.inputs[0, 0] > 0 else b, on_epoch=epochs.append)
    kept = sum(1 for b in data if b.inputs[0, 0] <= 0)
    assert 0 < kept < 8
    assert res.stopped and res.steps == 5 and len(epochs) == math.ceil(5 / kept)
    assert epochs[-1].epoch_steps == 5 - kept * (len(epochs) - 1)


def test_non_finite_losses_are_caught_per_step_or_per_epoch():
    x, y = _blobs(64)
    poisoned = x.clone()
    poisoned[40] = float("nan")  # in the second half of an unshuffled pass
    data = [(poisoned[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    seen = []
    model = _linear()
    with pytest.raises(NonFiniteLossError, match="in epoch 1"):
        train_supervised(model, torch.optim.SGD(model.parameters(), lr=0.1), data,
                         LoopSettings(epochs=2, check_finite="epoch", desc="probe"), on_step=seen.append)
    assert len(seen) == 4  # the whole epoch ran, then its mean loss was checked

    def error(value, epoch):
        return ValueError(f"loss {value} at epoch {epoch}")

    model = _linear()
    seen.clear()
    with pytest.raises(ValueError, match="loss nan at epoch 0"):
        train_supervised(model, torch.optim.SGD(model.parameters(), lr=0.1), data,
                         LoopSettings(epochs=2, check_finite="step", nonfinite=error), on_step=seen.append)
    assert len(seen) == 2  # stopped before the poisoned step's update


def test_modes_come_back_after_an_error():
    model = nn.Sequential(nn.Linear(5, 3), nn.Dropout(0.1)).eval()
    frozen = nn.BatchNorm1d(5).train()

    def loss_fn(out, target):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        train_supervised(model, torch.optim.SGD(model.parameters(), lr=0.1), [_blobs(8)], LoopSettings(epochs=1),
                         loss_fn=loss_fn, train=[model], frozen=[frozen])
    assert not any(m.training for m in model.modules()) and frozen.training


def test_tensor_batches():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    batches = TensorBatches(x, y, 4, torch.Generator().manual_seed(0))
    first = list(batches)
    assert len(batches) == len(first) == 2 and all(len(b.inputs) == 4 for b in first)  # 10 // 4, rest dropped
    assert all(torch.equal(b.inputs[:, 0].long(), b.targets) and torch.equal(b.targets, b.meta) for b in first)
    assert [b.meta.tolist() for b in first] != [b.meta.tolist() for b in batches]  # a new permutation each pass
    small = list(TensorBatches(x[:3], y[:3], 4, torch.Generator().manual_seed(0)))
    assert len(small) == 1 and sorted(small[0].targets.tolist()) == [0, 1, 2]  # fewer than a batch: one batch
    with pytest.raises(ValueError):
        TensorBatches(x, y[:5], 4, torch.Generator())


def test_settings_are_checked():
    from selfsup.errors import ConfigError

    model = _linear()
    for bad in (dict(schedule_unit="batch"), dict(check_finite="always"), dict(epochs=-1)):
        with pytest.raises(ConfigError):
            train_supervised(model, torch.optim.SGD(model.parameters(), lr=0.1), [],
                             LoopSettings(**{"epochs": 1, **bad}))
