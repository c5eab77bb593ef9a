"""Spectral metrics: known answers, properties, agreement with a float64 SVD, degenerate inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from speechrank.metrics import (
    METRICS,
    SPECTRAL_METRIC_NAMES,
    MetricInputError,
    MetricResult,
    NonFiniteError,
    SpectralAccumulator,
    alpha_req,
    compute_metric,
    compute_metrics,
    erank_cov,
    numerical_rank,
    participation_ratio,
    rankme,
    rankme_centered,
    stable_rank,
)

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)
EPS = 1e-7


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Single-threaded BLAS: these matrices are small and the CI's cores are shared, where
    spinning BLAS threads slow small products down many times over."""
    with threadpool_limits(1):
        yield


def _entropy_rank(values: np.ndarray, eps: float = EPS) -> float:
    p = values / values.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def _svd_reference(x: np.ndarray) -> dict[str, float]:
    """Every spectral metric straight from float64 SVDs of the materialised matrix."""
    x = np.asarray(x, dtype=np.float64)
    s = np.linalg.svd(x, compute_uv=False)
    sc = np.linalg.svd(x - x.mean(0), compute_uv=False)
    cov = sc**2 / (x.shape[0] - 1)
    ranks = np.arange(6, 101)
    slope = np.polyfit(np.log(ranks), np.log(cov[5:100]), 1, w=np.sqrt(1 / ranks))[0] if (
        cov.size >= 100) else math.nan
    return {
        "rankme": _entropy_rank(s),
        "rankme_centered": _entropy_rank(sc),
        "erank_cov": _entropy_rank(cov),
        "alpha_req": -slope,
        "stable_rank": cov.sum() / cov.max(),
        "participation_ratio": cov.sum() ** 2 / (cov**2).sum(),
    }


def _pm_rows(s: np.ndarray) -> np.ndarray:
    """Rows +s_k e_k and -s_k e_k: zero mean, centred singular values sqrt(2) * s."""
    return np.concatenate([np.diag(s), -np.diag(s)])


# ------------------------------------------------------------------ known answers
def test_rankme_known_answer_on_padded_diagonal():
    x = np.zeros((10, 4))
    x[:4, :4] = np.diag([1.0, 1.0, 1.0, 1.0])
    p = 0.25 + EPS
    assert rankme(x) == pytest.approx(math.exp(-4 * p * math.log(p)), rel=1e-12)
    assert rankme(x) == pytest.approx(4.0, abs=1e-5)
    s = np.array([3.0, 2.0, 1.0, 0.0])
    x[:4, :4] = np.diag(s)
    p = np.array([0.5, 1 / 3, 1 / 6, 0.0]) + EPS
    assert rankme(x) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-12)


def test_centred_metrics_known_answers():
    s = np.array([2.0, 1.0, 1.0, 0.0])
    x = _pm_rows(s)  # 8 rows, mean zero; covariance eigenvalues 2 s^2 / 7
    assert rankme_centered(x) == pytest.approx(_entropy_rank(s), rel=1e-12)
    assert rankme_centered(x) == pytest.approx(rankme(x), rel=1e-12)
    assert erank_cov(x) == pytest.approx(_entropy_rank(s**2), rel=1e-12)
    assert stable_rank(x) == pytest.approx(1.5, rel=1e-12)  # (4 + 1 + 1) / 4
    assert participation_ratio(x) == pytest.approx(2.0, rel=1e-12)  # 36 / 18
    eig = compute_metric("erank_cov", x)
    assert eig.conventions["covariance_ddof"] == 1
    acc = SpectralAccumulator(4)
    acc.update(x)
    np.testing.assert_allclose(acc.covariance_eigenvalues(), 2 * s**2 / 7, atol=1e-15)
    np.testing.assert_allclose(acc.centered_singular_values(), np.sqrt(2) * s, atol=1e-15)
    np.testing.assert_allclose(acc.singular_values(), np.sqrt(2) * s, atol=1e-15)


