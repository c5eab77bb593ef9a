"""The free baselines beside every metric: partial Spearman given the step, regret fractions
of choosing a checkpoint by the metric, the last checkpoint and the lowest loss, and the
verdict per pair, on hand-made stores with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from speechrank.analysis import correlate
from speechrank.analysis.correlate import headline_verdicts
from speechrank.analysis.options import AnalysisOptions
from speechrank.analysis.stats import (
    centred_ranks,
    correlation_of_ranks,
    partial_from_correlations,
    partial_spearman,
)
from speechrank.results import ResultRow, dumps_json
from speechrank.store import CheckpointRecord, ResultStore

STEPS = list(range(0, 1200, 100))
LAYERS = ["0", "1", "2", "3", "4"]


def _reference_partial(x, y, z) -> float:
    """Ranks of x and y residualised on z's ranks by least squares, Pearson of the residuals."""
    rx, ry, rz = (stats.rankdata(v) for v in (x, y, z))
    design = np.c_[np.ones_like(rz), rz]
    ex = rx - design @ np.linalg.lstsq(design, rx, rcond=None)[0]
    ey = ry - design @ np.linalg.lstsq(design, ry, rcond=None)[0]
    return float(np.corrcoef(ex, ey)[0, 1])


def test_partial_spearman_known_answer():
    # r_xy = 0.8, r_xz = 0.6, r_yz = 0: (0.8 - 0.6 * 0) / sqrt(1 - 0.36) = 1
    assert partial_spearman([1, 2, 3, 4], [1, 3, 2, 4], [2, 1, 4, 3]) == pytest.approx(1.0)
    # the step determines the metric: nothing is left to correlate
    assert math.isnan(partial_spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5], [1, 2, 3, 4, 5]))
    assert math.isnan(partial_spearman([1, 2], [1, 2], [2, 1]))


@settings(max_examples=60, deadline=None)
@given(st.integers(4, 12).flatmap(lambda n: st.tuples(
    *(arrays(np.float64, n, elements=st.integers(0, 6).map(float)) for _ in range(3)))))
def test_partial_spearman_is_the_residual_correlation(case):
    x, y, z = case
    got = partial_spearman(x, y, z)
    if min(np.ptp(x), np.ptp(y), np.ptp(z)) == 0:
        assert math.isnan(got)
        return
    r_xz = stats.spearmanr(x, z).statistic
    r_yz = stats.spearmanr(y, z).statistic
    if max(abs(r_xz), abs(r_yz)) > 1 - 1e-9:
        assert math.isnan(got)
        return
    assert got == pytest.approx(_reference_partial(x, y, z), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(4, 10).flatmap(lambda n: st.tuples(
    *(arrays(np.float64, n, elements=st.integers(0, 5).map(float)) for _ in range(3)),
    arrays(np.int64, (5, n), elements=st.integers(0, 3)))))
def test_resampled_partial_equals_the_partial_of_the_resample(case):
    x, y, z, counts = case
    w = counts.astype(np.float64)
    rx, ry, rz = (centred_ranks(v, w) for v in (x, y, z))
    got = partial_from_correlations(correlation_of_ranks(rx, ry, w),
                                    correlation_of_ranks(rx, rz, w),
                                    correlation_of_ranks(ry, rz, w))
    for b in range(w.shape[0]):
        want = partial_spearman(*(np.repeat(v, counts[b]) for v in (x, y, z)))
        if math.isnan(want) or math.isnan(got[b]):
            # a degenerate resample (constant, or z determining x or y) is NaN both ways,
            # up to rounding at the edge of determination
            assert math.isnan(want) or abs(got[b]) == pytest.approx(1.0) or \
                math.isnan(got[b])
            continue
        assert got[b] == pytest.approx(want, abs=1e-9)


# ------------------------------------------------------------------------------ stores
def _rows(metric: dict, score: dict, *, model="m", task="ks", score_name="accuracy",
          metric_name="rankme", pooling="sum") -> list[ResultRow]:
    """Rows from {(step, layer): value}; checkpoint names are ``c<step>``."""
    rows = [ResultRow(model, f"c{s}", s, "unlabelled", layer, pooling, metric_name, v, 100,
                      16, conventions={"eps": 1e-7}) for (s, layer), v in metric.items()]
    rows += [ResultRow(model, f"c{s}", s, "labelled", layer, "mean", score_name, v, 50, 16,
                       task=task, split="test", domain="in", conventions={"seed": 0})
             for (s, layer), v in score.items()]
    return rows


def _records(losses: dict[int, float | None], model="m") -> list[CheckpointRecord]:
    return [CheckpointRecord(model, f"c{s}", f"/runs/c{s}", "speechrank", s,
                             training={} if loss is None else {"loss": loss})
            for s, loss in losses.items()]


