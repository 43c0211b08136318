"""Linear probes: top-k accuracy, the L-BFGS protocol (Revisiting SSL, method-details A6/B 2.4) and the SGD protocol
(RELICv2 App. D.1)."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import nn

from selfsup.config import LinearEvalConfig
from selfsup.errors import DataError, NonFiniteLossError
from selfsup.eval.linear import (
    cosine_lr,
    evaluate_linear_head,
    feature_stats,
    fit_logistic_lbfgs,
    linear_probe_sgd,
    stratified_split,
)
from selfsup.metrics.accuracy import topk_accuracy

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------------------------

def test_topk_accuracy_hand_example():
    scores = torch.tensor([[0.1, 0.7, 0.2],    # label 1: top-1
                           [0.5, 0.3, 0.2],    # label 2: third
                           [0.2, 0.5, 0.3],    # label 2: second
                           [0.4, 0.4, 0.2]])   # label 1: tied with class 0, which ranks first
    labels = torch.tensor([1, 2, 2, 1])
    assert topk_accuracy(scores, labels, ks=(1, 2, 5)) == {"top1": 25.0, "top2": 75.0, "top5": 100.0}
    assert topk_accuracy(scores, torch.tensor([1, 0, 1, 0]), ks=(1,)) == {"top1": 100.0}
    assert math.isnan(topk_accuracy(torch.empty(0, 3), torch.empty(0, dtype=torch.long))["top1"])
    with pytest.raises(DataError):
        topk_accuracy(scores, torch.tensor([1, 2, 3, -1]))


def test_evaluate_linear_head():
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
        head.bias.zero_()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert evaluate_linear_head(head, x, torch.tensor([0, 1, 1]), ks=(1,), batch_size=2) == {"top1": 200 / 3}


# --------------------------------------------------------------------------------------------------------------------
# L-BFGS protocol
# --------------------------------------------------------------------------------------------------------------------

def _blobs(n, num_classes, dim, sep, seed):
    g = torch.Generator().manual_seed(seed)
    centers = sep * torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(1234))
    y = torch.arange(n) % num_classes
    return centers[y] + torch.randn(n, dim, generator=g), y


def test_separable_blobs_reach_100_percent():
    xtr, ytr = _blobs(250, 5, 20, 3.0, seed=0)
    xte, yte = _blobs(100, 5, 20, 3.0, seed=1)
    xtr, xte = 7.0 * xtr + 40.0, 7.0 * xte + 40.0  # scale and offset are undone by the standardisation
    grid = [1e-4, 1e-2, 1.0]
    res = fit_logistic_lbfgs(xtr, ytr, xte, yte, num_classes=5, l2_grid=grid, max_iter=100)
    assert res["top1"] == 100.0 and res["top5"] == 100.0 and res["train_top1"] == 100.0
    assert set(res["val_top1"]) == set(grid) and res["l2"] in grid
    assert res["num_val"] == 25 and res["num_fit"] == 225


@pytest.mark.parametrize("num_classes,dim", [(2, 1), (3, 2)])
def test_fitted_weights_match_scipy_optimum(num_classes, dim):
    """Refit with a single grid value = the minimiser of mean CE + l2/2 ||W||^2 on the standardised train features."""
    g = torch.Generator().manual_seed(3)
    y = torch.arange(60) % num_classes
    x = (torch.randn(num_classes, dim, generator=g)[y] + torch.randn(60, dim, generator=g)).double()
    l2 = 0.05
    res = fit_logistic_lbfgs(x, y, x[:5], y[:5], num_classes=num_classes, l2_grid=[l2], dtype=torch.float64,
                             max_iter=500, return_model=True)

    z = ((x - x.mean(0)) / x.std(0, unbiased=False)).numpy()
    onehot = np.eye(num_classes)[y.numpy()]

    def objective(theta):
        w = theta[:num_classes * dim].reshape(num_classes, dim)
        b = theta[num_classes * dim:]
        logits = z @ w.T + b
        lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        p = np.exp(logits - lse[:, None])
        loss = np.mean(lse - (logits * onehot).sum(1)) + 0.5 * l2 * (w ** 2).sum()
        gl = (p - onehot) / len(z)
        return loss, np.concatenate([(gl.T @ z + l2 * w).ravel(), gl.sum(0)])

    opt = minimize(objective, np.zeros(num_classes * (dim + 1)), jac=True, method="BFGS", options={"gtol": 1e-11})
    w_ref = opt.x[:num_classes * dim].reshape(num_classes, dim)
    b_ref = opt.x[num_classes * dim:]
    np.testing.assert_allclose(res["weight"].numpy(), w_ref, atol=1e-6)
    # The bias is unpenalised and softmax ignores a common shift: compare it up to that shift.
    b = res["bias"].numpy()
    np.testing.assert_allclose(b - b.mean(), b_ref - b_ref.mean(), atol=1e-6)
    assert res["l2"] == l2 and np.abs(w_ref).max() > 0.1


def test_standardisation_uses_train_statistics_only():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(80) % 2
    x = (4.0 * y - 2.0)[:, None] + 0.5 * torch.randn(80, 1, generator=g) + 100.0
    res = fit_logistic_lbfgs(x, y, x, y, num_classes=2, l2_grid=[1e-3], return_model=True)
    mean, std = feature_stats(x)
    torch.testing.assert_close(res["mean"], x.mean(0))
    torch.testing.assert_close(res["std"], x.std(0, unbiased=False))
    torch.testing.assert_close(res["std"], std)
    assert res["top1"] == 100.0
    # The same test points shifted by +10: with the train statistics every one lands on the class-1 side. Had the
    # test set been standardised with its own statistics, the shift would vanish and the accuracy stay at 100%.
    shifted = fit_logistic_lbfgs(x, y, x + 10.0, y, num_classes=2, l2_grid=[1e-3])
    assert shifted["top1"] == 50.0
    # A single test image has no usable statistics of its own; it works with the train ones.
    one = fit_logistic_lbfgs(x, y, x[:1], y[:1], num_classes=2, l2_grid=[1e-3])
    assert one["top1"] == 100.0
    # A constant feature does not divide by zero.
    const = torch.cat([x, torch.ones(80, 1)], 1)
    assert fit_logistic_lbfgs(const, y, const, y, num_classes=2, l2_grid=[1e-3])["top1"] == 100.0


def test_strong_regularisation_wins_on_noise():
    """Features are pure noise (150 useless dims, 200 fitting points) and classes are 80/20: the weakly penalised fit
    memorises the noise and does worse on val than the strongly penalised one, which predicts the majority class."""
    g = torch.Generator().manual_seed(0)
    y = (torch.arange(400) % 10 < 2).long()
    x = torch.randn(400, 150, generator=g)
    res = fit_logistic_lbfgs(x, y, x[:50], y[:50], num_classes=2, l2_grid=[1e-4, 10.0], val_fraction=0.5,
                             max_iter=60)
    assert set(res["val_top1"]) == {1e-4, 10.0}
    assert res["l2"] == 10.0
    assert res["val_top1"][10.0] == 80.0 and res["val_top1"][1e-4] < 75.0


def test_weak_regularisation_wins_on_a_correlated_nuisance():
    """The label shows only in f1 - f2 (both carry the same large nuisance): a strong penalty shrinks W towards the
    class-mean difference (1, 0), which is drowned by the nuisance; a weak one finds (1, -1)."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 2
    nuisance = 5.0 * torch.randn(400, generator=g)
    f1 = nuisance + (y * 2.0 - 1.0) * 0.5 + 0.05 * torch.randn(400, generator=g)
    f2 = nuisance + 0.05 * torch.randn(400, generator=g)
    x = torch.stack([f1, f2], 1)
    res = fit_logistic_lbfgs(x[:300], y[:300], x[300:], y[300:], num_classes=2, l2_grid=[1e-4, 10.0],
                             val_fraction=0.25, max_iter=200)
    assert set(res["val_top1"]) == {1e-4, 10.0}
    assert res["l2"] == 1e-4
    assert res["val_top1"][1e-4] > 95.0 and res["val_top1"][10.0] < 70.0
    assert res["top1"] > 95.0


