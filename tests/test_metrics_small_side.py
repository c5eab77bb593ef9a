"""The accumulator's two spectrum routes agree, and the parallel metric helper changes nothing.

With at most D/2 rows the accumulator keeps them and takes spectra from the N x N matrix
X X^T; past that (and after a load or an all-reduce) it uses the D x D Gram matrix. Both must
give the same metrics; only ``conventions["solver"]`` says which ran.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from speechrank.metrics import SpectralAccumulator, compute_metrics, compute_metrics_many

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def _gram_route_twin(acc: SpectralAccumulator, tmp_path) -> SpectralAccumulator:
    """The same sums without the rows: a saved and reloaded copy (files hold sums only)."""
    return SpectralAccumulator.load(acc.save(tmp_path / "twin.safetensors"))


def _assert_same_metrics(a: dict, b: dict, rtol: float) -> None:
    for name, result in a.items():
        other = b[name].value
        if np.isnan(result.value):
            assert np.isnan(other), name
        else:
            assert other == pytest.approx(result.value, rel=rtol, abs=1e-9), name


@SETTINGS
@given(seed=st.integers(0, 10_000), dim=st.integers(4, 48), frac=st.floats(0.05, 0.5),
       offset=st.floats(0.0, 30.0))
def test_few_rows_take_the_small_side_and_match_the_gram_route_and_an_svd(
        tmp_path_factory, seed, dim, frac, offset):
    rng = np.random.default_rng(seed)
    n = max(1, int(dim * frac))
    x = rng.standard_normal((n, dim)) * rng.uniform(0.1, 3.0, dim) + offset
    acc = SpectralAccumulator(dim)
    acc.update(x)
    twin = _gram_route_twin(acc, tmp_path_factory.mktemp("twin"))
    small, big = compute_metrics(acc), compute_metrics(twin)
    assert small["rankme"].conventions["solver"] == "rows-float64-eigvalsh"
    assert big["rankme"].conventions["solver"] == "gram-float64-eigvalsh"
    _assert_same_metrics(small, big, rtol=1e-8)
    svd = np.linalg.svd(x, compute_uv=False)
    np.testing.assert_allclose(acc.singular_values(), svd, rtol=1e-9, atol=1e-9 * svd[0])
    centred = np.linalg.svd(x - x.mean(0), compute_uv=False)
    np.testing.assert_allclose(acc.centered_singular_values(), centred, rtol=1e-7,
                               atol=1e-7 * centred[0] if centred[0] else 1e-12)


def test_rank_deficient_rows_give_exact_zeros_on_both_routes(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 3)) @ rng.standard_normal((3, 64))  # rank 3, 12 rows, D 64
    acc = SpectralAccumulator(64)
    acc.update(x)
    for source in (acc, _gram_route_twin(acc, tmp_path)):
        values = source.singular_values()
        assert len(values) == 12 and np.count_nonzero(values) == 3
        assert compute_metrics(source)["numerical_rank"].value == 3


def solver(acc: SpectralAccumulator) -> str:
    return compute_metrics(acc, ["rankme"])["rankme"].conventions["solver"]


def test_rows_are_dropped_past_d_over_2_and_after_merges_that_cross_it():
    rng = np.random.default_rng(1)
    dim = 40
    x = rng.standard_normal((60, dim))
    few = SpectralAccumulator(dim)
    few.update(x[:20])  # exactly D/2: still kept
    assert solver(few) == "rows-float64-eigvalsh"
    many = few.copy()
    many.update(x[20:21])
    assert solver(many) == "gram-float64-eigvalsh"
    assert solver(few) == "rows-float64-eigvalsh"  # the copy kept its own rows
    a, b = SpectralAccumulator(dim), SpectralAccumulator(dim)
    a.update(x[:10])
    b.update(x[10:20])
    merged = a.copy().merge(b)
    assert solver(merged) == "rows-float64-eigvalsh"
    whole = SpectralAccumulator(dim)
    whole.update(x[:20])
    _assert_same_metrics(compute_metrics(merged), compute_metrics(whole), rtol=1e-10)
    merged.merge(many)
    assert solver(merged) == "gram-float64-eigvalsh" and merged.n_rows == 41


def test_the_callers_array_is_copied_not_kept():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 16))  # float64, C-contiguous: converting it is a no-op
    acc = SpectralAccumulator(16)
    acc.update(x)
    before = compute_metrics(acc)["rankme"].value
    x[:] = 0.0
    assert compute_metrics(acc)["rankme"].value == before


def test_upper_triangle_state_reads_back_symmetric_after_mixed_merges(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 9)) + 2.0
    live = SpectralAccumulator(9)
    live.update(x[:100])
    saved = SpectralAccumulator(9)
    saved.update(x[100:])
    loaded = SpectralAccumulator.load(saved.save(tmp_path / "part.safetensors"))
    live.merge(loaded)
    live.update(x[:1])
    expected = x.T @ x + np.outer(x[0], x[0])
    np.testing.assert_allclose(live.gram, expected, rtol=1e-12)
    np.testing.assert_array_equal(live.gram, live.gram.T)


def test_compute_metrics_many_matches_one_at_a_time_in_order():
    rng = np.random.default_rng(4)
    sources = []
    for i in range(7):
        acc = SpectralAccumulator(32)
        acc.update(rng.standard_normal((10 + 15 * i, 32)) * (i + 1))
        sources.append(acc)
    one_by_one = [compute_metrics(acc) for acc in sources]
    for workers in (1, 2, 3):
        many = compute_metrics_many(sources, workers=workers)
        assert len(many) == len(sources)
        for expected, got in zip(one_by_one, many, strict=True):
            assert {k: r.value for k, r in got.items()} == pytest.approx(
                {k: r.value for k, r in expected.items()}, rel=0, abs=0, nan_ok=True)
    assert compute_metrics_many([], workers=2) == []
