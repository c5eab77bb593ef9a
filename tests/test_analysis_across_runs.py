"""compare_runs: several runs (models) of one store compared at one step each, the Spearman
across runs of every signal with the probe score and the regret of choosing a run by it."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats

from speechrank.analysis.across_runs import compare_runs
from speechrank.analysis.options import AnalysisOptions
from speechrank.errors import SpeechrankError
from speechrank.results import ResultRow, dumps_json
from speechrank.store import CheckpointRecord, ResultStore

# run: (quality at the end, pretraining loss at the end, last step)
RUNS = {"lr-x0.1": (0.30, 2.0, 200), "default": (0.70, 3.0, 200), "lr-x5": (0.50, 1.0, 200),
        "hubert-k20": (0.60, 4.0, 200), "long": (0.80, 5.0, 300)}
LAYERS = ["0", "1", "2"]


def _store(tmp_path, runs=RUNS, *, records=True):
    rows, recs = [], []
    for run, (quality, loss, last) in runs.items():
        for step in range(0, last + 1, 100):
            grown = quality * step / 200
            ckpt = f"checkpoint-{step:06d}"
            for j, layer in enumerate(LAYERS):
                rows.append(ResultRow(run, ckpt, step, f"synthetic:/{run}/corpus", layer, "sum",
                                      "rankme", 10 + 20 * grown + j, 100, 16))
                rows.append(ResultRow(run, ckpt, step, f"synthetic:/{run}/corpus", layer,
                                      "sum", "alpha_req", 2 - grown, 100, 16))
                rows.append(ResultRow(run, ckpt, step, f"synthetic:/{run}/corpus", layer,
                                      "mean", "accuracy", 0.1 + grown + 0.01 * j, 50, 16,
                                      task="ks", split="test", domain="in"))
            recs.append(CheckpointRecord(run, ckpt, f"/{run}/{ckpt}", "speechrank", step,
                                         training={"loss": loss + (200 - step) / 100,
                                                   "accuracy": 0.2}))
    path = tmp_path / "runs.sqlite"
    with ResultStore(path) as store:
        store.add_rows(rows)
        if records:
            for r in recs:
                store.record_checkpoint(r)
    return path


def _one(result, signal, layer="1"):
    return next(r for r in result.records if r.signal == signal and r.layer == layer)


def test_runs_compared_at_the_last_shared_step(tmp_path):
    result = compare_runs(_store(tmp_path), options=AnalysisOptions(n_bootstrap=200))
    assert result.step == 200
    assert {p.run for p in result.runs} == set(RUNS)
    assert all(p.step == 200 for p in result.runs)
    rank = _one(result, "rankme/sum")
    assert rank.n_runs == 5 and rank.spearman == pytest.approx(1.0)
    assert rank.picked == "long" and rank.best == ("long",) and rank.regret == 0.0
    alpha = _one(result, "alpha_req/sum")  # negated: the lowest alpha is the best run
    assert alpha.metric_orientation == -1 and alpha.spearman == pytest.approx(1.0)
    loss = _one(result, "loss")  # lowest loss: lr-x5, quality 0.5 of 0.3..0.8
    order = sorted(RUNS)
    want = stats.spearmanr([-RUNS[r][1] for r in order], [RUNS[r][0] for r in order])
    assert loss.kind == "training" and loss.spearman == pytest.approx(want.statistic)
    assert loss.picked == "lr-x5"
    assert loss.regret == pytest.approx(0.8 - 0.5)
    assert loss.regret_fraction == pytest.approx((0.8 - 0.5) / (0.8 - 0.3))
    assert -1 <= loss.spearman_low <= loss.spearman <= loss.spearman_high <= 1
    # datasets differ per run (one corpus each): matched anyway
    assert rank.metric_dataset == "(per run)" and rank.probe_dataset == "(per run)"
    summary = next(s for s in result.summary if s.signal == "rankme/sum")
    assert summary.n_layers == 3 and summary.rho_median == pytest.approx(1.0)
    assert summary.n_best == 3 and summary.regret_fraction_mean == 0.0
    assert "step" not in {r.signal for r in result.records}  # one step: no step baseline
    payload = json.loads(dumps_json(result.to_dict()))
    assert payload["step"] == 200 and len(payload["runs"]) == 5
    assert any("5 runs: a bootstrap interval" in n for n in result.notes)


def test_each_runs_last_checkpoint_and_a_chosen_step(tmp_path):
    path = _store(tmp_path)
    last = compare_runs(path, step="last", options=AnalysisOptions(n_bootstrap=0))
    steps = {p.run: p.step for p in last.runs}
    assert steps["long"] == 300 and steps["default"] == 200
    assert "step" in {r.signal for r in last.records}  # the steps differ: a baseline
    at = compare_runs(path, step=100, options=AnalysisOptions(n_bootstrap=0))
    assert at.step == 100 and len(at.runs) == 5 and not at.left_out
    with pytest.raises(SpeechrankError, match="fewer than 2 runs measured at step 300"):
        compare_runs(path, step=300)


def test_a_run_without_the_step_is_left_out(tmp_path):
    runs = {**RUNS, "short": (0.9, 1.0, 100)}
    result = compare_runs(_store(tmp_path, runs), step=200, options=AnalysisOptions(n_bootstrap=0))
    assert "short" in result.left_out and len(result.runs) == 5
    assert any("short left out" in n for n in result.notes)
    # by default the last step every run shares: 100
    quick = AnalysisOptions(n_bootstrap=0)
    assert compare_runs(tmp_path / "runs.sqlite", options=quick).step == 100


def test_without_records_there_is_no_loss_baseline(tmp_path):
    result = compare_runs(_store(tmp_path, records=False), options=AnalysisOptions(n_bootstrap=0))
    assert result.step == 200
    assert {r.kind for r in result.records} == {"metric"}
    assert any("no loss baseline" in n for n in result.notes)


def test_rows_with_records_give_the_same_as_the_store(tmp_path):
    path = _store(tmp_path)
    with ResultStore(path, create=False) as store:
        rows, records = store.rows(), store.checkpoints()
    a = compare_runs(path, options=AnalysisOptions(n_bootstrap=100, seed=1))
    b = compare_runs(rows, records, options=AnalysisOptions(n_bootstrap=100, seed=1))
    assert a.to_dict() == b.to_dict()


@pytest.mark.parametrize(("runs", "match"), [
    ({"default": RUNS["default"]}, "at least 2 runs"),
    ({"a": (0.5, 1.0, 100), "b": (0.5, 1.0, 0)}, None),
])
def test_too_few_runs_or_no_shared_step(tmp_path, runs, match):
    path = _store(tmp_path, runs)
    if match:
        with pytest.raises(SpeechrankError, match=match):
            compare_runs(path)
        return
    result = compare_runs(path, options=AnalysisOptions(n_bootstrap=0))  # they share step 0 only
    assert result.step == 0
    rank = _one(result, "rankme/sum")
    assert rank.n_runs == 2 and math.isnan(rank.spearman) and "fewer than 3" in rank.reason


def test_bad_step_is_refused(tmp_path):
    with pytest.raises(SpeechrankError, match="step must be"):
        compare_runs(_store(tmp_path), step="first")  # type: ignore[arg-type]
