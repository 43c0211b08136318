"""DINO loss (method-details B 1.2, 1.4) against direct, loop-based computations."""

import math

import pytest
import torch

from selfsup.losses import dino_multiview_loss, dino_pair_loss, dino_teacher_probs, update_center


def _softmax(row):
    m = max(row)
    e = [math.exp(x - m) for x in row]
    return [x / sum(e) for x in e]


def _loop_probs(teacher, center, t_t):
    return [_softmax([(float(x) - float(c)) / t_t for x, c in zip(row, center.flatten())]) for row in teacher.double()]


def _loop_ce(student, probs, t_s):
    """mean_b sum_k -p[b][k] * log softmax(s[b] / T_s)[k], one number at a time."""
    total = 0.0
    for row, p in zip(student.double(), probs):
        z = [float(x) / t_s for x in row]
        m = max(z)
        log_norm = m + math.log(sum(math.exp(x - m) for x in z))
        total += sum(-pk * (zk - log_norm) for pk, zk in zip(p, z))
    return total / len(probs)


def _views(n, batch=5, k=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [3 * torch.randn(batch, k, generator=g) for _ in range(n)]


def test_teacher_probs_match_loops_and_carry_no_gradient():
    (teacher,) = _views(1)
    teacher.requires_grad_(True)
    center = torch.randn(1, 7, generator=torch.Generator().manual_seed(1))
    p = dino_teacher_probs(teacher, center, temperature=0.04)
    assert not p.requires_grad and p.dtype == torch.float32
    expected = torch.tensor(_loop_probs(teacher.detach(), center, 0.04), dtype=torch.float32)
    assert torch.allclose(p, expected, atol=1e-6)
    # a centre of shape (K,) is the same
    assert torch.allclose(dino_teacher_probs(teacher, center[0], temperature=0.04), p)


def test_pair_loss_matches_loops():
    student, teacher = _views(2, seed=2)
    center = 0.5 * torch.ones(7)
    for t_t, t_s in [(0.04, 0.1), (0.07, 0.1), (1.0, 0.5)]:
        probs = dino_teacher_probs(teacher, center, temperature=t_t)
        got = dino_pair_loss(student, probs, temperature=t_s)
        expected = _loop_ce(student, _loop_probs(teacher, center, t_t), t_s)
        assert got.item() == pytest.approx(expected, rel=1e-5)


def _loop_terms(student_large, student_small, teacher_large, center, t_t, t_s):
    """DINO's loop (SSLight ``utils/loss.py``): every teacher global iq against every student view v != iq."""
    students = [*student_large, *student_small]
    gg, gl = [], []
    for iq, t in enumerate(teacher_large):
        probs = _loop_probs(t, center, t_t)
        for v, s in enumerate(students):
            if v == iq:
                continue
            (gg if v < len(student_large) else gl).append(_loop_ce(s, probs, t_s))
    return gg, gl


@pytest.mark.parametrize("num_large,num_small", [(2, 6), (2, 0), (3, 2)])
def test_multiview_loss_matches_loop_over_pairs(num_large, num_small):
    sl, ss, tl = _views(num_large, seed=3), _views(num_small, seed=4), _views(num_large, seed=5)
    center = torch.randn(7, generator=torch.Generator().manual_seed(6))
    probs = [dino_teacher_probs(t, center, temperature=0.05) for t in tl]
    gg, gl = _loop_terms(sl, ss, tl, center, 0.05, 0.1)
    assert len(gg) == num_large * (num_large - 1) and len(gl) == num_large * num_small
    plain = dino_multiview_loss(sl, ss, probs, temperature=0.1)
    assert plain.item() == pytest.approx(sum(gg + gl) / len(gg + gl), rel=1e-5)
    if num_small:
        rebalanced = dino_multiview_loss(sl, ss, probs, temperature=0.1, alpha=0.4)
        assert rebalanced.item() == pytest.approx(0.4 * sum(gg) / len(gg) + 0.6 * sum(gl) / len(gl), rel=1e-5)


def test_baseline_is_sslight_two_fourteenths_weighting():
    """SSLight's baseline LAMBDAS (1/7, 6/7) for 2 global + 6 local views: 2 gg and 12 gl terms."""
    sl, ss, tl = _views(2, seed=7), _views(6, seed=8), _views(2, seed=9)
    center = torch.zeros(7)
    probs = [dino_teacher_probs(t, center, temperature=0.04) for t in tl]
    gg, gl = _loop_terms(sl, ss, tl, center, 0.04, 0.1)
    assert (len(gg), len(gl)) == (2, 12)
    baseline = dino_multiview_loss(sl, ss, probs, temperature=0.1, alpha=None)
    assert baseline.item() == pytest.approx(2 / 14 * sum(gg) / 2 + 12 / 14 * sum(gl) / 12, rel=1e-5)
    assert dino_multiview_loss(sl, ss, probs, temperature=0.1, alpha=2 / 14).item() == pytest.approx(baseline.item())


def test_gradient_reaches_student_only():
    sl, ss, tl = _views(2, seed=10), _views(1, seed=11), _views(2, seed=12)
    for x in [*sl, *ss, *tl]:
        x.requires_grad_(True)
    probs = [dino_teacher_probs(t, torch.zeros(7), temperature=0.04) for t in tl]
    dino_multiview_loss(sl, ss, probs, temperature=0.1).backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in [*sl, *ss])
    assert all(t.grad is None for t in tl)


def test_loss_is_float32_under_bf16_autocast():
    student, teacher = _views(2, seed=13)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        probs = dino_teacher_probs(teacher.bfloat16(), torch.zeros(7), temperature=0.04)
        loss = dino_pair_loss(student.bfloat16(), probs, temperature=0.1)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_update_center_is_the_ema_formula_and_pure():
    center = torch.tensor([[1.0, -2.0, 0.5]])
    batch_mean = torch.tensor([[3.0, 0.0, -1.0]])
    new = update_center(center, batch_mean, 0.9)
    assert torch.allclose(new, torch.tensor([[0.9 * 1 + 0.1 * 3, 0.9 * -2 + 0.1 * 0, 0.9 * 0.5 + 0.1 * -1]]))
    assert torch.equal(center, torch.tensor([[1.0, -2.0, 0.5]]))  # input untouched
    assert torch.equal(update_center(center, batch_mean, 1.0), center)
    assert torch.equal(update_center(center, batch_mean, 0.0), batch_mean)
    with pytest.raises(ValueError):
        update_center(center, batch_mean, 1.5)


def test_bad_inputs_raise():
    student, teacher = _views(2, seed=14)
    with pytest.raises(ValueError):
        dino_teacher_probs(teacher, torch.zeros(7), temperature=0.0)
    with pytest.raises(ValueError):
        dino_pair_loss(student[:, :3], teacher, temperature=0.1)
