"""Layers chosen without labels: the last and first layer, each metric's highest layer and
IsoScore's, with the regret as a fraction of the score range over layers; IsoScore itself
against the step-by-step algorithm of Rudman et al. (2022)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from speechrank.analysis import correlate
from speechrank.analysis.options import AnalysisOptions
from speechrank.metrics import formulas
from speechrank.results import ResultRow

LAYERS = ["cnn", "0", "1", "2"]


def _reference_isoscore(points: np.ndarray) -> float:
    """IsoScore as Rudman et al. define it, step by step: points (n dims x m samples), PCA
    reorientation, the variance vector, its normalisation to norm sqrt(n), the isotropy
    defect, the fraction of dimensions used, and the score."""
    n = points.shape[0]
    centred = points - points.mean(axis=1, keepdims=True)
    _, vectors = np.linalg.eigh(np.cov(points))
    rotated = vectors.T @ centred
    variances = np.diag(np.cov(rotated))
    normalised = variances * math.sqrt(n) / np.linalg.norm(variances)
    defect = np.linalg.norm(normalised - 1.0) / math.sqrt(2 * (n - math.sqrt(n)))
    return ((n - defect ** 2 * (n - math.sqrt(n))) ** 2 - n) / (n * (n - 1))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("dim", "samples"), [(3, 100), (16, 40), (8, 5)])
def test_isoscore_is_the_published_algorithm(seed, dim, samples):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(dim, samples)) * rng.uniform(0.1, 3.0, size=(dim, 1))
    eigenvalues = np.clip(np.linalg.eigvalsh(np.cov(points)), 0.0, None)
    assert formulas.isoscore(eigenvalues, dim) == pytest.approx(
        _reference_isoscore(points), abs=1e-9)


def test_isoscore_ends():
    assert formulas.isoscore(np.ones(5), 5) == pytest.approx(1.0)  # every direction alike
    assert formulas.isoscore(np.array([2.0, 0, 0, 0]), 4) == pytest.approx(0.0)  # a line
    assert math.isnan(formulas.isoscore(np.zeros(3), 3))
    assert math.isnan(formulas.isoscore(np.ones(1), 1))


def _rows(scores: dict[str, float], metrics: dict[str, dict[str, float]], *,
          dim: int = 16) -> list[ResultRow]:
    rows = []
    for step in (0, 100):
        for layer, value in scores.items():
            rows.append(ResultRow("m", f"c{step}", step, "labelled", layer, "mean", "accuracy",
                                  value + step / 1000, 50, dim, task="ks", split="test",
                                  domain="in"))
        for name, by_layer in metrics.items():
            metric, pooling = name.split("/")
            for layer, value in by_layer.items():
                rows.append(ResultRow("m", f"c{step}", step, "unlabelled", layer, pooling,
                                      metric, value, 100, dim))
    return rows


def test_layer_choice_known_answer():
    scores = {"cnn": 0.3, "0": 0.2, "1": 0.8, "2": 0.5}  # best layer 1, worst layer 0
    metrics = {
        "rankme/sum": {"cnn": 1.0, "0": 2.0, "1": 9.0, "2": 3.0},  # picks 1
        "participation_ratio/frames": {"cnn": 5.0, "0": 7.0, "1": 2.0, "2": 6.0},  # picks 0
        "alpha_req/sum": {"cnn": 2.0, "0": 1.0, "1": 3.0, "2": 0.5},  # negated: picks 2
    }
    rep = correlate(_rows(scores, metrics), AnalysisOptions(n_bootstrap=0))
    summary = {s.selector: s for s in rep.layer_choice_summary}
    expected = {"rankme/sum": 0.0, "last layer": (0.8 - 0.5) / 0.6,
                "first layer": (0.8 - 0.3) / 0.6, "participation_ratio/frames": 1.0,
                "isoscore/frames": 1.0, "alpha_req/sum": (0.8 - 0.5) / 0.6}
    for name, fraction in expected.items():
        s = summary[name]
        assert s.n_checkpoints == 2, name
        assert s.regret_fraction_median == pytest.approx(fraction), name
        assert s.regret_fraction_mean == pytest.approx(fraction), name
        assert s.n_best == (2 if fraction == 0 else 0), name
    picks = {(c.selector, c.checkpoint): c for c in rep.layer_choice}
    assert picks[("rankme/sum", "c0")].picked == "1"
    assert picks[("last layer", "c100")].picked == "2"
    assert picks[("first layer", "c0")].picked == "cnn"
    iso = picks[("isoscore/frames", "c0")]
    assert iso.picked == "0" and iso.best == ("1",)
    assert iso.regret == pytest.approx(0.6) and iso.regret_fraction == pytest.approx(1.0)
    # only the featured selectors have per-checkpoint records
    assert {c.selector for c in rep.layer_choice} == {"rankme/sum", "isoscore/frames",
                                                      "last layer", "first layer"}
    # the best-layer selections of correlate carry the same fraction
    sel = next(s for s in rep.best_layer if s.metric == "alpha_req")
    assert sel.regret_fraction == pytest.approx(0.5)


def test_isoscore_follows_the_width_not_only_the_ratio():
    scores = {"0": 0.2, "1": 0.8}
    rows = _rows(scores, {"participation_ratio/frames": {"0": 4.0, "1": 4.0}})
    # the same participation ratio in a narrower layer is more isotropic
    rows = [ResultRow(**{**r.to_dict(), "dim": 8}) if r.layer == "1" else r for r in rows]
    rep = correlate(rows, AnalysisOptions(n_bootstrap=0))
    pick = next(c for c in rep.layer_choice if c.selector == "isoscore/frames")
    assert pick.picked == "1" and pick.regret_fraction == 0.0


def test_undefined_choices_have_reasons():
    rows = _rows({"0": 0.5, "1": 0.5}, {"rankme/sum": {"0": 1.0, "1": 2.0}})
    rep = correlate(rows, AnalysisOptions(n_bootstrap=0))
    choice = next(c for c in rep.layer_choice if c.selector == "rankme/sum")
    assert math.isnan(choice.regret_fraction) and "same score" in choice.reason
    summary = next(s for s in rep.layer_choice_summary if s.selector == "rankme/sum")
    assert summary.n_checkpoints == 0 and math.isnan(summary.regret_fraction_median)
