"""The batched torch solver of the logistic probes against scikit-learn's lbfgs, the reference.

Both minimise scikit-learn's objective (weighted mean log-loss plus ||W||^2 / (2 C S), binomial
for two classes); these tests hold the batched solver to the same optimum, the same choice of
C and the same predictions on small problems, and check its bookkeeping (padding of narrower
layers, convergence flags, determinism, class weights, the named solver in every row).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from speechrank.cli import main
from speechrank.encoders import load_encoder
from speechrank.errors import SpeechrankError
from speechrank.probes import ProbeRun, run_probe
from speechrank.probes.batched import LbfgsOptions, fit_batched_logistic, logistic_objective
from speechrank.probes.config import (
    SOLVER_NAMES,
    CTCProbeConfig,
    LogisticConfig,
    UtteranceProbeConfig,
)
from speechrank.probes.linear import (
    fit_logistic_probe,
    fit_logistic_probes,
    path_objectives,
)
from speechrank.probes.recipes import recipe_with
from speechrank.sweep import probe_recipe

from .conftest import write_csv_manifest, write_tone

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GRID = (0.01, 0.1, 1.0, 10.0)


def _layers(n: int, dims: tuple[int, ...], classes: int, seed: int = 0,
            noise: float = 1.5) -> tuple[list[np.ndarray], np.ndarray]:
    """Feature matrices of several widths that share one set of labels."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, max(dims)))
    y = np.argmax(base @ rng.standard_normal((max(dims), classes))
                  + noise * rng.standard_normal((n, classes)), axis=1)
    xs = [(base[:, :d] + 0.3 * rng.standard_normal((n, d))) for d in dims]
    return [(x - x.mean(0)) / x.std(0) for x in xs], y


def _sklearn(x: np.ndarray, y: np.ndarray, c: float, tol: float, **kwargs) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, tol=tol, max_iter=10_000, **kwargs).fit(x, y)


def _numpy_gradient(x, y, coef, intercept, c, weights=None):
    """The objective's gradient in float64 numpy (an independent implementation)."""
    z = x @ coef.T + intercept
    if coef.shape[0] == 1:
        z = np.concatenate([np.zeros((len(z), 1)), z], axis=1)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    if coef.shape[0] == 1:
        p = p[:, 1:]
    w = np.ones(len(y)) if weights is None else weights
    r = p * (w / w.sum())[:, None]
    return np.concatenate([(r.T @ x + coef / (c * w.sum())).ravel(), r.sum(0)])


@pytest.mark.parametrize("classes", [2, 5])
def test_the_batched_optimum_is_scikit_learns(classes):
    xs, y = _layers(300, (12, 8, 12), classes)
    fit = fit_batched_logistic(xs, y, classes, GRID, LbfgsOptions(tol=1e-7, max_iter=5000))
    assert fit.converged.all()
    assert fit.weights.shape == (3, len(GRID), 1 if classes == 2 else classes, 12)
    assert np.all(fit.weights[1, :, :, 8:] == 0.0)  # the narrower layer's padding stays zero
    for layer, x in enumerate(xs):
        for g, c in enumerate(GRID):
            reference = _sklearn(x, y, c, tol=1e-7)
            ours = fit.weights[layer, g, :, :x.shape[1]], fit.intercepts[layer, g]
            mine = logistic_objective(x, y, *ours, c)
            theirs = logistic_objective(x, y, reference.coef_, reference.intercept_, c)
            assert mine == pytest.approx(theirs, rel=1e-9)
            assert mine == pytest.approx(fit.objective[layer, g], rel=1e-12)
            assert np.allclose(ours[0], reference.coef_, atol=1e-5)
            decision = x @ ours[0].T + ours[1]
            predicted = ((decision[:, 0] > 0).astype(int) if classes == 2
                         else decision.argmax(1))
            assert np.array_equal(predicted, reference.predict(x))


def test_two_classes_use_the_binomial_loss():
    """A two-class multinomial penalising both class vectors would be the model at 2 C: the
    weights must be scikit-learn's binomial ones, not half or double them."""
    xs, y = _layers(200, (6,), 2, seed=3)
    fit = fit_batched_logistic(xs, y, 2, (1.0,), LbfgsOptions(tol=1e-8, max_iter=5000))
    reference = _sklearn(xs[0], y, 1.0, tol=1e-8)
    assert fit.weights[0, 0] == pytest.approx(reference.coef_, rel=1e-6, abs=1e-8)
    assert fit.intercepts[0, 0] == pytest.approx(reference.intercept_, rel=1e-6, abs=1e-8)


