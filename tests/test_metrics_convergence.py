"""Nested seeded prefixes: planted spectra with known RankMe at N/8, N/4, N/2 and N."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speechrank.metrics import SpectralAccumulator, compute_metrics
from speechrank.metrics.convergence import (
    PREFIX_FRACTIONS,
    PrefixAccumulators,
    convergence_record,
    row_keys,
)


def _rankme_from_counts(counts: np.ndarray, eps: float = 1e-7) -> float:
    """Rows that are unit basis vectors: singular value j is sqrt(rows on axis j); all
    min(N, D) = D values count, zeros included (they add eps terms, as RankMe defines)."""
    s = np.sqrt(counts.astype(np.float64))
    p = s / s.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def test_planted_spectrum_rankme_at_every_prefix():
    n, dim = 4000, 32
    # axis j gets rows in proportion to 2^-j/4: a decaying planted spectrum
    weights = 2.0 ** (-np.arange(dim) / 4)
    axis = np.random.default_rng(0).choice(dim, size=n, p=weights / weights.sum())
    X = np.zeros((n, dim), np.float32)
    X[np.arange(n), axis] = 1.0
    keys = row_keys(7, "planted", np.arange(n))
    prefix = PrefixAccumulators(dim)
    prefix.update(X, keys)
    full = SpectralAccumulator(dim)
    full.update(X)
    for frac, acc in zip(PREFIX_FRACTIONS, prefix.prefixes(), strict=True):
        inside = keys < frac
        assert acc.n_rows == int(inside.sum())
        expected = _rankme_from_counts(np.bincount(axis[inside], minlength=dim))
        assert compute_metrics(acc, ["rankme"])["rankme"].value == pytest.approx(expected,
                                                                                rel=1e-9)
    expected_full = _rankme_from_counts(np.bincount(axis, minlength=dim))
    assert compute_metrics(full, ["rankme"])["rankme"].value == pytest.approx(expected_full,
                                                                             rel=1e-9)
    sizes = [acc.n_rows for acc in prefix.prefixes()]
    assert sizes == sorted(sizes) and abs(sizes[0] - n / 8) < 4 * math.sqrt(n / 8)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=6))
def test_prefixes_do_not_depend_on_batching(sizes):
    total = sum(sizes)
    X = np.random.default_rng(total).standard_normal((total, 5))
    keys = row_keys(1, "u", np.arange(total))
    once = PrefixAccumulators(5)
    once.update(X, keys)
    parts = PrefixAccumulators(5)
    start = 0
    for size in sizes:
        piece = PrefixAccumulators(5)  # as another process would, merged at the end
        piece.update(X[start:start + size], keys[start:start + size])
        parts.merge(piece)
        start += size
    for a, b in zip(once.prefixes(), parts.prefixes(), strict=True):
        assert a.n_rows == b.n_rows
        np.testing.assert_allclose(a.gram, b.gram, rtol=1e-12, atol=1e-12)


def test_row_keys_are_uniform_and_depend_only_on_identity():
    keys = row_keys(0, "utt-1", np.arange(20000))
    assert keys.min() >= 0 and keys.max() < 1
    assert abs(keys.mean() - 0.5) < 0.01
    np.testing.assert_array_equal(keys[100:200], row_keys(0, "utt-1", np.arange(100, 200)))
    assert not np.array_equal(keys[:50], row_keys(1, "utt-1", np.arange(50)))
    assert not np.array_equal(keys[:50], row_keys(0, "utt-2", np.arange(50)))


def test_convergence_record_marks_the_last_doubling():
    ok = convergence_record([80.0, 95.0, 100.0, 101.5], [100, 200, 400, 800])
    assert ok["converged"] is True and ok["last_change"] == pytest.approx(1.5 / 101.5)
    bad = convergence_record([50.0, 70.0, 90.0, 100.0], [100, 200, 400, 800])
    assert bad["converged"] is False and bad["last_change"] == pytest.approx(0.1)
    unknown = convergence_record([math.nan, math.nan, math.nan, 3.0], [0, 0, 0, 2])
    assert unknown["converged"] is None
