"""Linear classification probes on frozen features, with ``C`` chosen on dev.

A linear probe (Alain & Bengio, "Understanding intermediate layers using linear classifier
probes", arXiv 1610.01644) measures how much label information a layer exposes linearly:
multinomial logistic regression with an L2 penalty (scikit-learn, lbfgs) on z-scored features.
The regularisation strength is the only hyperparameter; it is chosen on dev from a small grid
and the chosen model is then scored on train, dev and test. Test never takes part in a choice.

Everything here works on numpy arrays, so it can be tested without audio or encoders.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from speechrank.probes.config import LogisticConfig

__all__ = [
    "LogisticProbeFit",
    "chance_levels",
    "classification_scores",
    "fit_logistic_probe",
    "fit_logistic_probes",
    "problem_digest",
    "rescore",
    "summarise_curve",
]


@dataclasses.dataclass
class LogisticProbeFit:
    """What a logistic probe scored.

    Attributes:
        scores: ``split -> {"accuracy": .., "macro_f1": ..}`` for the chosen ``C``.
        chosen_c: the inverse L2 strength picked on dev.
        dev_curve: dev ``selection_metric`` for every ``C`` in the ascending grid.
        converged: whether lbfgs converged, per ``C`` in the ascending grid.
        chosen_index: position of ``chosen_c`` in the (ascending) grid.
        n_rows: examples per split.
        dim: feature width.
        correct: ``split -> bool [n]``, whether the chosen probe got each example right (for
            standard errors, :mod:`speechrank.probes.stderr`).
        predictor: the train scaler, the chosen model and the dtype it was fitted in, which
            :func:`rescore` applies to other evaluation splits.
    """

    scores: dict[str, dict[str, float]]
    chosen_c: float
    dev_curve: list[float]
    converged: list[bool]
    chosen_index: int
    n_rows: dict[str, int]
    dim: int
    correct: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    predictor: tuple[StandardScaler, LogisticRegression, str] | None = None

    @property
    def chosen_converged(self) -> bool:
        """Whether the fit that produced the scores converged."""
        return self.converged[self.chosen_index]


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 (unweighted mean of per-class F1 over the classes present in
    ``y_true`` or ``y_pred``; a class with no true and no predicted example is left out, one
    with no prediction scores 0)."""
    if len(y_true) == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan")}
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def chance_levels(y_train: np.ndarray, y_eval: np.ndarray) -> dict[str, float]:
    """Two chance references for an evaluation split.

    ``majority``: accuracy of always predicting the most frequent train class (ties to the
    smallest label); ``uniform``: ``1 / number of train classes``.
    """
    classes, counts = np.unique(y_train, return_counts=True)
    majority = classes[int(np.argmax(counts))]
    return {
        "majority": float(np.mean(y_eval == majority)) if len(y_eval) else float("nan"),
        "uniform": 1.0 / len(classes),
    }


def _fit_one(model: LogisticRegression, x: np.ndarray, y: np.ndarray, c: float
             ) -> tuple[LogisticRegression, bool]:
    """Fit ``model`` at inverse strength ``c``, starting from its previous solution (warm
    start along the regularisation path: the optimum is the same, lbfgs gets there in fewer
    iterations); returns a frozen copy and whether lbfgs converged."""
    model.set_params(C=c)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return copy.deepcopy(model), converged


def fit_logistic_probe(splits: dict[str, tuple[np.ndarray, np.ndarray]],
                       config: LogisticConfig | None = None) -> LogisticProbeFit:
    """Fit the probe on ``train``, choose ``C`` on ``dev``, score every split.

    Args:
        splits: ``{"train": (X, y), "dev": (X, y), "test": (X, y)}`` with ``X`` of shape
            ``[n, D]`` (any float dtype; promoted to float64) and integer or string labels.
            ``test`` is optional and never used for a choice.
        config: the recipe (defaults: :class:`LogisticConfig`).

    The scaler is fitted on train only (in float64; lbfgs then works in
    ``config.fit_dtype``). lbfgs is deterministic, so the same inputs give the
    same numbers; there is no random state to seed.
    """
    config = config or LogisticConfig()
    with threadpool_limits(limits=config.blas_threads):
        return _fit_logistic_probe(splits, config)


def problem_digest(splits: dict[str, tuple[np.ndarray, np.ndarray]],
                   config: LogisticConfig) -> str:
    """A digest of what decides a fit: the recipe and the train and dev arrays (values, dtype,
    shape, labels). Two problems with the same digest get the same fit, whatever their test
    splits hold (the keyword probe tested on the probe speakers and on unseen voices)."""
    digest = hashlib.blake2b(repr(dataclasses.asdict(config)).encode(), digest_size=20)
    for name in ("train", "dev"):
        x, y = splits[name]
        x = np.ascontiguousarray(x)
        labels = np.asarray(y).astype(str)
        digest.update(f"{name}|{x.dtype}|{x.shape}|{labels.shape}".encode())
        digest.update(x.tobytes())
        digest.update("\x1f".join(labels.tolist()).encode())
    return digest.hexdigest()