def test_at_w_zero_the_objective_is_log_k():
    x = np.random.default_rng(0).standard_normal((50, 4))
    y = np.arange(50) % 5
    assert logistic_objective(x, y, np.zeros((5, 4)), np.zeros(5), 1.0) == pytest.approx(
        np.log(5))
    assert logistic_objective(x, y % 2, np.zeros((1, 4)), np.zeros(1), 1.0) == pytest.approx(
        np.log(2))


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), classes=st.sampled_from([2, 3, 7]),
       c=st.sampled_from([0.01, 1.0, 100.0]), balanced=st.booleans())
def test_a_converged_fit_meets_the_stopping_rule(seed, classes, c, balanced):
    """Property: where the solver says converged, an independent numpy gradient of the
    objective has no entry above tol (the rule scikit-learn's lbfgs stops on)."""
    xs, y = _layers(80, (5, 3), classes, seed=seed)
    if len(np.unique(y)) < classes:
        return
    weights = (len(y) / (classes * np.bincount(y)))[y] if balanced else None
    tol = 1e-6
    fit = fit_batched_logistic(xs, y, classes, (c,), LbfgsOptions(tol=tol, max_iter=3000),
                               sample_weight=weights)
    for layer, x in enumerate(xs):
        grad = _numpy_gradient(x, y, fit.weights[layer, 0, :, :x.shape[1]],
                               fit.intercepts[layer, 0], c, weights)
        if fit.converged[layer, 0]:
            assert np.abs(grad).max() <= tol * (1 + 1e-6)
        assert np.abs(grad).max() == pytest.approx(fit.grad_max[layer, 0], rel=1e-6,
                                                   abs=1e-12)


def _splits(seed: int = 0, classes: int = 6, dim: int = 10) -> dict:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((dim, classes))
    out = {}
    for name, n in (("train", 400), ("dev", 150), ("test", 300)):
        x = rng.standard_normal((n, dim)) * 2.0 + 1.0
        out[name] = (x, np.array([f"c{k}" for k in
                                  np.argmax(x @ w + 2.0 * rng.gumbel(size=(n, classes)), 1)]))
    return out


@pytest.mark.parametrize("fit_dtype", ["float64", "float32"])
def test_recipe_level_equivalence_with_the_reference(fit_dtype):
    """The probe as run (standardised, C chosen on dev, default tolerance): the same C, the
    same objective to 1e-4 at every C, at least 99 % of test predictions identical, and
    every score within its standard error."""
    problems = [_splits(seed) for seed in range(3)]
    config = LogisticConfig(fit_dtype=fit_dtype, solver="sklearn")
    torch_fits = fit_logistic_probes(problems, dataclasses.replace(config, solver="torch"))
    reference = fit_logistic_probes(problems, config)
    for splits, ours, theirs in zip(problems, torch_fits, reference, strict=True):
        assert ours.solver == SOLVER_NAMES["torch"] and theirs.solver == "sklearn-lbfgs"
        assert ours.chosen_c == theirs.chosen_c
        assert all(ours.converged) and all(theirs.converged)
        assert np.allclose(path_objectives(ours, splits, config),
                           path_objectives(theirs, splits, config), rtol=1e-4, atol=0)
        same = np.mean(ours.correct["test"] == theirs.correct["test"])
        assert same >= 0.99
        for split in ("train", "dev", "test"):
            acc = theirs.scores[split]["accuracy"]
            se = np.sqrt(acc * (1 - acc) / theirs.n_rows[split])
            assert abs(ours.scores[split]["accuracy"] - acc) <= se


def test_layers_fitted_together_or_alone_agree():
    problems = [_splits(seed, dim=d) for seed, d in ((0, 10), (1, 7), (2, 10))]
    config = LogisticConfig(c_grid=(0.1, 1.0, 10.0), solver="torch")
    together = fit_logistic_probes(problems, config)
    alone = [fit_logistic_probe(p, config) for p in problems]
    again = fit_logistic_probes(problems, config)
    for a, b, c in zip(together, alone, again, strict=True):
        assert a.scores == c.scores and a.n_iter == c.n_iter  # deterministic
        assert a.chosen_c == b.chosen_c and a.dev_curve == b.dev_curve
        for name in a.correct:
            assert np.array_equal(a.correct[name], b.correct[name])


def test_different_labels_are_separate_batches():
    first, second = _splits(0), _splits(1)
    second = {**second, "train": (second["train"][0], np.roll(second["train"][1], 7))}
    config = LogisticConfig(c_grid=(1.0,), solver="torch")
    both = fit_logistic_probes([first, second], config)
    assert both[0].scores == fit_logistic_probe(first, config).scores
    assert both[1].scores == fit_logistic_probe(second, config).scores