def test_regret_fractions_known_answer():
    steps = [0, 10, 20, 30]
    score = dict(zip(steps, [0.1, 0.5, 0.3, 0.4], strict=True))
    metric = dict(zip(steps, [1.0, 2.0, 5.0, 3.0], strict=True))  # picks step 20
    losses = {0: None, 10: 1.0, 20: 2.0, 30: 3.0}  # lowest loss at step 10; none at step 0
    rows = _rows({(s, "0"): metric[s] for s in steps}, {(s, "0"): score[s] for s in steps})
    rep = correlate(rows, AnalysisOptions(n_bootstrap=0), checkpoints=_records(losses))
    (b,) = rep.baselines
    assert (b.picked, b.last, b.lowest_loss) == ("c20", "c30", "c10")
    assert b.regret_metric == pytest.approx((0.5 - 0.3) / 0.4)
    assert b.regret_last == pytest.approx((0.5 - 0.4) / 0.4)
    assert b.regret_loss == pytest.approx(0.0)
    assert b.score_range == pytest.approx(0.4) and b.loss_n == 3
    assert b.step_rho == pytest.approx(stats.spearmanr(steps, list(score.values())).statistic)
    # minus the loss over the three checkpoints that have one
    assert b.loss_rho == pytest.approx(stats.spearmanr([-1, -2, -3], [0.5, 0.3, 0.4])
                                       .statistic)
    assert b.partial == pytest.approx(_reference_partial(list(metric.values()),
                                                         list(score.values()), steps))
    # the selection records carry the same fraction
    (sel,) = rep.best_checkpoint
    assert sel.regret == pytest.approx(0.2) and sel.regret_fraction == pytest.approx(0.5)
    (s,) = rep.summary
    assert s.checkpoint_regret_fraction_mean == pytest.approx(0.5)


def test_lower_is_better_scores_are_oriented_in_the_fractions():
    steps = [0, 10, 20]
    per = dict(zip(steps, [0.9, 0.2, 0.5], strict=True))  # best is step 10
    rows = _rows({(s, "0"): float(s) for s in steps}, {(s, "0"): per[s] for s in steps},
                 task="pr", score_name="per")
    (b,) = correlate(rows, AnalysisOptions(n_bootstrap=0)).baselines
    assert b.regret_metric == pytest.approx((0.5 - 0.2) / 0.7)  # the metric picks step 20
    assert b.regret_last == pytest.approx((0.5 - 0.2) / 0.7)


def _training_store(kind: str):
    """Five layers, twelve checkpoints; the score follows training plus a checkpoint effect
    ``h`` that the step does not know. ``kind``: ``nothing`` (the metric follows the step,
    with noise of its own), ``more`` (it is h), ``against`` (it is minus h)."""
    rng = np.random.default_rng(11)
    h = rng.normal(size=len(STEPS))
    metric, score = {}, {}
    for j, layer in enumerate(LAYERS):
        noise = rng.normal(size=len(STEPS))
        for i, s in enumerate(STEPS):
            score[(s, layer)] = 0.1 * i + 0.6 * h[i] + 0.01 * j
            if kind == "nothing":
                metric[(s, layer)] = 0.1 * i + 0.1 * noise[i] + 0.5 * (i == len(STEPS) - 1)
            else:
                metric[(s, layer)] = (1 if kind == "more" else -1) * h[i] + 0.01 * noise[i]
    losses = {s: (None if i == 0 else 5.0 - 0.3 * i) for i, s in enumerate(STEPS)}
    return _rows(metric, score), _records(losses)


@pytest.mark.parametrize(("kind", "outcome"), [("nothing", "nothing_more"),
                                                ("more", "told_more"),
                                                ("against", "against")])
def test_verdict_rule(kind, outcome):
    rows, records = _training_store(kind)
    rep = correlate(rows, AnalysisOptions(n_bootstrap=400), checkpoints=records)
    (v,) = rep.verdicts
    assert v.outcome == outcome, v.sentence
    assert v.loss_available and v.n_layers == 5 and v.n_checkpoints == 12
    assert v.told_more is (outcome == "told_more")
    if outcome == "told_more":
        assert v.partial_low > 0 and "partial" in v.grounds
        assert "RankMe-t told more than the step and the loss" in v.sentence
    elif outcome == "against":
        assert v.partial_high < 0 and "against the score" in v.sentence
    else:
        assert v.partial_low <= 0 <= v.partial_high
        assert "told nothing the step and the loss did not" in v.sentence
    assert headline_verdicts(rep) == [v]
    assert len(rep.baselines) == 5


def test_verdict_by_regret_alone():
    """The metric finds the best checkpoint (a peak before the end) while the last
    checkpoint and the lowest loss do not: told more on the regret, whatever the partial."""
    metric, score = {}, {}
    peak = 8
    for j, layer in enumerate(LAYERS):
        for i, s in enumerate(STEPS):
            score[(s, layer)] = (i if i <= peak else peak - 3 * (i - peak)) + 0.1 * j
            metric[(s, layer)] = -abs(i - peak) + 0.5 * ((i * (j + 3)) % 2)
    losses = {s: 10.0 - i for i, s in enumerate(STEPS)}
    rep = correlate(_rows(metric, score), AnalysisOptions(n_bootstrap=200),
                    checkpoints=_records(losses))
    (v,) = rep.verdicts
    assert v.regret_metric == pytest.approx(0.0)
    assert v.regret_last > 0.5 and v.regret_loss == pytest.approx(v.regret_last)
    assert v.outcome == "told_more" and "regret" in v.grounds


