"""Linear classification probes on frozen features, with ``C`` chosen on dev.

A linear probe (Alain & Bengio, "Understanding intermediate layers using linear classifier
probes", arXiv 1610.01644) measures how much label information a layer exposes linearly:
multinomial logistic regression with an L2 penalty on z-scored features. The regularisation
strength is the only hyperparameter; it is chosen on dev from a small grid and the chosen model
is then scored on train, dev and test. Test never takes part in a choice.

Two solvers minimise the same objective (scikit-learn's, see :mod:`speechrank.probes.batched`):
``torch`` fits all layers and every value of the grid of a probe as one batch
(:func:`speechrank.probes.batched.fit_batched_logistic`), ``sklearn`` fits one layer and one
``C`` at a time with scikit-learn's lbfgs (the reference).

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
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from speechrank.probes.batched import (
    LbfgsOptions,
    batch_bytes,
    fit_batched_logistic,
    logistic_objective,
)
from speechrank.probes.config import SOLVER_NAMES, LogisticConfig

__all__ = [
    "BATCH_BYTES",
    "FitCache",
    "LinearModel",
    "LogisticProbeFit",
    "chance_levels",
    "classification_scores",
    "fit_logistic_probe",
    "fit_logistic_probes",
    "layers_per_batch",
    "path_objectives",
    "problem_digest",
    "rescore",
    "summarise_curve",
]

#: Working memory the batched solver may take for one batch of layers (see
#: :func:`layers_per_batch`); a probe with more layers than fit is solved in several batches.
BATCH_BYTES = 1 << 30

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass
class LinearModel:
    """A fitted linear classifier with scikit-learn's attribute layout (``classes_``,
    ``coef_`` ``[K', D]``, ``intercept_`` ``[K']``; ``K' = 1`` for two classes)."""

    classes_: np.ndarray
    coef_: np.ndarray
    intercept_: np.ndarray

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.coef_.T + self.intercept_

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The class with the largest logit (two classes: the positive one when its logit
        is above 0, as scikit-learn decides); computed in float64."""
        scores = self.decision_function(x)
        if self.coef_.shape[0] == 1:
            return self.classes_[(scores[:, 0] > 0).astype(np.int64)]
        return self.classes_[np.argmax(scores, axis=1)]


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
        solver: the solver's recorded name (``SOLVER_NAMES``).
        n_iter: lbfgs iterations per ``C`` in the ascending grid.
        path: the model fitted at each ``C`` of the ascending grid (``coef_``,
            ``intercept_``, ``classes_``), for :func:`path_objectives`.
    """

    scores: dict[str, dict[str, float]]
    chosen_c: float
    dev_curve: list[float]
    converged: list[bool]
    chosen_index: int
    n_rows: dict[str, int]
    dim: int
    correct: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    predictor: tuple[StandardScaler, Any, str] | None = None
    solver: str = SOLVER_NAMES["sklearn"]
    n_iter: list[int] = dataclasses.field(default_factory=list)
    path: list[Any] = dataclasses.field(default_factory=list)

    @property
    def chosen_converged(self) -> bool:
        """Whether the fit that produced the scores converged."""
        return self.converged[self.chosen_index]


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 (unweighted mean of per-class F1 over the classes present in
    ``y_true`` or ``y_pred``; a class with no true and no predicted example is left out, one
    with no prediction scores 0).

    The values of scikit-learn's ``accuracy_score`` and ``f1_score(average="macro",
    zero_division=0)``, bit for bit (a test holds them to it), from one count of the labels:
    scikit-learn's argument checks cost more than the counting on the dev curve of every
    layer and ``C`` of a probe, and they are the same arrays every time."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan")}
    if len(y_true) != len(y_pred):
        raise ValueError("y_true and y_pred differ in length")
    _, codes = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    codes = codes.reshape(-1)
    true, pred = codes[:len(y_true)], codes[len(y_true):]
    n_labels = int(codes.max()) + 1
    hit = true == pred
    tp = np.bincount(true[hit], minlength=n_labels).astype(np.float64)
    support = (np.bincount(true, minlength=n_labels).astype(np.float64)
               + np.bincount(pred, minlength=n_labels))
    return {"accuracy": float(hit.mean()), "macro_f1": float((2.0 * tp / support).mean())}


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


def fit_logistic_probe(splits: Splits, config: LogisticConfig | None = None, *,
                       device: str = "cpu") -> LogisticProbeFit:
    """Fit the probe on ``train``, choose ``C`` on ``dev``, score every split.

    Args:
        splits: ``{"train": (X, y), "dev": (X, y), "test": (X, y)}`` with ``X`` of shape
            ``[n, D]`` (any float dtype; promoted to float64) and integer or string labels.
            ``test`` is optional and never used for a choice.
        config: the recipe (defaults: :class:`LogisticConfig`).
        device: where the ``torch`` solver runs (``cpu``, ``cuda``, ``cuda:1``).

    The scaler is fitted on train only (in float64; the solver then works in
    ``config.fit_dtype``). Both solvers are deterministic, so the same inputs give the
    same numbers; there is no random state to seed.
    """
    return fit_logistic_probes([splits], config, device=device)[0]


