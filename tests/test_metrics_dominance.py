"""Share of the spectrum held by one direction, and of the rows' norm held by their mean."""

from __future__ import annotations

import numpy as np
import pytest

from speechrank.metrics import SpectralAccumulator
from speechrank.metrics.dominance import dominance_record


def _acc(X: np.ndarray) -> SpectralAccumulator:
    acc = SpectralAccumulator(X.shape[1])
    acc.update(X)
    return acc


def test_known_answer_two_orthogonal_rows():
    record = dominance_record(_acc(np.array([[3.0, 0.0], [0.0, 1.0]])))
    assert record["first_direction_share"] == pytest.approx(9 / 10)
    assert record["mean_share"] == pytest.approx(0.5)  # ||(1.5, .5)||^2 / mean(9, 1)
    assert record["dominated"] is False  # 0.9 is not above the threshold


@pytest.mark.parametrize("dim", [16, 100])  # dense and Lanczos routes
def test_shared_mean_direction_is_flagged_and_isotropic_rows_are_not(dim):
    rng = np.random.default_rng(0)
    direction = rng.standard_normal(dim)
    summed = 20 * direction + rng.standard_normal((400, dim))
    record = dominance_record(_acc(summed))
    exact = np.linalg.eigvalsh(summed.T @ summed)[-1] / np.trace(summed.T @ summed)
    assert record["first_direction_share"] == pytest.approx(exact, rel=1e-8)
    assert record["dominated"] is True and record["mean_share"] > 0.9
    iso = dominance_record(_acc(rng.standard_normal((400, dim))))
    assert iso["dominated"] is False and iso["mean_share"] < 0.05


def test_empty_accumulator_gives_nan_not_a_flag():
    record = dominance_record(SpectralAccumulator(4))
    assert record["dominated"] is None and np.isnan(record["first_direction_share"])