def test_numerical_rank_known_answer():
    x = _pm_rows(np.array([2.0, 1.0, 1.0, 0.0]))
    assert numerical_rank(x) == 3.0
    assert numerical_rank(x, rtol=0.6) == 1.0  # only 2 > 0.6 * 2
    assert numerical_rank(np.zeros((5, 3))) == 0.0
    res = compute_metric("numerical_rank", x)
    assert res.conventions["rtol_default"] is True
    assert res.conventions["rtol"] == pytest.approx(math.sqrt(8 * np.finfo(float).eps))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.3])
def test_alpha_req_known_answer_on_an_exact_power_law(alpha):
    n, d = 300, 120
    rng = np.random.default_rng(0)
    centred = rng.standard_normal((n, d))
    centred -= centred.mean(0)
    q, _ = np.linalg.qr(centred)  # orthonormal columns with zero column sums
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = np.arange(1, d + 1) ** (-alpha / 2)
    x = (q * s) @ v.T + 5.0  # covariance eigenvalues exactly s^2 / (n - 1) = j^-alpha / 299
    res = compute_metric("alpha_req", x)
    assert res.value == pytest.approx(alpha, abs=1e-8)
    assert res.extras["r2"] == pytest.approx(1.0, abs=1e-10)
    assert res.extras["r2_weighted"] == pytest.approx(1.0, abs=1e-10)
    assert res.extras["intercept"] == pytest.approx(-math.log(n - 1), abs=1e-7)
    assert res.conventions["fit_range"] == [6, 100]
    # a custom range is recorded and used
    short = compute_metric("alpha_req", x, fit_range=(2, 10))
    assert short.value == pytest.approx(alpha, abs=1e-8)
    assert short.conventions["fit_range"] == [2, 10]


# ------------------------------------------------------------------ properties
@SETTINGS
@given(seed=st.integers(0, 2**16), d=st.integers(4, 40))
def test_isotropic_gaussian_with_many_rows_is_close_to_full_rank(seed, d):
    x = np.random.default_rng(seed).standard_normal((60 * d, d)).astype(np.float32)
    results = compute_metrics(x)
    for name in ("rankme", "rankme_centered", "erank_cov", "participation_ratio"):
        assert 0.95 * d < results[name].value <= d + 1e-3, name
    assert results["numerical_rank"].value == d


@SETTINGS
@given(seed=st.integers(0, 2**16), k=st.integers(1, 12), extra=st.integers(1, 20))
def test_exact_rank_k_data_gives_about_k(seed, k, extra):
    d = k + extra
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((d, k)))
    x = (rng.standard_normal((80 * k, k)) @ basis.T).astype(np.float32)
    assert numerical_rank(x) == k
    value = rankme(x)
    assert 0.85 * k < value <= k * (1 + 1e-3)
    assert 0.85 * k < erank_cov(x) <= k * (1 + 1e-3)


@SETTINGS
@given(seed=st.integers(0, 2**16), n=st.integers(2, 50), d=st.integers(1, 30))
def test_collapsed_rows_give_about_one(seed, n, d):
    row = np.random.default_rng(seed).standard_normal(d) + 0.1
    x = np.tile(row, (n, 1)).astype(np.float32)
    results = compute_metrics(x)
    assert results["rankme"].value == pytest.approx(1.0, abs=1e-4)
    assert results["numerical_rank"].value == 1.0
    for name in ("rankme_centered", "erank_cov", "stable_rank", "participation_ratio"):
        assert math.isnan(results[name].value), name
        assert "every row is the same" in results[name].reason


@settings(max_examples=8, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), log_scale=st.floats(-3, 3))
def test_invariant_to_scale_and_row_order(seed, log_scale):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((130, 105)) * np.linspace(2, 0.1, 105) + 0.3
    base = compute_metrics(x)
    scaled = compute_metrics(x * 10**log_scale)
    shuffled = compute_metrics(x[rng.permutation(130)])
    for name in SPECTRAL_METRIC_NAMES:
        assert scaled[name].value == pytest.approx(base[name].value, rel=1e-9), name
        assert shuffled[name].value == pytest.approx(base[name].value, rel=1e-9), name


