"""Weighted kNN (Wu et al. 2018; DINO eval_knn) against a direct per-image loop, chunking, ties and k clamping."""

import numpy as np
import pytest
import torch

from selfsup.errors import DataError
from selfsup.metrics.knn import knn_classify, knn_eval, knn_scores

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_knn(train_x, train_y, test_x, test_y, k, temperature, num_classes):
    """One test image at a time: cosine similarities, the k most similar (stable order), exp(s/T) votes per class,
    classes ranked by votes with ties to the lower class index. Returns (scores, top1 %, top5 %)."""
    tr = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    te = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    k = min(k, len(tr))
    scores = np.zeros((len(te), num_classes))
    hit1 = hit5 = 0
    for i, q in enumerate(te):
        sims = tr @ q
        nearest = np.argsort(-sims, kind="stable")[:k]
        for j in nearest:
            scores[i, train_y[j]] += np.exp(sims[j] / temperature)
        ranking = sorted(range(num_classes), key=lambda c: (-scores[i, c], c))
        hit1 += test_y[i] in ranking[:1]
        hit5 += test_y[i] in ranking[:5]
    return scores, 100.0 * hit1 / len(te), 100.0 * hit5 / len(te)


def _data(seed=0, n_train=150, n_test=60, dim=12, num_classes=8):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=g)
    ytr = torch.randint(0, num_classes, (n_train,), generator=g)
    yte = torch.randint(0, num_classes, (n_test,), generator=g)
    xtr = centers[ytr] + 1.5 * torch.randn(n_train, dim, generator=g)
    xte = centers[yte] + 1.5 * torch.randn(n_test, dim, generator=g)
    return xtr.double(), ytr, xte.double(), yte


@pytest.mark.parametrize("k", [1, 3, 20, 1000])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_matches_direct_loop(k, temperature):
    xtr, ytr, xte, yte = _data()
    scores, top1, top5 = reference_knn(xtr.numpy(), ytr.numpy(), xte.numpy(), yte.numpy(), k, temperature, 8)
    got = knn_classify(xtr, ytr, xte, yte, k=k, temperature=temperature, num_classes=8)
    ours = knn_scores(xtr, ytr, xte, ks=(k,), temperature=temperature, num_classes=8)[k]
    np.testing.assert_allclose(ours.numpy(), scores, rtol=1e-9)
    assert got["top1"] == pytest.approx(top1)
    assert got["top5"] == pytest.approx(top5)
    assert 0 < got["top1"] < 100  # a non-trivial case


def test_weights_matter():
    # Two far neighbours of class 1 against one very close neighbour of class 0: the plain majority says 1, the
    # exp(s / T) weighting says 0.
    train = torch.tensor([[1.0, 0.0], [0.3, 1.0], [0.3, -1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[1.0, 0.01]], dtype=torch.float64)
    assert knn_classify(train, labels, test, torch.tensor([0]), k=3, temperature=0.07, num_classes=2)["top1"] == 100
    assert knn_classify(train, labels, test, torch.tensor([1]), k=3, temperature=100.0, num_classes=2)["top1"] == 100


def test_tied_votes_go_to_the_lower_class():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([1, 0])
    test = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # equidistant: equal votes for classes 0 and 1
    res = knn_classify(train, labels, test, torch.tensor([0, 1]), k=2, num_classes=3)
    assert res["top1"] == 50.0  # class 0 wins the tie: right for the first image, wrong for the second
    assert res["top5"] == 100.0  # k = 5 > 3 classes is clamped
    _, top1, _ = reference_knn(train.numpy(), labels.numpy(), test.numpy(), np.array([0, 1]), 2, 0.07, 3)
    assert top1 == 50.0


def test_chunking_gives_identical_results():
    xtr, ytr, xte, yte = _data(seed=1, n_test=97)
    xtr, xte = xtr.float(), xte.float()
    full = knn_scores(xtr, ytr, xte, ks=(5, 20), num_classes=8, chunk_size=4096)
    small = knn_scores(xtr, ytr, xte, ks=(5, 20), num_classes=8, chunk_size=7)
    for k in (5, 20):
        torch.testing.assert_close(small[k], full[k], rtol=1e-6, atol=0)
    assert knn_eval(xtr, ytr, xte, yte, ks=(5, 20), num_classes=8, chunk_size=7) == \
        knn_eval(xtr, ytr, xte, yte, ks=(5, 20), num_classes=8, chunk_size=4096)


def test_knn_eval_matches_single_k_and_clamps():
    xtr, ytr, xte, yte = _data(seed=2, n_train=30)
    res = knn_eval(xtr, ytr, xte, yte, ks=(3, 30, 200), num_classes=8)
    assert set(res) == {3, 30, 200}
    assert res[3] == knn_classify(xtr, ytr, xte, yte, k=3, num_classes=8)
    assert res[200] == res[30]  # k above N_train uses all 30 neighbours


def test_unlabelled_train_images_are_refused():
    xtr, ytr, xte, yte = _data()
    ytr[0] = -1
    with pytest.raises(DataError, match="unlabelled"):
        knn_classify(xtr, ytr, xte, yte, k=5, num_classes=8)


def test_nearest_neighbours_are_the_most_cosine_similar():
    from selfsup.metrics import nearest_neighbours

    gen = torch.Generator().manual_seed(0)
    train, test = torch.randn(50, 8, generator=gen), torch.randn(7, 8, generator=gen)
    got = nearest_neighbours(train, test, k=5, chunk_size=3)
    cos = torch.nn.functional.normalize(test, dim=1) @ torch.nn.functional.normalize(train, dim=1).T
    for q in range(7):
        assert got[q].tolist() == cos[q].argsort(descending=True)[:5].tolist()
    assert nearest_neighbours(train[:3], test, k=5).shape == (7, 3)  # k is clamped to the bank