def test_ties_go_to_the_larger_l2():
    xtr, ytr = _blobs(100, 2, 3, 5.0, seed=0)  # every strength separates these perfectly
    res = fit_logistic_lbfgs(xtr, ytr, xtr, ytr, num_classes=2, l2_grid=[1e-3, 1e-1, 1e-2], max_iter=50)
    assert all(v == 100.0 for v in res["val_top1"].values())
    assert res["l2"] == 1e-1


def test_stratified_split():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20 + [3])
    fit, val = stratified_split(y, 0.1, seed=5)
    assert torch.equal(torch.sort(torch.cat([fit, val])).values, torch.arange(len(y)))
    assert [int((y[val] == c).sum()) for c in range(4)] == [5, 3, 2, 0]  # a singleton class stays in fit
    fit2, val2 = stratified_split(y, 0.1, seed=5)
    assert torch.equal(val, val2) and torch.equal(fit, fit2)
    assert not torch.equal(val, stratified_split(y, 0.1, seed=6)[1])


def test_lbfgs_refuses_bad_labels():
    x, y = _blobs(20, 2, 3, 1.0, seed=0)
    with pytest.raises(DataError):
        fit_logistic_lbfgs(x, y - 1, x, y, num_classes=2, l2_grid=[1e-3])


# --------------------------------------------------------------------------------------------------------------------
# SGD protocol
# --------------------------------------------------------------------------------------------------------------------