@settings(max_examples=8, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), shards=st.integers(2, 6))
def test_shard_merge_equals_one_pass(seed, shards):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((400, 105)) * np.geomspace(3, 0.01, 105) + 1.0).astype(np.float32)
    whole = SpectralAccumulator(105)
    whole.update(x)
    parts = []
    for part in np.array_split(x, np.sort(rng.integers(0, 400, size=shards - 1))):
        acc = SpectralAccumulator(105)
        acc.update(torch.from_numpy(part))
        parts.append(acc)
    merged = parts[0]
    for acc in parts[1:]:
        merged = merged + acc
    one, many = compute_metrics(whole), compute_metrics(merged)
    for name in SPECTRAL_METRIC_NAMES:
        assert many[name].value == pytest.approx(one[name].value, rel=1e-9), name


@settings(max_examples=8, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), n=st.integers(90, 240), d=st.integers(100, 120),
       rank=st.sampled_from([None, 60]))
def test_gram_route_matches_a_float64_svd(seed, n, d, rank):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * np.geomspace(1, 1e-3, d) + rng.standard_normal(d)
    if rank is not None:  # rank-deficient: round-off must not pose as small singular values
        x = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, d))
    x = x.astype(np.float32)
    got = compute_metrics(x)
    expected = _svd_reference(x)
    for name, value in expected.items():
        if name == "alpha_req" and (rank is not None or n <= 100):
            assert math.isnan(got[name].value)
            continue
        assert got[name].value == pytest.approx(value, rel=1e-6), name


def test_constant_offset_lowers_rankme_but_not_rankme_centered():
    x = np.random.default_rng(0).standard_normal((1000, 64))
    shifted = x + 5.0
    assert rankme(shifted) < 0.8 * rankme(x)
    assert rankme(shifted, centered=True) == pytest.approx(rankme_centered(x), rel=1e-9)
    for name in ("erank_cov", "stable_rank", "participation_ratio"):
        assert compute_metric(name, shifted).value == pytest.approx(
            compute_metric(name, x).value, rel=1e-9)


@settings(max_examples=6, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), alpha=st.floats(0.3, 3.0))
def test_alpha_req_recovers_a_planted_power_law(seed, alpha):
    rng = np.random.default_rng(seed)
    d = 128
    x = rng.standard_normal((6_000, d)) * np.arange(1, d + 1) ** (-alpha / 2)
    assert alpha_req(x.astype(np.float32)) == pytest.approx(alpha, abs=0.05)


# ------------------------------------------------------------------ degenerate inputs
def test_no_rows_give_nan_with_a_reason():
    for name, result in compute_metrics(np.zeros((0, 5))).items():
        assert math.isnan(result.value) and result.reason == "no rows", name
        assert result.conventions["n_rows"] == 0


def test_one_row():
    results = compute_metrics(np.array([[1.0, -2.0, 3.0]]))
    assert results["rankme"].value == pytest.approx(math.exp(-(1 + EPS) * math.log(1 + EPS)))
    assert results["numerical_rank"].value == 1.0
    for name in ("rankme_centered", "erank_cov", "alpha_req", "stable_rank",
                 "participation_ratio"):
        assert math.isnan(results[name].value) and "at least 2 rows" in results[name].reason


def test_all_zero_rows():
    results = compute_metrics(np.zeros((10, 4)))
    assert results["numerical_rank"].value == 0.0
    assert math.isnan(results["rankme"].value)
    assert results["rankme"].reason == "all rows are zero"


def test_alpha_req_with_too_few_eigenvalues_is_nan_with_a_reason():
    x = np.random.default_rng(0).standard_normal((500, 50))
    res = compute_metric("alpha_req", x)
    assert math.isnan(res.value) and "needs min(N, D) >= 100" in res.reason
    low_rank = np.random.default_rng(0).standard_normal((500, 40)) @ np.ones((40, 120))
    res = compute_metric("alpha_req", low_rank + np.eye(500, 120)[:, :120] * 0)
    assert math.isnan(res.value) and "rank" in res.reason


