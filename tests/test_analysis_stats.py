"""Rank correlations and their bootstrap: agreement with scipy, edge cases, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from speechrank.analysis.stats import (
    kendall_counts,
    rank_correlation,
    resample_counts,
    spearman_counts,
)

# small integer values so that ties are common; counts = how often a resample drew each point
cases = st.integers(3, 12).flatmap(lambda n: st.tuples(
    arrays(np.float64, n, elements=st.integers(0, 4).map(float)),
    arrays(np.float64, n, elements=st.integers(0, 4).map(float)),
    arrays(np.int64, (6, n), elements=st.integers(0, 3))))


@settings(max_examples=80, deadline=None)
@given(cases)
def test_count_statistics_match_scipy_on_each_resample(case):
    x, y, counts = case
    rho = spearman_counts(x, y, counts.astype(np.float64))
    tau = kendall_counts(x, y, counts.astype(np.float64))
    for b in range(counts.shape[0]):
        xs, ys = np.repeat(x, counts[b]), np.repeat(y, counts[b])
        if xs.size < 2 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
            assert math.isnan(rho[b]) and math.isnan(tau[b])
            continue
        assert rho[b] == pytest.approx(stats.spearmanr(xs, ys).statistic, abs=1e-12)
        assert tau[b] == pytest.approx(stats.kendalltau(xs, ys).statistic, abs=1e-12)


def test_resample_counts_are_bootstrap_draws():
    counts = resample_counts(np.random.default_rng(0), 7, 4000)
    assert counts.shape == (4000, 7) and (counts.sum(axis=1) == 7).all()
    # each point is drawn once per resample on average, Binomial(7, 1/7)
    np.testing.assert_allclose(counts.mean(axis=0), 1.0, atol=0.06)
    np.testing.assert_allclose(counts.var(axis=0), 7 * (1 / 7) * (6 / 7), atol=0.08)


def test_perfectly_monotone_series():
    x = np.array([1.0, 2.0, 5.0, 7.0, 9.0])
    res = rank_correlation(x, x ** 3, n_bootstrap=200, rng=np.random.default_rng(0))
    assert res.spearman == pytest.approx(1.0) and res.kendall == pytest.approx(1.0)
    # every resample with two distinct points is perfectly monotone as well
    assert res.spearman_low == pytest.approx(1.0) and res.spearman_high == pytest.approx(1.0)
    assert res.kendall_low == pytest.approx(1.0) and res.kendall_high == pytest.approx(1.0)
    assert 0 < res.n_boot <= 200 and res.reason == ""
    assert res.spearman_p < 0.05


def test_reversed_series():
    x = np.arange(6.0)
    res = rank_correlation(x, -x, n_bootstrap=100, rng=np.random.default_rng(0))
    assert res.spearman == pytest.approx(-1.0) and res.kendall == pytest.approx(-1.0)
    assert res.spearman_high == pytest.approx(-1.0)


def test_matches_scipy_on_noisy_data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=12)
    y = x + rng.normal(scale=1.0, size=12)
    res = rank_correlation(x, y, n_bootstrap=500, rng=np.random.default_rng(0))
    sp, kt = stats.spearmanr(x, y), stats.kendalltau(x, y)
    assert res.spearman == pytest.approx(sp.statistic) and res.spearman_p == pytest.approx(
        sp.pvalue)
    assert res.kendall == pytest.approx(kt.statistic) and res.kendall_p == pytest.approx(
        kt.pvalue)
    assert -1 <= res.spearman_low < res.spearman < res.spearman_high <= 1
    assert -1 <= res.kendall_low < res.kendall < res.kendall_high <= 1


def test_bootstrap_is_deterministic_for_a_seed():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=10), rng.normal(size=10)
    a = rank_correlation(x, y, rng=np.random.default_rng(7))
    b = rank_correlation(x, y, rng=np.random.default_rng(7))
    c = rank_correlation(x, y, rng=np.random.default_rng(8))
    assert a == b
    assert (a.spearman_low, a.spearman_high) != (c.spearman_low, c.spearman_high)


@pytest.mark.parametrize(("x", "y", "reason"), [
    ([1.0, 2.0], [1.0, 2.0], "fewer than 3"),
    ([], [], "fewer than 3"),
    ([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0], "constant metric"),
    ([1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5], "constant score"),
])
def test_undefined_cases_are_nan_with_reason(x, y, reason):
    res = rank_correlation(np.array(x), np.array(y))
    assert math.isnan(res.spearman) and math.isnan(res.kendall)
    assert math.isnan(res.spearman_low) and res.n_boot == 0
    assert reason in res.reason


def test_no_bootstrap():
    res = rank_correlation(np.arange(5.0), np.arange(5.0) ** 2, n_bootstrap=0)
    assert res.spearman == pytest.approx(1.0)
    assert math.isnan(res.spearman_low) and res.n_boot == 0
