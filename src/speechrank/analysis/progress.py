"""Did training make the encoder better? Probe scores at the first, middle and last checkpoint.

The correlation analysis asks whether a label-free metric *tracks* the probes; this module asks
the question before it: whether the probes moved at all, by more than their noise. For each
probe task (test split, the task's main score) it reports

- the best layer's score at the first checkpoint and at the last, the gain, the gain's standard
  error and the gain in standard errors;
- for the upper half of the layers (the deepest ``floor(n / 2)`` numbered layers), the score at
  the last checkpoint against the checkpoint halfway through training (the one whose step is
  nearest half the last step), to tell a steady improvement from an early peak.

Standard errors come from the probe rows (``conventions["standard_error"]``, written by the
probes: utterance-clustered for frame scores, so frames of one utterance do not count as
independent evidence); rows without one fall back to the binomial ``sqrt(p (1 - p) / n)`` over
the row's ``n_rows``, and the record says which was used. The gain's standard error is
``sqrt(se_first^2 + se_last^2)``, which treats the two scores as independent; both are measured
on the same test items, whose shared difficulty makes the true error of the difference
smaller, so this is the conservative choice.

Lower-is-better scores (``per``) are reported as measured, with the gain oriented so that a
positive gain is an improvement.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from speechrank.results import ResultRow, layer_sort_key

__all__ = ["MAIN_SCORES", "TaskProgress", "training_progress"]

#: The main score of a probe task, in order of preference, and whether higher is better.
MAIN_SCORES: tuple[tuple[str, bool], ...] = (
    ("frame_accuracy", True), ("accuracy", True), ("per", False))


@dataclasses.dataclass(frozen=True)
class TaskProgress:
    """How one probe task's test score moved over training (see the module docstring)."""

    task: str
    domain: str
    score: str
    higher_is_better: bool
    first_step: int
    mid_step: int
    last_step: int
    first_best_layer: str
    first_best: float
    first_best_se: float
    last_best_layer: str
    last_best: float
    last_best_se: float
    gain: float  # oriented: positive = better
    gain_se: float
    gain_in_se: float
    upper_layers: list[str]
    upper_mid: dict[str, float]
    upper_last: dict[str, float]
    upper_improved: bool  # every upper-half layer better at the last checkpoint than halfway
    se_method: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _standard_error(row: ResultRow) -> tuple[float, str]:
    se = row.conventions.get("standard_error")
    if isinstance(se, (int, float)) and math.isfinite(se):
        return float(se), str(row.conventions.get("standard_error_method", "probe"))
    p, n = row.value, row.n_rows
    if n > 0 and 0.0 <= p <= 1.0:
        return math.sqrt(p * (1.0 - p) / n), "binomial over n_rows"
    return math.nan, "none"


def _main_score(metrics: set[str]) -> tuple[str, bool] | None:
    for name, higher in MAIN_SCORES:
        if name in metrics:
            return name, higher
    return None


def _best(by_layer: dict[str, ResultRow], sign: float) -> ResultRow:
    """The best layer's row (ties: the shallower layer)."""
    return max(by_layer.values(),
               key=lambda row: (sign * row.value, -layer_sort_key(row.layer)[1]))


def training_progress(rows: Sequence[ResultRow], split: str = "test") -> list[TaskProgress]:
    """One :class:`TaskProgress` per (task, domain) with probe rows at two or more steps.

    ``rows`` are probe rows (any others are ignored), as a sweep stores them; one model.
    """
    by_task: dict[tuple[str, str], list[ResultRow]] = defaultdict(list)
    for row in rows:
        if row.task and row.split == split and row.step is not None:
            by_task[(row.task, row.domain)].append(row)
    out: list[TaskProgress] = []
    for (task, domain), task_rows in sorted(by_task.items()):
        chosen = _main_score({r.metric for r in task_rows})
        if chosen is None:
            continue
        score, higher = chosen
        cells: dict[int, dict[str, ResultRow]] = defaultdict(dict)
        for r in task_rows:
            if r.metric == score and math.isfinite(r.value):
                cells[int(r.step)][r.layer] = r  # type: ignore[arg-type]
        steps = sorted(cells)
        if len(steps) < 2:
            continue
        first, last = steps[0], steps[-1]
        mid = min(steps, key=lambda s: (abs(s - (first + last) / 2), s))
        sign = 1.0 if higher else -1.0

        b0, b1 = _best(cells[first], sign), _best(cells[last], sign)
        se0, method0 = _standard_error(b0)
        se1, method1 = _standard_error(b1)
        gain = sign * (b1.value - b0.value)
        gain_se = math.sqrt(se0 ** 2 + se1 ** 2)
        numbered = sorted((layer for layer in cells[last] if layer.isdigit()),
                          key=layer_sort_key)
        upper = numbered[len(numbered) - len(numbered) // 2:]
        upper_mid = {layer: cells[mid][layer].value for layer in upper if layer in cells[mid]}
        upper_last = {layer: cells[last][layer].value for layer in upper}
        improved = bool(upper) and mid != last and all(
            layer in upper_mid and sign * (upper_last[layer] - upper_mid[layer]) > 0
            for layer in upper)
        out.append(TaskProgress(
            task=task, domain=domain, score=score, higher_is_better=higher,
            first_step=first, mid_step=mid, last_step=last,
            first_best_layer=b0.layer, first_best=b0.value, first_best_se=se0,
            last_best_layer=b1.layer, last_best=b1.value, last_best_se=se1,
            gain=gain, gain_se=gain_se,
            gain_in_se=gain / gain_se if gain_se > 0 else math.nan,
            upper_layers=upper, upper_mid=upper_mid, upper_last=upper_last,
            upper_improved=improved,
            se_method=method0 if method0 == method1 else f"{method0}; {method1}"))
    return out