class QuadrantImages(torch.utils.data.Dataset):
    """Noisy 16x16 images of 4 classes: class c brightens quadrant c (top-left, top-right, bottom-left, bottom-right).
    """

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 4
        images = 60.0 + 40.0 * torch.rand(n, 3, 16, 16, generator=g)
        for i, c in enumerate(self.labels.tolist()):
            r, q = divmod(c, 2)
            images[i, :, 8 * r:8 * r + 8, 8 * q:8 * q + 8] += 100.0
        self.images = images.round().to(torch.uint8)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": int(self.labels[i])}

    def __getitems__(self, idx):
        return [self[i] for i in idx]


class TinyNet(nn.Module):
    """A fixed random conv backbone with BatchNorm; pooled 2x2 so that quadrant information survives (32 features)."""

    def __init__(self, declare_width=True):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())
        if declare_width:
            self.num_features = 32

    def forward(self, x):
        return self.body(x)


def _normalise(images):
    return (images.float() / 255.0 - 0.5) / 0.25


def _train_transform(images, generator):
    # A flip would swap quadrants (classes), so the caller's augmentation here is a small random shift + noise.
    dy, dx = torch.randint(-1, 2, (2,), generator=generator).tolist()
    x = _normalise(torch.roll(images, shifts=(dy, dx), dims=(2, 3)))
    return x + 0.05 * torch.randn(x.shape, generator=generator).to(x.device)  # CPU generator, any device


def _cfg(**kw):
    base = dict(protocol="sgd", epochs=4, batch_size=32, base_lr=4.0)
    base.update(kw)
    return LinearEvalConfig(**base)


@pytest.mark.parametrize("declare_width", [True, False])
def test_sgd_probe_learns_and_leaves_backbone_untouched(declare_width):
    torch.manual_seed(0)
    net = TinyNet(declare_width).train()  # in train mode: the probe must switch BN to eval and back
    before = {k: v.clone() for k, v in net.state_dict().items()}
    steps = []
    cfg = _cfg()
    res = linear_probe_sgd(net, QuadrantImages(256, 0), QuadrantImages(96, 1), train_transform=_train_transform,
                           test_transform=_normalise, num_classes=4, cfg=cfg, seed=0, progress=declare_width,
                           log_fn=steps.append)
    assert res["top1"] >= 95.0 and res["top5"] == 100.0, res
    assert res["epochs"] == 4 and res["steps"] == 4 * 8 == len(steps)
    assert math.isfinite(res["train_loss"]) and res["train_loss"] < 0.5
    # Frozen: parameters and BN running statistics bitwise unchanged, no gradients, original mode back.
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in net.parameters())
    assert net.training and all(m.training for m in net.modules())
    # lr = base_lr * batch / 256 with a per-step cosine to 0 and no warm-up.
    peak = 4.0 * 32 / 256
    assert res["lr"] == peak and steps[0]["lr"] == peak
    for s in steps:
        assert s["lr"] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * (s["step"] - 1) / 32)))
    assert res["final_lr"] == pytest.approx(0.0, abs=1e-12)
    assert steps[-1]["lr"] < 0.01 * peak