def problem_digest(splits: Splits, config: LogisticConfig) -> str:
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


def rescore(fit: LogisticProbeFit, splits: Splits) -> LogisticProbeFit:
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


def layers_per_batch(splits: Splits, config: LogisticConfig,
                     budget: int = BATCH_BYTES) -> int:
    """How many layers shaped like ``splits`` the batched solver fits at once within
    ``budget`` bytes of working memory (at least one)."""
    x, y = splits["train"]
    need = batch_bytes(len(y), int(np.shape(x)[1]), len(np.unique(np.asarray(y))),
                       len(config.c_grid), config.fit_dtype)
    return max(1, budget // max(1, need))


def fit_logistic_probes(problems: Sequence[Splits], config: LogisticConfig | None = None, *,
                        workers: int = 1, device: str = "cpu") -> list[LogisticProbeFit]:
    """:func:`fit_logistic_probe` on each of ``problems`` (e.g. the layers of one model).

    With the ``torch`` solver, the problems that share their train labels (the layers of one
    probe) and every ``C`` of the grid are one batched fit on ``device``, on the torch threads
    the process has (``workers`` is not used). With the ``sklearn`` solver the
    fits run one by one in ``workers`` processes: lbfgs holds one core per fit (its BLAS is
    limited to ``config.blas_threads``; two BLAS threads made these fits slower, not faster,
    in our measurement), so layers fitted side by side are what uses a second core. The
    processes are joblib's ``loky`` workers (started once and reused by later calls); each
    fit is the same deterministic computation as in this process, so the results do not
    depend on ``workers``.
    """
    config = config or LogisticConfig()
    if config.solver == "torch":
        return _fit_batched(problems, config, device)
    if workers <= 1 or len(problems) <= 1:
        return [_fit_sklearn(splits, config) for splits in problems]
    from joblib import Parallel, delayed

    return list(Parallel(n_jobs=min(workers, len(problems)), backend="loky")(
        delayed(_fit_sklearn)(splits, config) for splits in problems))


class FitCache:
    """Logistic probe fits that later probes of the same model may reuse, keyed by
    :func:`problem_digest`: a probe whose train and dev arrays and recipe an earlier probe
    already fitted gets that fit scored on its own splits (:func:`rescore`) instead of a new
    fit. The demo's keyword probe and its unseen-voice variant share train and dev. A sweep
    keeps one per checkpoint; ``reused`` counts the fits not made again.
    """

    def __init__(self) -> None:
        self._fits: dict[str, LogisticProbeFit] = {}
        self.reused = 0

    def __len__(self) -> int:
        return len(self._fits)

    def fit(self, problems: Sequence[Splits], config: LogisticConfig, *, workers: int = 1,
            device: str = "cpu") -> list[LogisticProbeFit]:
        """:func:`fit_logistic_probes` of the problems not fitted before; the others are
        the stored fits rescored on their splits."""
        keys = [problem_digest(splits, config) for splits in problems]
        todo = [i for i, key in enumerate(keys) if key not in self._fits]
        fitted = dict(zip(todo, fit_logistic_probes([problems[i] for i in todo], config,
                                                    workers=workers, device=device),
                          strict=True))
        out = []
        for i, (splits, key) in enumerate(zip(problems, keys, strict=True)):
            if i in fitted:
                self._fits[key] = fitted[i]
                out.append(fitted[i])
            else:
                self.reused += 1
                out.append(rescore(self._fits[key], splits))
        return out


@dataclasses.dataclass
class _Prepared:
    """One problem standardised on train and cast to the fit dtype."""

    scaler: StandardScaler
    splits: Splits
    classes: np.ndarray  # sorted train classes (scikit-learn's classes_)


def _prepare(splits: Splits, config: LogisticConfig) -> _Prepared:
    if "train" not in splits or "dev" not in splits:
        raise ValueError("a logistic probe needs a train and a dev split")
    x_train, y_train = splits["train"]
    classes = np.unique(np.asarray(y_train))
    if len(classes) < 2:
        raise ValueError("the train split holds fewer than 2 classes")
    scaler = StandardScaler(with_mean=config.standardise, with_std=config.standardise)
    scaler.fit(np.asarray(x_train, dtype=np.float64))
    fit_dtype = np.dtype(config.fit_dtype)
    prepared = {name: (scaler.transform(np.asarray(x, dtype=np.float64)).astype(fit_dtype,
                                                                               copy=False),
                       np.asarray(y))
                for name, (x, y) in splits.items()}
    return _Prepared(scaler, prepared, classes)


def _class_weights(y: np.ndarray, classes: np.ndarray, config: LogisticConfig
                   ) -> np.ndarray | None:
    """Per-example weights (scikit-learn's ``compute_class_weight``), ``None`` for none."""
    if config.class_weight == "none":
        return None
    codes = np.searchsorted(classes, y)
    counts = np.bincount(codes, minlength=len(classes))
    return (len(y) / (len(classes) * counts))[codes]


def _choose_and_score(problem: _Prepared, path: list[Any], converged: list[bool],
                      n_iter: list[int], config: LogisticConfig) -> LogisticProbeFit:
    """Pick ``C`` on dev (ties: the smaller ``C``) among the models of the ascending grid and
    score the chosen one on every split."""
    x_dev, y_dev = problem.splits["dev"]
    dev_curve = [classification_scores(y_dev, model.predict(x_dev))[config.selection_metric]
                 for model in path]
    chosen_index = 0
    for index, score in enumerate(dev_curve):
        if score > dev_curve[chosen_index]:  # strict: ties keep the smaller C
            chosen_index = index
    model = path[chosen_index]
    predicted = {name: model.predict(x) for name, (x, _) in problem.splits.items()}
    return LogisticProbeFit(
        scores={name: classification_scores(y, predicted[name])
                for name, (_, y) in problem.splits.items()},
        chosen_c=float(sorted(config.c_grid)[chosen_index]), dev_curve=dev_curve,
        converged=converged, chosen_index=chosen_index,
        n_rows={name: len(y) for name, (_, y) in problem.splits.items()},
        dim=problem.splits["train"][0].shape[1],
        correct={name: np.asarray(predicted[name] == y)
                 for name, (_, y) in problem.splits.items()},
        predictor=(problem.scaler, model, config.fit_dtype),
        solver=SOLVER_NAMES[config.solver], n_iter=n_iter, path=path)


def _fit_sklearn(splits: Splits, config: LogisticConfig) -> LogisticProbeFit:
    with threadpool_limits(limits=config.blas_threads):
        problem = _prepare(splits, config)
        x_tr, y_tr = problem.splits["train"]
        path_model = LogisticRegression(
            solver="lbfgs", max_iter=config.max_iter, tol=config.tol, warm_start=True,
            class_weight=None if config.class_weight == "none" else config.class_weight)
        path, converged, n_iter = [], [], []
        for c in sorted(config.c_grid):
            model, ok = _fit_one(path_model, x_tr, y_tr, c)
            path.append(model)
            converged.append(ok)
            n_iter.append(int(np.max(model.n_iter_)))
        return _choose_and_score(problem, path, converged, n_iter, config)


def _fit_batched(problems: Sequence[Splits], config: LogisticConfig, device: str
                 ) -> list[LogisticProbeFit]:
    with threadpool_limits(limits=config.blas_threads):
        prepared = [_prepare(splits, config) for splits in problems]
    groups: dict[bytes, list[int]] = {}
    for index, problem in enumerate(prepared):  # one batch per set of train labels
        labels = problem.splits["train"][1].astype(str)
        groups.setdefault(hashlib.blake2b("\x1f".join(labels.tolist()).encode())
                          .digest(), []).append(index)
    grid = sorted(config.c_grid)
    fits: dict[int, LogisticProbeFit] = {}
    for members in groups.values():
        classes = prepared[members[0]].classes
        y = prepared[members[0]].splits["train"][1]
        result = fit_batched_logistic(
            [prepared[i].splits["train"][0] for i in members], np.searchsorted(classes, y),
            len(classes), grid, LbfgsOptions(max_iter=config.max_iter, tol=config.tol,
                                             dtype=config.fit_dtype, device=device),
            sample_weight=_class_weights(y, classes, config))
        for position, index in enumerate(members):
            dim = prepared[index].splits["train"][0].shape[1]
            path = [LinearModel(classes_=classes,
                                coef_=result.weights[position, g, :, :dim].copy(),
                                intercept_=result.intercepts[position, g].copy())
                    for g in range(len(grid))]
            with threadpool_limits(limits=config.blas_threads):
                fits[index] = _choose_and_score(
                    prepared[index], path, [bool(v) for v in result.converged[position]],
                    [int(v) for v in result.n_iter[position]], config)
    return [fits[i] for i in range(len(prepared))]


def path_objectives(fit: LogisticProbeFit, splits: Splits, config: LogisticConfig
                    ) -> list[float]:
    """The objective (see :mod:`speechrank.probes.batched`) of the model fitted at each ``C``
    of the ascending grid, in float64 on the train split as the solver saw it (standardised
    with the fit's scaler, cast to the fit dtype): the measure two solvers are compared by."""
    if fit.predictor is None:
        raise ValueError("this fit kept no predictor")
    scaler, _, fit_dtype = fit.predictor
    x, y = splits["train"]
    x = scaler.transform(np.asarray(x, dtype=np.float64)).astype(fit_dtype, copy=False)
    y = np.asarray(y)
    classes = fit.path[0].classes_
    codes = np.searchsorted(classes, y)
    weights = _class_weights(y, classes, config)
    return [logistic_objective(x, codes, model.coef_, model.intercept_, c, weights)
            for model, c in zip(fit.path, sorted(config.c_grid), strict=True)]


def summarise_curve(grid: Sequence[float], curve: Sequence[float]) -> list[dict[str, Any]]:
    """``[{"C": c, "dev": score}, ...]`` for the JSON conventions."""
    return [{"C": float(c), "dev": float(s)} for c, s in zip(grid, curve, strict=True)]
