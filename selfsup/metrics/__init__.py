"""Pure metric functions on tensors (top-k accuracy, weighted kNN votes).

They sit below ``engine`` and ``eval`` so that the frozen-backbone probes (:mod:`selfsup.eval`) and the quality monitor
that runs during pretraining (:mod:`selfsup.engine.monitor`) share one implementation and report comparable numbers.
"""

from selfsup.metrics.accuracy import check_labels, topk_accuracy, topk_correct
from selfsup.metrics.knn import knn_classify, knn_eval, knn_scores, nearest_neighbours

__all__ = [
    "check_labels", "topk_accuracy", "topk_correct", "knn_classify", "knn_eval", "knn_scores", "nearest_neighbours",
]