def test_sgd_probe_is_reproducible_and_seeded():
    cfg = _cfg(epochs=1)
    data = QuadrantImages(64, 0), QuadrantImages(32, 1)
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(0)
        losses = []
        linear_probe_sgd(TinyNet(), *data, train_transform=_train_transform, test_transform=_normalise,
                         num_classes=4, cfg=cfg, seed=seed, progress=False, log_fn=lambda s: losses.append(s["loss"]))
        runs.append(losses)
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_sgd_probe_divergence_is_reported():
    with pytest.raises(NonFiniteLossError):
        linear_probe_sgd(TinyNet(), QuadrantImages(64, 0), QuadrantImages(8, 1), train_transform=_train_transform,
                         test_transform=_normalise, num_classes=4, cfg=_cfg(epochs=2, base_lr=3e38), progress=False)


def test_cosine_lr():
    assert cosine_lr(0, 10, 2.0) == 2.0
    assert cosine_lr(5, 10, 2.0) == pytest.approx(1.0)
    assert cosine_lr(10, 10, 2.0) == pytest.approx(0.0, abs=1e-15)
    assert cosine_lr(10, 10, 2.0, 1e-6) == pytest.approx(1e-6)  # SSLight's floor
    assert cosine_lr(5, 10, 2.0, 0.5) == pytest.approx(1.25)


def test_lars_probe_learns_and_excludes_the_bias(monkeypatch):
    """eval.linear.optimizer=lars (SSLight's CNN probe): a LARS optimiser whose bias group skips the trust ratio and
    the decay; it learns the task like SGD and ends at final_lr."""
    from selfsup.engine.optim import LARS

    made = []
    original = LARS.__init__

    def spy(self, params, **kw):
        original(self, params, **kw)
        made.append(self)

    monkeypatch.setattr(LARS, "__init__", spy)
    steps = []
    torch.manual_seed(0)
    res = linear_probe_sgd(TinyNet(), QuadrantImages(256, 0), QuadrantImages(96, 1), train_transform=_train_transform,
                           test_transform=_normalise, num_classes=4, seed=0, progress=False, log_fn=steps.append,
                           cfg=_cfg(optimizer="lars", base_lr=8.0, final_lr=1e-3, weight_decay=1e-4, epochs=8,
                                    trust_coefficient=0.2,
                                    nesterov=False))
    assert len(made) == 1
    weight_group, bias_group = made[0].param_groups
    assert weight_group["params"][0].ndim == 2 and not weight_group["lars_exclude"]
    assert bias_group["params"][0].ndim == 1 and bias_group["lars_exclude"] and bias_group["weight_decay"] == 0.0
    assert weight_group["weight_decay"] == 1e-4 and weight_group["trust_coefficient"] == 0.2
    assert res["top1"] >= 90.0, res
    assert res["final_lr"] == pytest.approx(1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_probes_on_cuda():
    xtr, ytr = _blobs(250, 5, 20, 3.0, seed=0)
    xte, yte = _blobs(100, 5, 20, 3.0, seed=1)
    cpu = fit_logistic_lbfgs(xtr, ytr, xte, yte, num_classes=5, l2_grid=[1e-3, 1e-1], max_iter=100)
    gpu = fit_logistic_lbfgs(xtr.cuda(), ytr.cuda(), xte.cuda(), yte.cuda(), num_classes=5, l2_grid=[1e-3, 1e-1],
                             max_iter=100, device="cuda")
    assert gpu["top1"] == cpu["top1"] == 100.0 and gpu["l2"] == cpu["l2"]
    torch.manual_seed(0)
    net = TinyNet().cuda().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    res = linear_probe_sgd(net, QuadrantImages(256, 0), QuadrantImages(96, 1), train_transform=_train_transform,
                           test_transform=_normalise, num_classes=4, cfg=_cfg(), device="cuda", progress=False,
                           amp=True)
    assert res["top1"] >= 90.0
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items()) and net.training