def test_balanced_class_weights_match_the_reference():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 6))
    y = np.where(x[:, 0] > 0.8, 2, np.where(x[:, 1] > 0.5, 1, 0))  # unbalanced classes
    splits = {"train": (x[:200], y[:200]), "dev": (x[200:], y[200:])}
    config = LogisticConfig(c_grid=(0.1, 1.0), class_weight="balanced", tol=1e-8,
                            max_iter=5000)
    ours = fit_logistic_probe(splits, dataclasses.replace(config, solver="torch"))
    theirs = fit_logistic_probe(splits, config)
    assert np.allclose(path_objectives(ours, splits, config),
                       path_objectives(theirs, splits, config), rtol=1e-8)
    unweighted = fit_logistic_probe(splits, dataclasses.replace(config, class_weight="none"))
    assert not np.allclose(unweighted.path[0].coef_, theirs.path[0].coef_, atol=1e-3)


def test_an_iteration_cap_is_recorded_as_not_converged():
    config = LogisticConfig(c_grid=(1.0, 10.0), max_iter=3, solver="torch")
    fit = fit_logistic_probe(_splits(0), config)
    assert fit.converged == [False, False] and fit.n_iter == [3, 3]
    assert not fit.chosen_converged


def test_solver_options_are_checked():
    with pytest.raises(ValueError, match="solver"):
        LogisticConfig(solver="newton")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="class_weight"):
        LogisticConfig(class_weight="auto")  # type: ignore[arg-type]
    assert recipe_with(UtteranceProbeConfig(), {"solver": "torch"},
                       kind="utterance").logistic.solver == "torch"
    with pytest.raises(SpeechrankError, match="do not apply"):
        recipe_with(CTCProbeConfig(), {"solver": "sklearn"}, kind="ctc")
    with pytest.raises(SpeechrankError, match="solver"):
        recipe_with(UtteranceProbeConfig(), {"solver": "lbfgs"}, kind="utterance")
    assert probe_recipe("utterance", {"solver": "sklearn"}).logistic.solver == "sklearn"
    with pytest.raises(SpeechrankError, match="solver"):
        probe_recipe("frames", {"solver": "cuda"})
    with pytest.raises(SpeechrankError, match="do not apply"):
        probe_recipe("ctc", {"solver": "torch"})


def test_cli_names_a_bad_solver_in_one_line(fsdd_root, capsys):
    assert main(["probe", "random:tiny", f"fsdd:{fsdd_root}", "--task", "ks", "--solver",
                 "newton", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "solver" in err and "newton" in err


def test_probe_rows_name_their_solver(tmp_path):
    rows = []
    for i in range(30):
        label = ("low", "mid", "high")[i % 3]
        freq = {"low": 200.0, "mid": 500.0, "high": 1100.0}[label] + 5 * i
        path = write_tone(tmp_path / "audio" / f"t{i:02d}.wav", 0.3 + 0.02 * i, freq=freq,
                          seed=i)
        rows.append({"path": str(path.relative_to(tmp_path)), "pitch": label,
                     "split": ("train", "train", "train", "dev", "test")[i % 5]})
    manifest = str(write_csv_manifest(tmp_path / "tones.csv", rows))
    encoder = load_encoder("random:tiny")
    results = {solver: run_probe(encoder, manifest, "label:pitch",
                                 run=ProbeRun(cache_dir=tmp_path / "c", config={"solver": solver}),
                                 progress=False)
               for solver in ("torch", "sklearn")}
    assert run_probe(encoder, manifest, "label:pitch", run=ProbeRun(cache_dir=tmp_path / "c"),
                     progress=False).rows == results["torch"].rows  # the default
    for solver, result in results.items():
        assert {r.conventions["solver"] for r in result.rows} == {SOLVER_NAMES[solver]}
        assert {r.conventions["class_weight"] for r in result.rows} == {"none"}
        assert all(len(fit["n_iter_per_c"]) == 5 for fit in result.info["fits"].values())
    for a, b in zip(results["torch"].rows, results["sklearn"].rows, strict=True):
        assert (a.layer, a.split, a.metric) == (b.layer, b.split, b.metric)
        if a.metric == "accuracy":
            assert abs(a.value - b.value) <= max(b.conventions["standard_error"], 1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fit_equals_the_cpu_fit():
    xs, y = _layers(400, (16, 16), 4)
    cpu = fit_batched_logistic(xs, y, 4, GRID, LbfgsOptions(tol=1e-8, max_iter=5000))
    gpu = fit_batched_logistic(xs, y, 4, GRID,
                               LbfgsOptions(tol=1e-8, max_iter=5000, device="cuda"))
    assert np.allclose(gpu.objective, cpu.objective, rtol=1e-9)
