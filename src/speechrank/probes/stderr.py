"""Standard errors of probe accuracies, clustered by utterance.

A probe's test accuracy is an estimate from a finite test set, so every score carries a
standard error. Frames of one utterance share its speaker, noise and words, so they are not
independent draws: a frame probe scored on 5,000 frames of 20 sentences has far less evidence
than 5,000 independent items, and the binomial formula would overstate its precision.

We use the cluster-robust (sandwich) standard error of a ratio estimator (e.g. Cameron and
Miller, "A Practitioner's Guide to Cluster-Robust Inference", J. Human Resources 2015): with
``c_g`` correct items and ``n_g`` items in cluster ``g`` (``G`` clusters), the accuracy is
``p = sum c_g / sum n_g`` and

    SE(p) = sqrt( G / (G - 1) * sum_g (c_g - p n_g)^2 ) / sum_g n_g.

With one item per cluster (utterance-level tasks) this is ``sqrt(p (1 - p) / (n - 1))``, the
binomial standard error with the usual small-sample correction. Nothing here is in
scikit-learn or SciPy in this form, hence the few lines of our own.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SE_METHOD", "clustered_accuracy_se"]

#: How :func:`clustered_accuracy_se` computes, recorded beside every standard error.
SE_METHOD = "cluster-robust by utterance, G/(G-1) corrected"


def clustered_accuracy_se(correct: np.ndarray, clusters: np.ndarray | None = None) -> float:
    """Standard error of ``mean(correct)`` with items grouped by ``clusters`` (one cluster per
    item when ``None``). ``NaN`` with fewer than two clusters."""
    hits = np.asarray(correct, dtype=np.float64).ravel()
    if hits.size == 0:
        return math.nan
    if clusters is None:
        ids = np.arange(hits.size)
    else:
        ids = np.unique(np.asarray(clusters).ravel(), return_inverse=True)[1]
        if ids.size != hits.size:
            raise ValueError("correct and clusters must have the same length")
    n_clusters = int(ids.max()) + 1
    if n_clusters < 2:
        return math.nan
    per_cluster_hits = np.bincount(ids, weights=hits, minlength=n_clusters)
    per_cluster_items = np.bincount(ids, minlength=n_clusters).astype(np.float64)
    p = per_cluster_hits.sum() / hits.size
    residual = per_cluster_hits - p * per_cluster_items
    variance = n_clusters / (n_clusters - 1) * float(np.sum(residual ** 2))
    return math.sqrt(variance) / hits.size
