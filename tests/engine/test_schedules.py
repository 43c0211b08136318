"""Learning-rate, weight-decay and EMA-momentum schedules against their formulas."""

import math

import pytest
import torch
import torch.nn as nn

from selfsup.engine.optim import LARS, param_groups
from selfsup.engine.schedules import set_lr, set_weight_decay
from selfsup.schedules import cosine_ema_momentum, cosine_schedule, scaled_lr, warmup_cosine


def test_scaled_lr():
    assert scaled_lr(0.3, 4096) == pytest.approx(4.8)
    assert scaled_lr(0.3, 256) == pytest.approx(0.3)


def test_warmup_cosine_points():
    total, warm, peak, final = 100, 10, 2.0, 0.1
    assert warmup_cosine(0, total, warm, peak, final) == pytest.approx(peak / warm)
    assert warmup_cosine(4, total, warm, peak, final) == pytest.approx(peak * 5 / warm)
    assert warmup_cosine(9, total, warm, peak, final) == pytest.approx(peak)  # end of warm-up
    assert warmup_cosine(10, total, warm, peak, final) == pytest.approx(peak)  # start of cosine
    assert warmup_cosine(55, total, warm, peak, final) == pytest.approx((peak + final) / 2)  # mid cosine
    s = 30
    expected = final + (peak - final) * (1 + math.cos(math.pi * (s - warm) / (total - warm))) / 2
    assert warmup_cosine(s, total, warm, peak, final) == pytest.approx(expected)
    assert warmup_cosine(total, total, warm, peak, final) == pytest.approx(final)
    assert warmup_cosine(total + 50, total, warm, peak, final) == pytest.approx(final)


def test_warmup_cosine_edge_cases():
    # no warm-up: a plain cosine from the peak
    assert warmup_cosine(0, 10, 0, 1.0) == pytest.approx(1.0)
    assert warmup_cosine(5, 10, 0, 1.0) == pytest.approx(0.5)
    assert warmup_cosine(10, 10, 0, 1.0) == pytest.approx(0.0)
    # warm-up as long as the run: warms up, then sits at final
    assert warmup_cosine(4, 5, 5, 1.0, 0.2) == pytest.approx(1.0)
    assert warmup_cosine(5, 5, 5, 1.0, 0.2) == pytest.approx(0.2)
    assert warmup_cosine(0, 0, 0, 1.0, 0.2) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        warmup_cosine(0, 10, -1, 1.0)
    values = [warmup_cosine(s, 50, 5, 1.0) for s in range(50)]
    assert all(v > 0 for v in values)
    assert all(a >= b for a, b in zip(values[5:], values[6:]))  # monotone after warm-up


def test_cosine_ema_momentum():
    base = 0.996
    assert cosine_ema_momentum(0, 1000, base) == pytest.approx(base)
    assert cosine_ema_momentum(1000, 1000, base) == pytest.approx(1.0)
    assert cosine_ema_momentum(2000, 1000, base) == pytest.approx(1.0)
    k, big_k = 250, 1000
    assert cosine_ema_momentum(k, big_k, base) == pytest.approx(
        1 - (1 - base) * (math.cos(math.pi * k / big_k) + 1) / 2)
    assert cosine_ema_momentum(500, 1000, base) == pytest.approx((1 + base) / 2)


def test_cosine_schedule_generic():
    assert cosine_schedule(0, 100, 0.04, 0.4) == pytest.approx(0.04)
    assert cosine_schedule(50, 100, 0.04, 0.4) == pytest.approx(0.22)
    assert cosine_schedule(100, 100, 0.04, 0.4) == pytest.approx(0.4)
    assert cosine_schedule(20, 100, 0.04, 0.4) == pytest.approx(0.4 + (0.04 - 0.4) * (1 + math.cos(0.2 * math.pi)) / 2)


def test_set_lr_and_weight_decay_respect_no_decay_groups():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, groups=4))
    opt = LARS(param_groups(model, 1e-6, depthwise_no_decay=True), lr=0.1)
    set_lr(opt, 0.7)
    set_weight_decay(opt, 0.4)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert all(g["lr"] == 0.7 for g in opt.param_groups)
    assert by_name["regular"]["weight_decay"] == 0.4
    assert by_name["no_decay"]["weight_decay"] == 0.0 and by_name["depthwise"]["weight_decay"] == 0.0
    plain = torch.optim.SGD(model.parameters(), lr=0.1)  # groups without wd_factor take the value as is
    set_weight_decay(plain, 0.3)
    assert plain.param_groups[0]["weight_decay"] == 0.3


def test_warmup_step_decay_is_revisiting_schedule():
    """5 warm-up epochs, then x0.1 at epochs 15 and 25 (10 steps an epoch)."""
    from selfsup.schedules import warmup_step_decay

    lr = [warmup_step_decay(s, 10, 50, 0.4, [15, 25], 0.1) for s in range(350)]
    assert lr[0] == pytest.approx(0.4 / 50) and lr[49] == pytest.approx(0.4)
    assert lr[50] == lr[149] == pytest.approx(0.4)
    assert lr[150] == lr[249] == pytest.approx(0.04)
    assert lr[250] == lr[349] == pytest.approx(0.004)


def test_step_schedule_drives_the_trainer(tmp_path):
    """optim.schedule=step: the learning rates the run logs follow warmup_step_decay."""
    import csv

    from selfsup.config import load_config
    from selfsup.engine.trainer import pretrain
    from tests.conftest import TINY

    cfg = load_config(None, [*TINY, f"out={tmp_path}", "train.steps=8", "train.log_every_steps=1",
                             "data.train_size=32", "optim.name=sgd", "optim.base_lr=1.6", "optim.warmup_steps=2",
                             "optim.schedule=step", "optim.milestones=[1,3]", "optim.gamma=0.5",
                             "monitor.online_linear=false"])
    pretrain(cfg)
    rows = list(csv.DictReader(open(tmp_path / "train_log.csv")))
    lrs = [float(r["lr"]) for r in rows if r.get("lr")]
    # batch 16, peak 1.6 * 16 / 256 = 0.1; 2 steps an epoch; warm-up 2 steps; x0.5 at epoch 1 (step 2), 3 (step 6)
    assert lrs[:8] == pytest.approx([0.05, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025])
