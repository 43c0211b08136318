"""Handcrafted saliency (RBD, MR, DSR, MC): each finds an obvious object; the pieces match direct computations."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import minimize

from selfsup.saliency import handcrafted as S
from selfsup.saliency.scores import f_measure


def _object_image(seed: int, size: int = 64):
    """A coloured disk (random colour, centre and radius) on a noisy background of another colour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.uniform(0.35, 0.65, 2) * size
    r = rng.uniform(0.15, 0.25) * size
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    bg, fg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    while np.abs(bg - fg).sum() < 0.8:
        fg = rng.uniform(0, 1, 3)
    img = np.clip(bg + 0.05 * rng.standard_normal((size, size, 3)), 0, 1)
    img[disk] = np.clip(fg + 0.05 * rng.standard_normal((int(disk.sum()), 3)), 0, 1)
    return img, disk


@pytest.mark.parametrize("name", list(S.HANDCRAFTED))
def test_each_method_finds_an_obvious_object(name):
    fn = S.handcrafted(name)
    preds, gts = [], []
    for seed in range(4):
        img, disk = _object_image(seed)
        m = fn(img)
        assert m.shape == disk.shape and m.dtype == np.float32
        assert 0.0 <= m.min() and m.max() <= 1.0 and np.isfinite(m).all()
        assert m[disk].mean() > m[~disk].mean() + 0.4, (name, seed)
        preds.append(m)
        gts.append(disk)
    assert f_measure(np.stack(preds), np.stack(gts).astype(np.float32)) > 0.8


@pytest.mark.parametrize("name", list(S.HANDCRAFTED))
def test_uint8_gray_and_blank_inputs(name):
    img, _ = _object_image(0, 32)
    a = S.handcrafted(name)((img * 255).round().astype(np.uint8))
    assert a.shape == (32, 32)
    gray = S.handcrafted(name)(img.mean(2))
    assert gray.shape == (32, 32) and np.isfinite(gray).all()
    blank = S.handcrafted(name)(np.full((32, 32, 3), 0.5))
    assert np.isfinite(blank).all() and blank.min() >= 0 and blank.max() <= 1


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="rbd, mr, dsr, mc"):
        S.handcrafted("hs")


def test_superpixel_graph_statistics_match_a_direct_computation():
    img, _ = _object_image(1, 48)
    g = S.superpixel_graph(img, 60)
    assert set(np.unique(g.labels)) == set(range(g.n))
    assert g.n <= 48 * 48 // S.MIN_SEGMENT_PIXELS
    for k in (0, g.n // 2, g.n - 1):
        np.testing.assert_allclose(g.rgb[k], img[g.labels == k].mean(0), atol=1e-9)
    adj = g.adjacency.toarray()
    assert (adj == adj.T).all() and not adj.diagonal().any()
    # two superpixels are adjacent exactly when some 4-neighbour pixel pair joins them
    a, b = g.labels[:, :-1].ravel(), g.labels[:, 1:].ravel()
    c, d = g.labels[:-1].ravel(), g.labels[1:].ravel()
    direct = np.zeros_like(adj)
    for u, v in zip(np.concatenate([a, c]), np.concatenate([b, d])):
        if u != v:
            direct[u, v] = direct[v, u] = True
    assert (direct == adj).all()
    assert set(np.flatnonzero(g.sides[0])) == set(np.unique(g.labels[0]))
    assert set(np.flatnonzero(g.boundary)) == set(np.unique(np.concatenate(
        [g.labels[0], g.labels[-1], g.labels[:, 0], g.labels[:, -1]])))


def test_rbd_optimisation_is_the_minimiser_of_its_cost():
    rng = np.random.default_rng(0)
    n = 12
    w_bg, w_fg = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    dense = np.triu(rng.uniform(0, 1, (n, n)) * (rng.uniform(size=(n, n)) < 0.4), 1)
    dense = dense + dense.T
    s = S.rbd_optimise(w_bg, w_fg, sp.csr_matrix(dense))

    def cost(x):
        pair = sum(dense[i, j] * (x[i] - x[j]) ** 2 for i in range(n) for j in range(i + 1, n))
        return float((w_bg * x ** 2).sum() + (w_fg * (x - 1) ** 2).sum() + pair)

    best = minimize(cost, np.full(n, 0.5), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(s, best, atol=1e-5)


def test_mr_ranking_inverts_d_minus_alpha_w_with_a_zero_diagonal():
    rng = np.random.default_rng(1)
    w = rng.uniform(0, 1, (8, 8))
    w = (w + w.T) / 2
    np.fill_diagonal(w, 0)
    a = S._ranking(w, 0.99)
    full = np.linalg.inv(np.diag(w.sum(1)) - 0.99 * w)
    np.fill_diagonal(full, 0)
    np.testing.assert_allclose(a, full, rtol=1e-10)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_lasso_codes_match_scikit_learn():
    from sklearn.linear_model import Lasso

    rng = np.random.default_rng(2)
    d = rng.uniform(0, 1, (8, 20))  # 8 features, 20 templates
    x = rng.uniform(0, 1, (5, 8))
    lam = 0.01
    codes = S._lasso_fista(x, d, lam, iters=3000)
    for i in range(5):  # ||x - D a||^2 + lam |a|_1  ==  2f * [(1/2f)||x - D a||^2 + (lam/2f)|a|_1]
        ref = Lasso(alpha=lam / (2 * 8), fit_intercept=False, max_iter=100000, tol=1e-9).fit(d, x[i]).coef_
        obj = lambda a: ((x[i] - d @ a) ** 2).sum() + lam * np.abs(a).sum()  # noqa: E731
        assert obj(codes[i]) <= obj(ref) + 1e-6


def test_bayesian_integration_is_the_posterior():
    rng = np.random.default_rng(3)
    prior = rng.uniform(0, 1, (6, 6))
    other = rng.uniform(0, 1, (6, 6))
    post = S._bayes(prior, other, bins=4)
    fg = prior >= prior.mean()
    for (i, j) in [(0, 0), (2, 3), (5, 5)]:
        b = min(int(other[i, j] * 4), 3)
        bins = np.minimum((other * 4).astype(int), 3)
        like_fg = (bins[fg] == b).mean()
        like_bg = (bins[~fg] == b).mean()
        expect = prior[i, j] * like_fg / (prior[i, j] * like_fg + (1 - prior[i, j]) * like_bg)
        assert post[i, j] == pytest.approx(expect)


def test_saliency_maps_runs_workers_and_reports_throughput():
    imgs = np.stack([(_object_image(s, 32)[0] * 255).round().astype(np.uint8).transpose(2, 0, 1) for s in range(6)])
    seen = []
    one, ips = S.saliency_maps(imgs, "mr", workers=1, chunk=4, progress=seen.append)
    two, _ = S.saliency_maps(imgs, "mr", workers=2, chunk=2)
    assert one.shape == (6, 32, 32) and one.dtype == np.uint8 and ips > 0 and sum(seen) == 6
    np.testing.assert_array_equal(one, two)  # the same maps whatever the process count
    with pytest.raises(ValueError, match="uint8 images"):
        S.saliency_maps(imgs.astype(np.float32), "mr")
