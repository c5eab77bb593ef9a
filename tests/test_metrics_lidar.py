"""LiDAR and LidarAccumulator: known answer, an independent eigen route, streaming, degenerates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from speechrank.metrics import (
    LidarAccumulator,
    MetricInputError,
    NonFiniteError,
    SpectralAccumulator,
    compute_metric,
    compute_metrics,
    lidar,
    rankme,
)

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)
EPS, DELTA = 1e-7, 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Single-threaded BLAS: these matrices are small and the CI's cores are shared, where
    spinning BLAS threads slow small products down many times over."""
    with threadpool_limits(1):
        yield


def _entropy_rank(values: np.ndarray, eps: float = EPS) -> float:
    p = values / values.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def _reference_lidar(views: np.ndarray, delta: float = DELTA, eps: float = EPS) -> float:
    """LiDAR of (n, q, D) views from explicit scatter sums and a generalized eigenproblem."""
    n, q, d = views.shape
    means = views.mean(axis=1)
    grand = means.mean(axis=0)
    between = sum(np.outer(m - grand, m - grand) for m in means) / (n - 1)
    within = sum(np.outer(v - means[i], v - means[i]) for i in range(n) for v in views[i])
    within = within / (n * (q - 1)) + delta * np.eye(d)
    # eig(W^-1/2 B W^-1/2) = generalized eig(B, W): an independent route to the same values
    values = np.clip(scipy.linalg.eigh(between, within, eigvals_only=True), 0, None)
    return _entropy_rank(values, eps)


def _views(seed: int, n: int, q: int, d: int, noise: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n, d)) * np.linspace(2, 0.5, d)
    return centres[:, None, :] + noise * rng.standard_normal((n, q, d))


def test_known_answer_on_a_constructed_design():
    # Classes +-b_g e_g with two views +-a e_g around each class mean: S_b = diag(2 b^2/(n-1)),
    # S_w = (2 a^2 / D) I exactly, so the LiDAR eigenvalues are 2 b^2 / (n - 1) / (2a^2/D + delta).
    d, a = 4, 0.5
    b = np.array([3.0, 2.0, 1.0, 0.5])
    eye = np.eye(d)
    views, groups = [], []
    for g in range(d):
        for sign in (1, -1):
            centre = sign * b[g] * eye[g]
            views += [centre + a * eye[g], centre - a * eye[g]]
            groups += [f"{g}{sign}"] * 2
    n = 2 * d
    expected_values = 2 * b**2 / (n - 1) / (2 * a**2 / d + DELTA)
    res = compute_metric("lidar", np.array(views), groups=groups)
    assert res.value == pytest.approx(_entropy_rank(expected_values), rel=1e-12)
    assert res.extras["top_eigenvalue"] == pytest.approx(expected_values.max(), rel=1e-12)
    expected_conventions = {"n": 8, "q": 2, "delta": DELTA, "eps": EPS, "dim": 4, "n_rows": 16}
    assert expected_conventions.items() <= res.conventions.items()


@SETTINGS
@given(seed=st.integers(0, 2**16), n=st.integers(3, 25), q=st.integers(2, 6),
       d=st.integers(2, 12), delta=st.sampled_from([1e-4, 1e-2, 1.0]))
def test_matches_the_generalized_eigenvalue_route(seed, n, q, d, delta):
    views = _views(seed, n, q, d)
    assert lidar(views, delta=delta) == pytest.approx(_reference_lidar(views, delta), rel=1e-8)


@SETTINGS
@given(seed=st.integers(0, 2**16), cuts=st.lists(st.integers(0, 120), max_size=3))
def test_streaming_in_any_order_and_merging_equal_one_pass(seed, cuts):
    views = _views(seed, 20, 6, 5)
    one = lidar(views)
    rows, groups = views.reshape(-1, 5), np.repeat([f"utt{i}" for i in range(20)], 6)
    order = np.random.default_rng(seed).permutation(len(rows))
    rows, groups = rows[order], groups[order]
    streamed = LidarAccumulator(5)
    shards = []
    for part in np.split(np.arange(len(rows)), sorted(cuts)):
        streamed.update(torch.from_numpy(rows[part]), groups[part])
        shard = LidarAccumulator(5)
        shard.update(rows[part], list(groups[part]))
        shards.append(shard)
    merged = shards[0].copy()
    for shard in shards[1:]:
        merged = merged + shard
    assert streamed.n_groups == merged.n_groups == 20
    assert lidar(streamed) == pytest.approx(one, rel=1e-9)
    assert lidar(merged) == pytest.approx(one, rel=1e-9)