def test_nan_in_a_matrix_is_refused():
    x = np.ones((5, 3))
    x[2, 1] = np.nan
    with pytest.raises(NonFiniteError, match="row 2"):
        rankme(x)


@pytest.mark.parametrize("bad", [np.zeros(4), np.zeros((2, 3, 4)), [["a", "b"]], np.zeros((3, 0))])
def test_non_matrices_are_refused(bad):
    with pytest.raises(MetricInputError):
        rankme(bad)


# ------------------------------------------------------------------ API
def test_registry_order_and_result_type():
    assert SPECTRAL_METRIC_NAMES == ("rankme", "rankme_centered", "erank_cov", "alpha_req",
                                     "stable_rank", "participation_ratio", "numerical_rank")
    assert list(METRICS) == [*SPECTRAL_METRIC_NAMES, "lidar", "kmeans_inertia", "davies_bouldin"]
    x = np.random.default_rng(1).standard_normal((200, 8))
    res = compute_metric("rankme", x)
    assert isinstance(res, MetricResult) and float(res) == res.value == rankme(x)
    assert res.conventions == {"spectrum": "singular_values", "centered": False, "eps": EPS,
                               "n_rows": 200, "dim": 8, "n_values": 8,
                               "solver": "gram-float64-eigvalsh"}
    with pytest.raises(AttributeError):
        res.value = 3.0  # type: ignore[misc]
    assert res.to_dict()["name"] == "rankme"


def test_functions_accept_matrix_tensor_and_accumulator_alike():
    x = np.random.default_rng(2).standard_normal((300, 20)).astype(np.float32)
    acc = SpectralAccumulator(20)
    acc.update(x)
    for func in (rankme, rankme_centered, erank_cov, stable_rank, participation_ratio,
                 numerical_rank):
        assert func(torch.from_numpy(x)) == func(x) == func(acc)


def test_compute_metrics_options_go_to_the_metrics_that_take_them():
    x = np.random.default_rng(3).standard_normal((300, 20))
    results = compute_metrics(x, ["rankme", "numerical_rank", "erank_cov"], eps=1e-5, rtol=0.5)
    assert list(results) == ["rankme", "erank_cov", "numerical_rank"]
    assert results["rankme"].conventions["eps"] == 1e-5
    assert results["numerical_rank"].conventions["rtol"] == 0.5
    assert results["rankme"].value == rankme(x, eps=1e-5)
    assert compute_metrics(x, "stable_rank")["stable_rank"].value == stable_rank(x)
    with pytest.raises(MetricInputError, match="unknown option"):
        compute_metrics(x, ["rankme"], rtol=0.1)
    with pytest.raises(MetricInputError, match="unknown metric"):
        compute_metrics(x, ["rank_me"])
    with pytest.raises(MetricInputError, match="unknown metric"):
        compute_metric("nope", x)
    for bad in ({"eps": -1.0}, {"eps": float("nan")}):
        with pytest.raises(MetricInputError, match="eps"):
            compute_metric("rankme", x, **bad)
    with pytest.raises(MetricInputError, match="rtol"):
        numerical_rank(x, rtol=2.0)
    with pytest.raises(MetricInputError, match="fit_range"):
        alpha_req(x, fit_range=(10, 5))
    with pytest.raises(MetricInputError, match="groups"):
        compute_metric("rankme", x, groups=np.arange(300))


def test_accumulator_compute_matches_compute_metrics():
    x = np.random.default_rng(4).standard_normal((300, 12))
    acc = SpectralAccumulator(12)
    acc.update(x)
    from_acc, from_matrix = compute_metrics(acc), compute_metrics(x)
    assert list(from_acc) == list(from_matrix) == list(SPECTRAL_METRIC_NAMES)
    for name in SPECTRAL_METRIC_NAMES:
        a, b = from_acc[name], from_matrix[name]
        assert (a.value == b.value) or (math.isnan(a.value) and math.isnan(b.value)), name
        assert a.conventions == b.conventions
    assert [r.value for r in compute_metrics(acc, ["rankme"]).values()] == [rankme(x)]
