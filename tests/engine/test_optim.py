"""LARS against a hand computation, parameter groups, and the optimiser factory."""

import math

import pytest
import torch
import torch.nn as nn

from selfsup.config import OptimConfig
from selfsup.engine.optim import LARS, build_optimizer, param_groups
from selfsup.errors import ConfigError


def _norm(values):
    return math.sqrt(sum(v * v for v in values))


def test_lars_one_step_by_hand():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    b = nn.Parameter(torch.tensor([1.0, -2.0]))
    z = nn.Parameter(torch.zeros(2))  # zero norm: trust ratio 1
    w.grad = torch.tensor([0.6, -0.8])
    b.grad = torch.tensor([0.5, 0.5])
    z.grad = torch.tensor([1.0, 2.0])
    lr, wd, eta, mom = 0.5, 0.1, 0.01, 0.9
    opt = LARS([
        dict(params=[w, z], weight_decay=wd, lars_exclude=False),
        dict(params=[b], weight_decay=0.0, lars_exclude=True),
    ], lr=lr, momentum=mom, trust_coefficient=eta)
    opt.step()
    # regular weight: d = g + wd * p, scaled by eta ||p|| / ||d||
    d = [0.6 + wd * 3.0, -0.8 + wd * 4.0]
    ratio = eta * 5.0 / _norm(d)
    expected_w = [3.0 - lr * ratio * d[0], 4.0 - lr * ratio * d[1]]
    assert torch.allclose(w.detach(), torch.tensor(expected_w), atol=1e-6)
    # excluded bias: plain momentum SGD step
    assert torch.allclose(b.detach(), torch.tensor([1.0 - lr * 0.5, -2.0 - lr * 0.5]), atol=1e-6)
    # zero-norm param: ratio 1, d = g
    assert torch.allclose(z.detach(), torch.tensor([-lr * 1.0, -lr * 2.0]), atol=1e-6)
    # gradients are not modified in place
    assert torch.equal(w.grad, torch.tensor([0.6, -0.8]))

    # second step: momentum carries over, mu = mom * mu + d
    mu_w = [ratio * d[0], ratio * d[1]]
    p1 = list(expected_w)
    w.grad = torch.tensor([0.2, 0.1])
    opt.step()
    d2 = [0.2 + wd * p1[0], 0.1 + wd * p1[1]]
    ratio2 = eta * _norm(p1) / _norm(d2)
    mu2 = [mom * mu_w[i] + ratio2 * d2[i] for i in range(2)]
    expected_w2 = [p1[i] - lr * mu2[i] for i in range(2)]
    assert torch.allclose(w.detach(), torch.tensor(expected_w2), atol=1e-6)
    mu_b = [mom * 0.5 + 0.5, mom * 0.5 + 0.5]
    assert torch.allclose(b.detach(), torch.tensor([1.0 - lr * 0.5 - lr * mu_b[0], -2.0 - lr * 0.5 - lr * mu_b[1]]),
                          atol=1e-6)


def test_lars_skips_params_without_grad():
    p = nn.Parameter(torch.ones(3))
    q = nn.Parameter(torch.ones(3))
    q.grad = torch.ones(3)
    opt = LARS([p, q], lr=0.1)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3)) and p not in opt.state
    assert not torch.equal(q.detach(), torch.ones(3))


def test_lars_excluded_without_decay_equals_sgd_momentum():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    b = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    b.load_state_dict(a.state_dict())
    opt_a = LARS(a.parameters(), lr=0.1, momentum=0.9, weight_decay=0.0, lars_exclude=True)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, nesterov=False)
    for _ in range(4):
        x = torch.randn(8, 5)
        for m, o in ((a, opt_a), (b, opt_b)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, groups=8, bias=True)
        self.fc = nn.Linear(8, 4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def test_param_groups_assignment():
    net = _Net()
    groups = {g["name"]: g for g in param_groups(net, 0.05)}
    ids = {k: {id(p) for p in g["params"]} for k, g in groups.items()}
    assert set(groups) == {"regular", "no_decay"}
    assert ids["regular"] == {id(net.conv.weight), id(net.dw.weight), id(net.fc.weight)}
    assert ids["no_decay"] == {id(net.bn.weight), id(net.bn.bias), id(net.dw.bias), id(net.fc.bias)}
    assert (groups["regular"]["weight_decay"], groups["regular"]["wd_factor"], groups["regular"]["lars_exclude"]) \
        == (0.05, 1.0, False)
    assert (groups["no_decay"]["weight_decay"], groups["no_decay"]["wd_factor"], groups["no_decay"]["lars_exclude"]) \
        == (0.0, 0.0, True)

    groups = {g["name"]: g for g in param_groups(net, 0.05, depthwise_no_decay=True)}
    assert [p is net.dw.weight for p in groups["depthwise"]["params"]] == [True]
    assert (groups["depthwise"]["weight_decay"], groups["depthwise"]["lars_exclude"]) == (0.0, False)
    assert {id(p) for p in groups["regular"]["params"]} == {id(net.conv.weight), id(net.fc.weight)}
    every = [id(p) for g in groups.values() for p in g["params"]]
    assert len(every) == len(set(every)) == 7  # frozen Linear skipped, nothing twice


def test_param_groups_drops_empty_groups():
    groups = param_groups(nn.Linear(3, 3, bias=False), 0.1)
    assert [g["name"] for g in groups] == ["regular"]


@pytest.mark.parametrize("name,cls", [("lars", LARS), ("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_build_optimizer(name, cls):
    net = _Net()
    opt = build_optimizer(net, OptimConfig(name=name, weight_decay=0.01, momentum=0.8), lr=0.3)
    assert isinstance(opt, cls)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["regular"]["weight_decay"] == 0.01 and by_name["no_decay"]["weight_decay"] == 0.0
    assert all(g["lr"] == 0.3 for g in opt.param_groups)
    if name in ("lars", "sgd"):
        assert all(g["momentum"] == 0.8 for g in opt.param_groups)
    if name == "lars":
        assert all(g["trust_coefficient"] == 1e-3 for g in opt.param_groups)
    loss = net.fc(net.dw(net.bn(net.conv(torch.randn(2, 3, 8, 8)))).mean((2, 3))).sum()
    loss.backward()
    opt.step()


def test_build_optimizer_refuses_lars_nesterov():
    with pytest.raises(ConfigError, match="nesterov"):
        build_optimizer(_Net(), OptimConfig(name="lars", nesterov=True), lr=0.1)
