"""k-means inertia and Davies-Bouldin of frames: known answers, invariances, the row store."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speechrank.metrics.cluster import MIN_ROWS_PER_CLUSTER, ClusterRows, cluster_metrics
from speechrank.metrics.convergence import row_keys


def _blobs(k: int, per: int, dim: int, spread: float, sigma: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.zeros((k, dim))
    centres[np.arange(k), np.arange(k) % dim] = spread  # orthogonal, equally far apart
    labels = np.repeat(np.arange(k), per)
    return (centres[labels] + sigma * rng.standard_normal((k * per, dim))).astype(np.float32)


def test_planted_blobs_give_the_known_inertia_share():
    k, per, dim, spread, sigma = 8, 100, 16, 20.0, 0.5
    X = _blobs(k, per, dim, spread, sigma)
    out = cluster_metrics(X, n_clusters=k, seed=0)
    # within-cluster SS per row = dim sigma^2; total = that + the centres' spread about their
    # mean: spread^2 (1 - 1/k) per row (orthogonal centres of norm `spread`).
    within = dim * sigma**2
    expected = within / (within + spread**2 * (1 - 1 / k))
    assert out["kmeans_inertia"].value == pytest.approx(expected, rel=0.05)
    # Davies-Bouldin: scatter ~ sigma sqrt(dim) per cluster, centres spread sqrt(2) apart
    db = 2 * sigma * math.sqrt(dim) * 0.99 / (spread * math.sqrt(2))
    assert out["davies_bouldin"].value == pytest.approx(db, rel=0.1)
    assert out["kmeans_inertia"].conventions["n_clusters"] == k


def test_values_do_not_depend_on_scale_and_same_seed_same_numbers():
    X = _blobs(6, 60, 12, 3.0, 1.0, seed=2)
    a = cluster_metrics(X, n_clusters=6, seed=3)
    b = cluster_metrics(X * 1000.0, n_clusters=6, seed=3)
    c = cluster_metrics(X, n_clusters=6, seed=3)
    for name in ("kmeans_inertia", "davies_bouldin"):
        assert b[name].value == pytest.approx(a[name].value, rel=1e-4)
        assert c[name].value == a[name].value


def test_better_separated_clusters_score_lower():
    tight = cluster_metrics(_blobs(5, 80, 10, 10.0, 0.3), n_clusters=5)
    loose = cluster_metrics(_blobs(5, 80, 10, 10.0, 3.0), n_clusters=5)
    assert tight["kmeans_inertia"].value < loose["kmeans_inertia"].value
    assert tight["davies_bouldin"].value < loose["davies_bouldin"].value


def test_too_few_rows_lower_k_and_record_it_or_give_nan():
    X = np.random.default_rng(0).standard_normal((95, 4)).astype(np.float32)
    out = cluster_metrics(X, n_clusters=1024)
    conv = out["kmeans_inertia"].conventions
    assert conv["n_clusters_requested"] == 1024
    assert conv["n_clusters"] == 95 // MIN_ROWS_PER_CLUSTER
    assert 0 < out["kmeans_inertia"].value < 1
    few = cluster_metrics(X[:15], n_clusters=1024)
    assert math.isnan(few["davies_bouldin"].value)
    assert "fewer than 2 clusters" in few["davies_bouldin"].reason


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=8), st.integers(1, 60))
def test_row_store_keeps_the_smallest_keys_whatever_the_batching(sizes, cap):
    rng = np.random.default_rng(len(sizes))
    total = sum(sizes)
    X = rng.standard_normal((total, 3)).astype(np.float32)
    keys = row_keys(5, "utt", np.arange(total))
    whole = ClusterRows(3, cap)
    whole.update(X, keys)
    split = ClusterRows(3, cap)
    start = 0
    for size in sizes[::-1]:  # another order and split
        split.update(X[total - start - size: total - start], keys[total - start - size:
                                                                   total - start])
        start += size
    expected = X[np.argsort(keys)[:cap]]
    np.testing.assert_array_equal(whole.rows(), expected)
    np.testing.assert_array_equal(split.rows(), expected)
    assert split.seen == total