def rescore(fit: LogisticProbeFit, splits: dict[str, tuple[np.ndarray, np.ndarray]]
            ) -> LogisticProbeFit:
    """``fit`` (fitted on the same train and dev, see :func:`problem_digest`) scored on every
    split of ``splits``: the choice of ``C`` and the model are ``fit``'s; scores, row counts
    and per-example correctness are recomputed from ``splits``."""
    if fit.predictor is None:
        raise ValueError("this fit kept no predictor to rescore with")
    scaler, model, fit_dtype = fit.predictor
    predicted = {name: model.predict(scaler.transform(np.asarray(x, dtype=np.float64))
                                     .astype(fit_dtype, copy=False))
                 for name, (x, _) in splits.items()}
    return dataclasses.replace(
        fit, scores={name: classification_scores(np.asarray(y), predicted[name])
                     for name, (_, y) in splits.items()},
        n_rows={name: len(y) for name, (_, y) in splits.items()},
        correct={name: np.asarray(predicted[name] == np.asarray(y)) for name, (_, y) in
                 splits.items()})


def fit_logistic_probes(problems: Sequence[dict[str, tuple[np.ndarray, np.ndarray]]],
                        config: LogisticConfig | None = None, *, workers: int = 1
                        ) -> list[LogisticProbeFit]:
    """:func:`fit_logistic_probe` on each of ``problems`` (e.g. the layers of one model), in
    ``workers`` processes.

    lbfgs holds one core per fit (its BLAS is limited to ``config.blas_threads``; two BLAS
    threads made these fits slower, not faster, in our measurement), so layers fitted side by
    side are what uses a second core. The processes are joblib's ``loky`` workers (started
    once and reused by later calls); each fit is the same deterministic computation as in
    this process, so the results do not depend on ``workers``.
    """
    if workers <= 1 or len(problems) <= 1:
        return [fit_logistic_probe(splits, config) for splits in problems]
    from joblib import Parallel, delayed

    return list(Parallel(n_jobs=min(workers, len(problems)), backend="loky")(
        delayed(fit_logistic_probe)(splits, config) for splits in problems))


def _fit_logistic_probe(splits: dict[str, tuple[np.ndarray, np.ndarray]],
                        config: LogisticConfig) -> LogisticProbeFit:
    if "train" not in splits or "dev" not in splits:
        raise ValueError("a logistic probe needs a train and a dev split")
    x_train, y_train = splits["train"]
    if len(np.unique(y_train)) < 2:
        raise ValueError("the train split holds fewer than 2 classes")
    scaler = StandardScaler(with_mean=config.standardise, with_std=config.standardise)
    scaler.fit(np.asarray(x_train, dtype=np.float64))
    fit_dtype = np.dtype(config.fit_dtype)
    prepared = {name: (scaler.transform(np.asarray(x, dtype=np.float64)).astype(fit_dtype,
                                                                               copy=False),
                       np.asarray(y))
                for name, (x, y) in splits.items()}
    x_tr, y_tr = prepared["train"]
    x_dev, y_dev = prepared["dev"]

    best: tuple[float, int, LogisticRegression] | None = None
    dev_curve: list[float] = []
    converged: list[bool] = []
    path_model = LogisticRegression(solver="lbfgs", max_iter=config.max_iter, tol=config.tol,
                                    warm_start=True)
    for index, c in enumerate(sorted(config.c_grid)):
        model, ok = _fit_one(path_model, x_tr, y_tr, c)
        score = classification_scores(y_dev, model.predict(x_dev))[config.selection_metric]
        dev_curve.append(score)
        converged.append(ok)
        if best is None or score > best[0]:  # strict: ties keep the smaller C
            best = (score, index, model)
    assert best is not None
    _, chosen_index, model = best
    predicted = {name: model.predict(x) for name, (x, _) in prepared.items()}
    scores = {name: classification_scores(y, predicted[name]) for name, (_, y) in
              prepared.items()}
    fit = LogisticProbeFit(
        scores=scores, chosen_c=float(sorted(config.c_grid)[chosen_index]),
        dev_curve=dev_curve, converged=converged, chosen_index=chosen_index,
        n_rows={name: len(y) for name, (_, y) in prepared.items()}, dim=x_tr.shape[1],
        correct={name: np.asarray(predicted[name] == y) for name, (_, y) in
                 prepared.items()},
        predictor=(scaler, model, config.fit_dtype))
    return fit


def summarise_curve(grid: Sequence[float], curve: Sequence[float]) -> list[dict[str, Any]]:
    """``[{"C": c, "dev": score}, ...]`` for the JSON conventions."""
    return [{"C": float(c), "dev": float(s)} for c, s in zip(grid, curve, strict=True)]
