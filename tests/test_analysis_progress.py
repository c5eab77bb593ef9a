"""training_progress: best-layer gains with standard errors, upper layers at the end vs halfway."""

from __future__ import annotations

import math

import pytest

from speechrank.analysis.progress import training_progress
from speechrank.results import ResultRow


def _row(step: int, layer: str, value: float, *, task: str = "ks", metric: str = "accuracy",
         n: int = 100, se: float | None = None, split: str = "test") -> ResultRow:
    conventions = {} if se is None else {"standard_error": se,
                                         "standard_error_method": "clustered"}
    return ResultRow(model="m", checkpoint=f"c{step}", step=step, dataset="d", layer=layer,
                     pooling="mean", metric=metric, value=value, n_rows=n, dim=8, task=task,
                     split=split, domain="in", conventions=conventions)


def _grid(values: dict[int, list[float]], **kw) -> list[ResultRow]:
    return [_row(step, str(i), v, **kw) for step, vs in values.items()
            for i, v in enumerate(vs)]


def test_gain_and_binomial_standard_error_known_answer() -> None:
    rows = _grid({0: [0.40, 0.30, 0.20, 0.20, 0.20],
                  50: [0.40, 0.40, 0.40, 0.45, 0.45],
                  100: [0.40, 0.50, 0.60, 0.50, 0.50]})
    (p,) = training_progress(rows)
    assert (p.first_step, p.mid_step, p.last_step) == (0, 50, 100)
    assert (p.first_best_layer, p.last_best_layer) == ("0", "2")
    assert p.gain == pytest.approx(0.20)
    se0, se1 = math.sqrt(0.4 * 0.6 / 100), math.sqrt(0.6 * 0.4 / 100)
    assert p.gain_se == pytest.approx(math.hypot(se0, se1))
    assert p.gain_in_se == pytest.approx(0.20 / math.hypot(se0, se1))
    assert p.upper_layers == ["3", "4"]
    assert p.upper_improved
    assert p.se_method == "binomial over n_rows"


def test_upper_layers_that_peaked_halfway_are_not_improved() -> None:
    rows = _grid({0: [0.5, 0.5, 0.5], 10: [0.5, 0.7, 0.7], 20: [0.5, 0.6, 0.8]})
    (p,) = training_progress(rows)
    assert p.upper_layers == ["2"]  # floor(3 / 2) = 1 deepest layer
    assert p.upper_improved
    rows = _grid({0: [0.5, 0.5, 0.5, 0.5], 10: [0.5, 0.7, 0.7, 0.7],
                  20: [0.5, 0.6, 0.8, 0.6]})
    (p,) = training_progress(rows)
    assert p.upper_layers == ["2", "3"]
    assert not p.upper_improved


def test_probe_standard_errors_win_and_lower_is_better_is_oriented() -> None:
    rows = _grid({0: [0.50, 0.60], 100: [0.40, 0.30]}, task="pr", metric="per", se=0.01)
    (p,) = training_progress(rows)
    assert p.higher_is_better is False
    assert (p.first_best_layer, p.last_best_layer) == ("0", "1")
    assert p.gain == pytest.approx(0.20)
    assert p.gain_se == pytest.approx(math.sqrt(2) * 0.01)
    assert p.se_method == "clustered"


def test_frame_accuracy_is_preferred_and_single_checkpoints_are_left_out() -> None:
    rows = (_grid({0: [0.5, 0.6], 10: [0.6, 0.7]}, task="pr", metric="frame_accuracy")
            + _grid({0: [0.1, 0.2], 10: [0.3, 0.4]}, task="pr", metric="macro_f1")
            + _grid({0: [0.1, 0.2]}, task="sid")
            + _grid({0: [0.9, 0.9], 10: [0.1, 0.1]}, task="pr", split="train",
                    metric="frame_accuracy"))
    (p,) = training_progress(rows)
    assert (p.task, p.score) == ("pr", "frame_accuracy")
    assert p.gain == pytest.approx(0.1)