def test_planted_discriminative_directions_are_counted():
    # Classes differ along k of D directions (high SNR); every direction has within noise.
    rng = np.random.default_rng(0)
    n, q, d, k = 200, 4, 24, 5
    centres = np.zeros((n, d))
    centres[:, :k] = 10 * rng.standard_normal((n, k))
    views = centres[:, None, :] + 0.5 * rng.standard_normal((n, q, d))
    rows, groups = views.reshape(-1, d), np.repeat(np.arange(n), q)
    true = compute_metric("lidar", rows, groups=groups)
    shuffled = compute_metric("lidar", rows, groups=rng.permutation(groups))
    assert true.value == pytest.approx(k, rel=0.1)
    # The true grouping is far more discriminable than a random one ...
    assert true.extras["top_eigenvalue"] > 50 * shuffled.extras["top_eigenvalue"]
    # ... and a random grouping of the same rows shows no planted structure: whitening by its
    # within scatter makes it look isotropic, so its LiDAR is high (close to D), not k.
    assert shuffled.value > 2 * k
    # RankMe of the rows sees the k high-variance directions whatever the grouping.
    assert rankme(rows, centered=True) < 2 * k


def test_lidar_accumulator_gives_the_spectral_metrics_of_its_rows_too():
    views = _views(1, 30, 3, 6)
    acc = LidarAccumulator(6)
    acc.update(views, groups=[f"u{i}" for i in range(30)])
    results = compute_metrics(acc)
    assert list(results)[-1] == "lidar"
    assert results["rankme"].value == rankme(views.reshape(-1, 6))
    assert compute_metrics(acc, ["lidar"])["lidar"].value == results["lidar"].value
    assert compute_metrics(views.reshape(-1, 6), ["lidar"],
                           groups=np.repeat(np.arange(30), 3))["lidar"].value == pytest.approx(
        results["lidar"].value, rel=1e-12)
    np.testing.assert_array_equal(acc.group_counts, np.full(30, 3))
    assert acc.group_ids == [f"u{i}" for i in range(30)]  # order of first appearance


def test_unequal_group_sizes_are_recorded():
    rng = np.random.default_rng(2)
    rows = rng.standard_normal((40, 4))
    groups = np.array([0] * 5 + [1] * 15 + [2] * 20)
    res = compute_metric("lidar", rows, groups=groups)
    assert math.isfinite(res.value)
    assert res.conventions["q"] is None
    assert (res.conventions["q_min"], res.conventions["q_max"]) == (5, 20)


# ------------------------------------------------------------------ degenerate inputs
@pytest.mark.parametrize(
    ("rows", "groups", "reason"),
    [
        (np.zeros((0, 3)), np.zeros(0, dtype=int), "no rows"),
        (np.ones((4, 3)), [7, 7, 7, 7], "at least 2 groups"),
        (np.eye(3), [1, 2, 3], "at least 2 rows"),
        (np.tile([[1.0, 2.0, 0.0], [1.0, 0.0, 2.0]], (2, 1)), [0, 0, 1, 1], "scatter is zero"),
    ],
)
def test_degenerate_groupings_are_nan_with_a_reason(rows, groups, reason):
    res = compute_metric("lidar", rows, groups=groups)
    assert math.isnan(res.value) and reason in res.reason


def test_non_finite_rows_are_refused_without_changing_state():
    acc = LidarAccumulator(3)
    acc.update(np.ones((4, 3)) + np.arange(4)[:, None], [0, 0, 1, 1])
    before = (acc.spectral.gram, acc.group_sums, acc.n_groups, acc.n_rows)
    bad = np.ones((3, 3))
    bad[1, 2] = np.inf
    with pytest.raises(NonFiniteError, match="row 1"):
        acc.update(bad, [5, 5, 6])
    np.testing.assert_array_equal(acc.spectral.gram, before[0])
    np.testing.assert_array_equal(acc.group_sums, before[1])
    assert (acc.n_groups, acc.n_rows) == before[2:]


@pytest.mark.parametrize(
    ("rows", "groups", "message"),
    [
        (np.zeros((4, 3)), None, "groups"),
        (np.zeros((4, 3)), [1, 2], "one id per row"),
        (np.zeros((4, 3)), [0.5, 1.0, 2.0, 3.0], "integers or all strings"),
        (np.zeros((4, 3)), [1, "a", 2, "b"], "integers or all strings"),
        (np.zeros((2, 2, 4)), [0, 1], "columns"),
        (np.zeros(3), [0, 1, 2], "shape"),
    ],
)
def test_bad_updates_give_clear_errors(rows, groups, message):
    with pytest.raises(MetricInputError, match=message):
        LidarAccumulator(3).update(rows, groups)


def test_lidar_source_errors():
    with pytest.raises(MetricInputError, match="group ids"):
        lidar(SpectralAccumulator(3))
    with pytest.raises(MetricInputError, match="without groups"):
        lidar(np.zeros((5, 3)))
    acc = LidarAccumulator(3)
    with pytest.raises(MetricInputError, match="cannot be given"):
        lidar(acc, groups=[1])
    with pytest.raises(MetricInputError, match="delta"):
        lidar(_views(0, 4, 2, 3), delta=0.0)
    with pytest.raises(MetricInputError, match="different dim"):
        acc.merge(LidarAccumulator(4))


def test_reset_and_copy_are_independent():
    acc = LidarAccumulator(3)
    acc.update(_views(3, 5, 2, 3), [10, 11, 12, 13, 14])
    twin = acc.copy()
    acc.reset()
    assert acc.n_rows == 0 and acc.n_groups == 0
    assert twin.n_rows == 10 and twin.n_groups == 5
    assert math.isfinite(lidar(twin))