def test_without_records_the_loss_is_unavailable_not_an_error(tmp_path):
    rows, _ = _training_store("nothing")
    path = tmp_path / "old.sqlite"
    with ResultStore(path) as store:
        store.add_rows(rows)
    rep = correlate(path, AnalysisOptions(n_bootstrap=50))
    (v,) = rep.verdicts
    assert not v.loss_available and math.isnan(v.loss_rho) and math.isnan(v.regret_loss)
    assert math.isfinite(v.step_rho) and math.isfinite(v.partial)
    assert "told nothing the step did not" in v.sentence and "(no loss recorded)" in v.sentence
    assert any("no checkpoint records" in n for n in rep.notes)
    payload = json.loads(dumps_json(rep.to_dict()))
    assert payload["verdict"][0]["outcome"] == "nothing_more"
    assert payload["verdict"][0]["loss_rho"] is None


def test_records_in_the_store_are_read(tmp_path):
    rows, records = _training_store("more")
    path = tmp_path / "new.sqlite"
    with ResultStore(path) as store:
        store.add_rows(rows)
        for record in records:
            store.record_checkpoint(record)
    from_store = correlate(path, AnalysisOptions(n_bootstrap=100))
    from_rows = correlate(rows, AnalysisOptions(n_bootstrap=100), checkpoints=records)
    assert from_store.verdicts == from_rows.verdicts
    assert from_store.verdicts[0].loss_available


def test_the_record_step_wins_over_the_rows():
    rows, records = _training_store("more")
    moved = [r for r in records]
    # rows without a step: the records still give one
    stepless = [ResultRow(**{**r.to_dict(), "step": None}) for r in rows]
    rep = correlate(stepless, AnalysisOptions(n_bootstrap=0), checkpoints=moved)
    assert math.isfinite(rep.verdicts[0].step_rho)
    rep = correlate(stepless, AnalysisOptions(n_bootstrap=0))
    assert math.isnan(rep.verdicts[0].step_rho)
    assert any("without a training step" in n for n in rep.notes)


def test_bootstrap_intervals_depend_only_on_the_seed_and_the_data():
    rows, records = _training_store("more")
    a = correlate(rows, AnalysisOptions(n_bootstrap=200, seed=3), checkpoints=records).verdicts[0]
    renamed = [ResultRow(**{**r.to_dict(), "model": "other", "dataset": r.dataset + "/x"})
               for r in rows]
    b = correlate(renamed, AnalysisOptions(n_bootstrap=200, seed=3),
                  checkpoints=[CheckpointRecord("other", c.checkpoint, c.path,
                                                         c.format, c.step, c.digest,
                                                         c.training) for c in records]).verdicts[0]
    assert (a.partial_low, a.partial_high) == (b.partial_low, b.partial_high)
    c = correlate(rows, AnalysisOptions(n_bootstrap=200, seed=4), checkpoints=records).verdicts[0]
    assert (a.partial_low, a.partial_high) != (c.partial_low, c.partial_high)


def test_a_metric_the_step_determines_tells_nothing_beyond_it():
    """A metric that rises with every step has nothing left given the step: its partial
    rho is 0 (the formula's 0/0), in the sample and in the resamples, and the verdict says
    nothing more."""
    rows, records = _training_store("more")
    monotone = [ResultRow(**{**r.to_dict(), "value": float(r.step) + int(r.layer)})
                if not r.task else r for r in rows]
    rep = correlate(monotone, AnalysisOptions(n_bootstrap=200), checkpoints=records)
    (v,) = rep.verdicts
    assert all(b.partial == 0.0 for b in rep.baselines)
    assert (v.partial, v.partial_low, v.partial_high) == (0.0, 0.0, 0.0)
    assert v.metric_rho == pytest.approx(v.step_rho)
    assert v.outcome == "nothing_more"


def test_a_constant_metric_does_not_beat_the_step_on_a_probe_training_makes_worse():
    """Speaker identity falls as training goes on: a metric equal at every checkpoint picks
    the first by the tie rule and beats the last checkpoint, but not the first one, so it
    tells nothing the step does not."""
    rng = np.random.default_rng(5)
    metric, score = {}, {}
    for j, layer in enumerate(LAYERS):
        for i, s in enumerate(STEPS):
            score[(s, layer)] = 0.9 - 0.05 * i + 0.01 * rng.normal() + 0.01 * j
            metric[(s, layer)] = 7.0
    losses = {s: 10.0 - i for i, s in enumerate(STEPS)}
    rep = correlate(_rows(metric, score, task="sid"), AnalysisOptions(n_bootstrap=100),
                    checkpoints=_records(losses))
    (v,) = rep.verdicts
    assert v.regret_metric == pytest.approx(v.regret_first)
    assert v.regret_last > 0.9 and v.margin_last > v.margin_last_se
    assert v.outcome == "nothing_more" and v.grounds == ""
    assert "the first 0.0" in v.sentence
