"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018, "Unsupervised feature learning via
non-parametric instance discrimination", section 3.4; the same rule as DINO's ``eval_knn.py``).

Train and test features are L2-normalised, so the similarity is the cosine. Each test image takes its ``k`` most similar
train images; neighbour ``i`` votes for its class with weight ``exp(s_i / temperature)`` (tau = 0.07 in both
references), and the classes are ranked by their summed votes. Test images are processed in chunks of ``chunk_size``
so that the ``(chunk, N_train)`` similarity block bounds the memory. Ties between class scores go to the lower class
index (:mod:`selfsup.metrics.accuracy`).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from selfsup.metrics.accuracy import check_labels, topk_accuracy


def _prepare(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, num_classes: int,
             device: Optional[Union[str, torch.device]]):
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"features must be (N, F) with the same F, got {tuple(train_x.shape)} and "
                         f"{tuple(test_x.shape)}")
    if train_x.shape[0] != train_y.shape[0]:
        raise ValueError(f"{train_x.shape[0]} train features but {train_y.shape[0]} labels")
    if train_x.shape[0] == 0:
        raise ValueError("kNN needs at least one train feature")
    check_labels(train_y, num_classes, "train labels")
    device = torch.device(device) if device is not None else train_x.device
    dtype = torch.float64 if train_x.dtype == torch.float64 else torch.float32
    train_n = F.normalize(train_x.to(device=device, dtype=dtype), dim=1)
    test_n = F.normalize(test_x.to(device=device, dtype=dtype), dim=1)
    return train_n, train_y.to(device=device, dtype=torch.long), test_n


def knn_scores(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, *, ks: Sequence[int] = (20,),
               temperature: float = 0.07, num_classes: int, chunk_size: int = 1024,
               device: Optional[Union[str, torch.device]] = None) -> Dict[int, torch.Tensor]:
    """Class scores ``(N_test, C)`` (summed ``exp(cos / temperature)`` votes of the k nearest train features) for each
    ``k`` in ``ks``, on ``device`` (default: that of ``train_x``).

    The neighbours are found once per chunk for the largest k (``torch.topk`` returns them sorted by similarity, so the
    first k of them are the k nearest); a ``k`` above ``N_train`` is clamped to ``N_train``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"k values must be >= 1, got {list(ks)}")
    train_n, train_y, test_n = _prepare(train_x, train_y, test_x, num_classes, device)
    n_train = train_n.shape[0]
    ks = [int(k) for k in ks]
    kmax = min(max(ks), n_train)
    out = {k: torch.zeros(test_n.shape[0], num_classes, dtype=train_n.dtype, device=train_n.device) for k in ks}
    for start, sims, idx in _topk_chunks(train_n, test_n, kmax, chunk_size):
        weights = (sims / temperature).exp()
        classes = train_y[idx]
        for k in ks:
            kk = min(k, n_train)
            out[k][start:start + idx.shape[0]].scatter_add_(1, classes[:, :kk], weights[:, :kk])
    return out


def _topk_chunks(train_n: torch.Tensor, test_n: torch.Tensor, k: int, chunk_size: int):
    """``(start, similarities, indices)`` of the ``k`` most similar (unit-norm) train rows, chunk by chunk of tests."""
    for start in range(0, test_n.shape[0], chunk_size):
        sims, idx = (test_n[start:start + chunk_size] @ train_n.T).topk(k, dim=1, largest=True, sorted=True)
        yield start, sims, idx


def nearest_neighbours(train_x: torch.Tensor, test_x: torch.Tensor, k: int = 5,
                       chunk_size: int = 1024) -> torch.Tensor:
    """Indices ``(N_test, k)`` of each test feature's ``k`` most cosine-similar train features, nearest first (the
    neighbours that :func:`knn_scores` votes with)."""
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"features must be (N, F) with the same F, got {tuple(train_x.shape)} and "
                         f"{tuple(test_x.shape)}")
    train_n, test_n = F.normalize(train_x.float(), dim=1), F.normalize(test_x.float(), dim=1)
    k = min(int(k), train_n.shape[0])
    return torch.cat([idx for _, _, idx in _topk_chunks(train_n, test_n, k, chunk_size)])


def knn_eval(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
             ks: Sequence[int] = (20, 200), temperature: float = 0.07, num_classes: int, chunk_size: int = 1024,
             device: Optional[Union[str, torch.device]] = None) -> Dict[int, Dict[str, float]]:
    """Weighted kNN top-1/top-5 accuracy (percent) for every ``k`` in ``ks``: ``{20: {"top1": .., "top5": ..}, ...}``.

    One similarity pass serves all the k values (see :func:`knn_scores`).
    """
    if test_x.shape[0] != test_y.shape[0]:
        raise ValueError(f"{test_x.shape[0]} test features but {test_y.shape[0]} labels")
    check_labels(test_y, num_classes, "test labels")
    scores = knn_scores(train_x, train_y, test_x, ks=ks, temperature=temperature, num_classes=num_classes,
                        chunk_size=chunk_size, device=device)
    return {k: topk_accuracy(s, test_y.to(s.device), ks=(1, 5)) for k, s in scores.items()}


def knn_classify(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                 k: int = 20, temperature: float = 0.07, num_classes: int, chunk_size: int = 1024,
                 device: Optional[Union[str, torch.device]] = None) -> Dict[str, float]:
    """Weighted kNN accuracy for one ``k``: ``{"top1": .., "top5": ..}`` in percent (Wu et al. 2018; DINO eval_knn)."""
    return knn_eval(train_x, train_y, test_x, test_y, ks=(k,), temperature=temperature, num_classes=num_classes,
                    chunk_size=chunk_size, device=device)[int(k)]
