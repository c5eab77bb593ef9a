"""Many independent L2-penalised multinomial logistic regressions solved at once, in torch.

A probe fits one logistic regression per (layer, C): every layer of an encoder and every
inverse strength ``C`` of the dev grid. These problems share the labels and the row count, so
they can share every matrix product: the features of all layers form one tensor ``[L, N, D]``,
the weights of every ``C`` sit side by side as columns, and a function-and-gradient evaluation
of all ``L x G`` problems is two batched matrix products (``torch.bmm``) whatever ``G`` is.

**The objective** is scikit-learn's (``sklearn.linear_model._logistic``, 1.x, solver
``lbfgs``), per problem, with sample weights ``s_i`` (1, or class weights) summing to ``S``::

    f(W, b) = (1 / S) * sum_i s_i * CE(softmax(W^T x_i + b), y_i) + ||W||^2 / (2 * C * S)

i.e. ``C * sum_i s_i CE_i + ||W||^2 / 2`` divided by ``C * S``; the intercept ``b`` is not
penalised. Two classes use one weight vector and the binomial loss, as scikit-learn does (the
logits ``[0, w^T x + b]``): a two-class multinomial with both vectors penalised would be the
same model at ``2 C``. A problem has converged when the largest absolute entry of ``grad f``
is at most ``tol`` (scipy's L-BFGS-B ``pgtol``, which scikit-learn sets to its ``tol``).

**The solver** is limited-memory BFGS (Liu & Nocedal, "On the limited memory BFGS method for
large scale optimization", Math. Programming 45, 1989), run for every problem separately but
in lockstep: each problem has its own history of the last ``m = 10`` pairs ``(s, y)``, its
own two-loop recursion (Nocedal & Wright, *Numerical Optimization*, 2nd ed., Algorithm 7.4),
its own step length and its own stopping test. Batching is only in the arithmetic. One
L-BFGS on the *sum* of the objectives (``torch.optim.LBFGS`` on one parameter tensor) would be
wrong in three ways: its line search picks one step length for all problems, so an
ill-conditioned problem (large ``C``) throttles the others; its curvature pairs mix the
problems, so each problem's quasi-Newton model is polluted by the others'; and it stops on the
sum's gradient, not on each problem's. A batched Newton-CG or trust-region Newton (Lin, Weng
& Keerthi, JMLR 9, 2008) would need per-problem conjugate-gradient loops with masks as well,
and several Hessian-vector products (two matrix products each) per iteration; L-BFGS needs
one function-and-gradient evaluation per iteration when the unit step is accepted (almost
always), and it is the reference solver's algorithm.

*Preconditioning.* Layer features are strongly correlated (condition numbers of ``X^T X`` of
1e8 on the demo's layers), which is what makes lbfgs take hundreds of iterations at large
``C``. Each layer's features are rotated once into the eigenbasis ``V`` of their weighted
covariance ``X^T diag(s) X / S`` (orthogonal, so logits, penalty and objective are unchanged:
``W = V W'``), and the initial inverse Hessian of the two-loop is the diagonal
``H0 = gamma * diag(1 / (kappa * e_j + 1 / (C S)))`` (``e_j`` the covariance eigenvalues,
``kappa = 1/K``, the softmax's curvature where the solver starts, 1/4 for two classes;
intercepts ``1 / kappa``), scaled by ``gamma = s^T y / y^T H0 y`` (Nocedal & Wright, eq. 7.20,
in the preconditioned metric). This is L-BFGS on ``(X^T X / K + lambda I)^(1/2) W``, the
standard remedy for ill-conditioning (Nocedal & Wright, section 5.1, on preconditioning);
it cut the demo's keyword and speaker fits from 380-620 to 90-160 iterations. The stopping
test is always on the gradient in the features' own basis, as scikit-learn's.

The step length comes from a backtracking line search per problem (Nocedal & Wright,
Algorithm 3.1, sufficient decrease with ``c1 = 1e-4``, the trial step shrunk by safeguarded
quadratic interpolation, section 3.5). Every trial evaluates only the problems still
searching. Without the Wolfe curvature condition a pair with ``s^T y <= 0`` could arise; the
objective is convex, so it cannot beyond rounding, and such a pair is skipped (Nocedal &
Wright, section 6.1). The first step of a problem (no history) is the preconditioned
steepest descent direction, capped at unit length as L-BFGS-B's first step. A problem stops
when it converges, when it reaches ``max_iter`` iterations, when its line search fails or when
its objective stops falling (scipy's ``ftol`` test: rounding, recorded as not converged
unless the gradient test holds); stopped problems leave the batch, and a layer none of whose
problems runs leaves the matrix products.

**Precision.** ``dtype="float32"`` keeps the features and the matrix products in float32 (the
expensive part: the logits and the gradient, whose last column of ones gives the intercepts'
terms, as scikit-learn's float32 gradient; the covariance and the rotation), and the stored
curvature pairs and the two-loop recursion too (a model of the curvature: its rounding
changes the path, not the optimum, and halves the memory traffic that dominates small
problems); the parameters, the objective (a float64 sum over rows), the line search and the
stopping tests are float64. ``float64`` does everything in float64. TF32 matrix products on
CUDA are switched off during a fit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch

__all__ = ["SOLVER_NAME", "BatchedLogisticFit", "LbfgsOptions", "batch_bytes",
           "fit_batched_logistic", "logistic_objective"]

#: The solver's name in every row's conventions.
SOLVER_NAME = "torch-lbfgs-batched"
#: Curvature pairs kept per problem (scipy's L-BFGS-B default ``maxcor``).
HISTORY = 10
#: Trial steps per line search before a problem is stopped (scikit-learn passes ``maxls=50``).
MAX_LINE_SEARCH = 50
#: Sufficient-decrease constant of the line search (Nocedal & Wright, section 3.1).
ARMIJO_C1 = 1e-4
#: A problem whose objective fell by less than this fraction in an iteration has stalled
#: (scipy's L-BFGS-B test ``(f_k - f_k+1) / max(|f_k|, |f_k+1|, 1) <= ftol``, with
#: scikit-learn's ``ftol = 64 eps`` in float64; in float32 one unit in the last place, below
#: which a decrease is rounding, not progress).
STALL = {torch.float64: 64 * float(np.finfo(np.float64).eps),
         torch.float32: float(np.finfo(np.float32).eps)}


@dataclasses.dataclass
class BatchedLogisticFit:
    """The solutions of ``L x G`` problems (``L`` feature matrices, ``G`` values of ``C``).

    Attributes:
        weights: ``[L, G, K', D]`` float64 (``D``: the widest matrix; a narrower one's extra
            columns are zero), ``K' = 1`` for two classes (the positive class's logit), else
            ``K`` (one row per class), as scikit-learn's ``coef_``.
        intercepts: ``[L, G, K']`` float64.
        objective: ``[L, G]``, the objective at the solution (float64 sums).
        grad_max: ``[L, G]``, the largest absolute gradient entry there.
        n_iter: ``[L, G]``, L-BFGS iterations.
        converged: ``[L, G]``, ``grad_max <= tol``.
        evaluations: function-and-gradient evaluations of the batch (each covers every
            problem of the layers still running).
    """

    weights: np.ndarray
    intercepts: np.ndarray
    objective: np.ndarray
    grad_max: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    evaluations: int


def batch_bytes(n_rows: int, dim: int, n_classes: int, n_c: int,
                dtype: Literal["float32", "float64"] = "float32") -> int:
    """Working memory of one layer in :func:`fit_batched_logistic` (features, four
    ``[N, G, K]`` temporaries, parameters, gradient and L-BFGS history), to size batches."""
    item = 4 if dtype == "float32" else 8
    k = 1 if n_classes == 2 else n_classes
    params = n_c * (dim + 1) * k
    return (n_rows * dim * item + 4 * n_rows * n_c * max(k, 2) * item
            + (2 * HISTORY + 8) * params * 8)


def logistic_objective(x: np.ndarray, y: np.ndarray, coef: np.ndarray, intercept: np.ndarray,
                       c: float, sample_weight: np.ndarray | None = None) -> float:
    """scikit-learn's lbfgs objective (see the module docstring) in float64, for checking.

    ``y`` holds class indices ``0..K-1``; ``coef`` is ``[K', D]`` and ``intercept`` ``[K']``
    as scikit-learn stores them (``K' = 1`` for two classes: the positive class).
    """
    x = np.asarray(x, dtype=np.float64)
    coef = np.asarray(coef, dtype=np.float64)
    z = x @ coef.T + np.asarray(intercept, dtype=np.float64)
    if coef.shape[0] == 1:
        z = np.concatenate([np.zeros((len(z), 1)), z], axis=1)
    top = z.max(axis=1, keepdims=True)
    log_norm = (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]
    losses = log_norm - z[np.arange(len(y)), np.asarray(y)]
    weights = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
    total = float(weights.sum())
    return float((weights * losses).sum() / total + float((coef ** 2).sum()) / (2 * c * total))


@contextlib.contextmanager
def _fit_context(device: torch.device, threads: int | None) -> Iterator[None]:
    """No TF32 matrix products on CUDA; ``threads`` torch threads on the CPU (restored)."""
    if device.type == "cuda":
        before = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = before
        return
    if threads is None or threads == torch.get_num_threads():
        yield
        return
    before_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before_threads)


class _Problems:
    """The data of the batch and the objective of every problem (see the module docstring)."""

    def __init__(self, xs: Sequence[np.ndarray], y: np.ndarray, n_classes: int,
                 cs: Sequence[float], sample_weight: np.ndarray | None, work: torch.dtype,
                 device: torch.device, precondition: bool) -> None:
        self.n_layers, self.n_c = len(xs), len(cs)
        self.n_rows = len(y)
        self.dims = [int(x.shape[1]) for x in xs]
        self.dim = max(self.dims)
        self.k = 1 if n_classes == 2 else n_classes
        self.binary = n_classes == 2
        self.work, self.device = work, device
        # the features, zero columns up to the widest layer (zero gradient: those weights stay
        # at zero), then a column of ones (the intercept's)
        features = torch.zeros(self.n_layers, self.n_rows, self.dim + 1, dtype=work,
                               device=device)
        features[..., self.dim] = 1.0
        for layer, x in enumerate(xs):
            features[layer, :, :x.shape[1]] = torch.as_tensor(np.asarray(x), device=device,
                                                              dtype=work)
        self.y = torch.as_tensor(np.asarray(y, dtype=np.int64), device=device)
        weights = (np.ones(self.n_rows) if sample_weight is None
                   else np.asarray(sample_weight, dtype=np.float64))
        total = float(weights.sum())
        self.uniform = sample_weight is None
        self.row_weight64 = torch.as_tensor(weights / total, device=device)  # sums to 1
        self.row_weight = self.row_weight64.to(work)
        self.l2 = torch.as_tensor([1.0 / (float(c) * total) for c in cs], dtype=torch.float64,
                                  device=device)
        self.rotation: torch.Tensor | None = None
        size = self.k * (self.dim + 1)
        self.scale = torch.ones(self.n_layers * self.n_c, size, dtype=torch.float64,
                                device=device)
        if precondition:
            # the loss's curvature per unit of feature variance where the solver starts (all
            # classes equally likely): 1/K for K classes, p(1 - p) = 1/4 for the binomial
            kappa = 0.25 if self.binary else 1.0 / n_classes
            eigenvalues = torch.zeros(self.n_layers, self.dim, dtype=torch.float64,
                                      device=device)
            vectors = torch.eye(self.dim, dtype=torch.float64, device=device).repeat(
                self.n_layers, 1, 1)
            for layer, width in enumerate(self.dims):  # each layer's own block: padding stays
                x = features[layer, :, :width]
                cov = (x * self.row_weight[:, None]).T @ x
                values, basis = torch.linalg.eigh(cov.to(torch.float64))
                eigenvalues[layer, :width], vectors[layer, :width, :width] = values, basis
            self.rotation = vectors  # [L, D, D], orthogonal: the penalty is unchanged
            features[..., :self.dim] = torch.bmm(features[..., :self.dim], vectors.to(work))
            h = 1.0 / (kappa * eigenvalues.clamp(min=0)[:, None, :] + self.l2[None, :, None])
            scale = self.scale.view(self.n_layers, self.n_c, self.k, self.dim + 1)
            scale[..., :self.dim] = h[:, :, None, :]
            scale[..., self.dim] = 1.0 / kappa
        self.features = features
        self._subsets: dict[tuple[int, ...], torch.Tensor] = {}

    def _pack(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Where problems ``ids`` (ascending ``layer * G + g``) go in a ``[La, Ga]`` layout:
        the layers present, each problem's row (``group``) and column (``slot``) there, and
        ``Ga``, the most problems any of those layers has."""
        layer_of = torch.div(ids, self.n_c, rounding_mode="floor")
        layers, counts = torch.unique_consecutive(layer_of, return_counts=True)
        group = torch.repeat_interleave(torch.arange(len(layers), device=ids.device), counts)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(ids), device=ids.device) - starts[group]
        return layers, group, slot, int(counts.max())

    def to_original(self, ids: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Parameters or gradients ``[n, P]`` of problems ``ids`` in the features' own basis
        (the solver works in each layer's covariance eigenbasis when preconditioned): one
        matrix product per layer present, its problems side by side."""
        if self.rotation is None:
            return v
        layers, group, slot, width = self._pack(ids)
        dim = self.dim
        packed = torch.zeros(len(layers), width, self.k, dim, dtype=v.dtype, device=v.device)
        blocks = v.view(len(ids), self.k, dim + 1)
        packed[group, slot] = blocks[..., :dim]
        rotated = torch.bmm(packed.view(len(layers), width * self.k, dim),
                            self.rotation[layers].transpose(1, 2))
        out = blocks.clone()
        out[..., :dim] = rotated.view(len(layers), width, self.k, dim)[group, slot]
        return out.view(len(ids), -1)

    def grad_max(self, ids: torch.Tensor, g: torch.Tensor, tol: float) -> torch.Tensor:
        """The largest absolute gradient entry in the features' own basis, exactly where it
        decides ``<= tol``: a rotation keeps each class's Euclidean norm, so a norm at most
        ``tol`` (or above ``sqrt(P) tol``) settles the test without rotating back."""
        if self.rotation is None:
            return g.abs().amax(dim=1)
        norm = g.norm(dim=1)
        out = torch.where(norm <= tol, norm, torch.full_like(norm, math.inf))
        band = (norm > tol) & (norm <= math.sqrt(g.shape[1]) * tol)
        if bool(band.any()):
            out[band] = self.to_original(ids[band], g[band]).abs().amax(dim=1)
        return out

    def _features_of(self, layers: torch.Tensor) -> torch.Tensor:
        """The features of ``layers``; a subset is copied once and kept while it is in use
        (the running problems' layers and the layers still in a line search)."""
        key = tuple(layers.tolist())
        if len(key) == self.n_layers:
            return self.features
        if key not in self._subsets:
            if len(self._subsets) >= 2:
                self._subsets.pop(next(iter(self._subsets)))
            self._subsets[key] = self.features.index_select(0, layers)
        return self._subsets[key]

    def evaluate(self, theta: torch.Tensor, l2: torch.Tensor, layers: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective ``[La, Ga]`` and gradient ``[La, Ga, K', D + 1]`` (float64) of ``Ga``
        problems of each layer in ``layers`` at ``theta`` ``[La, Ga, K', D + 1]`` (float64),
        whose penalties are ``l2`` ``[La, Ga]`` (``1 / (C S)``).

        Logits are laid out ``[La, Ga, K', N]``: the softmax then reduces over a middle axis,
        vectorised along the rows (a reduction over a short last axis is several times
        slower on the CPU)."""
        x = self._features_of(layers)
        n_layers, n_c, dim, k = theta.shape[0], theta.shape[1], self.dim, self.k
        flat = theta.to(self.work).reshape(n_layers, n_c * k, dim + 1)
        logits = torch.bmm(flat, x.transpose(1, 2)).view(n_layers, n_c, k, self.n_rows)
        if self.binary:
            logits = torch.cat([torch.zeros_like(logits), logits], dim=2)
        log_p = torch.log_softmax(logits, dim=2)
        index = self.y.view(1, 1, 1, -1).expand(n_layers, n_c, 1, -1)
        losses = -log_p.gather(2, index).squeeze(2)  # [La, Ga, N]
        loss = losses.to(torch.float64) @ self.row_weight64
        residual = log_p.exp_()
        residual.scatter_add_(2, index, torch.full_like(losses, -1.0).unsqueeze(2))
        if self.binary:
            residual = residual[:, :, 1:]
        if not self.uniform:
            residual = residual * self.row_weight
        grad = torch.bmm(residual.reshape(n_layers, n_c * k, self.n_rows), x).to(torch.float64)
        grad = grad.view(n_layers, n_c, k, dim + 1)
        if self.uniform:  # every row weighs 1/N: scale the product, not the residuals
            grad /= self.n_rows
        weights = theta[..., :dim]
        grad[..., :dim] += l2[:, :, None, None] * weights
        penalty = 0.5 * l2 * weights.square().sum(dim=(2, 3))
        return loss + penalty, grad

    def evaluate_some(self, ids: torch.Tensor, x: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective ``[n]`` and gradient ``[n, P]`` of the problems ``ids`` (ascending
        indices ``layer * G + g``) at ``x`` ``[n, P]``.

        Only the layers of ``ids`` take part, each carrying as many problems as the busiest
        of them (the others padded with zeros, whose results are dropped), so the work
        shrinks as problems stop, whichever ``C`` they belong to."""
        layers, group, slot, width = self._pack(ids)
        theta = torch.zeros(len(layers), width, self.k, self.dim + 1, dtype=torch.float64,
                            device=ids.device)
        theta[group, slot] = x.view(len(ids), self.k, self.dim + 1)
        l2 = torch.ones(len(layers), width, dtype=torch.float64, device=ids.device)
        l2[group, slot] = self.l2[ids % self.n_c]
        value, grad = self.evaluate(theta, l2, layers)
        return value[group, slot], grad[group, slot].reshape(len(ids), -1)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise inner products of ``[n, P]`` tensors."""
    return (a * b).sum(dim=1)


@dataclasses.dataclass
class _State:
    """L-BFGS state of the problems still running (rows follow ``ids``)."""

    ids: torch.Tensor  # [n] problem indices
    x: torch.Tensor  # [n, P]
    f: torch.Tensor  # [n]
    g: torch.Tensor  # [n, P]
    s_hist: torch.Tensor  # [m, n, P]
    y_hist: torch.Tensor  # [m, n, P]
    rho: torch.Tensor  # [m, n]
    valid: torch.Tensor  # [m, n]
    gamma: torch.Tensor  # [n]
    n_iter: torch.Tensor  # [n]
    scale: torch.Tensor  # [n, P] the diagonal preconditioner

    def keep(self, rows: torch.Tensor) -> _State:
        return _State(self.ids[rows], self.x[rows], self.f[rows], self.g[rows],
                      self.s_hist[:, rows], self.y_hist[:, rows], self.rho[:, rows],
                      self.valid[:, rows], self.gamma[rows], self.n_iter[rows],
                      self.scale[rows])


def _direction(state: _State, order: list[int]) -> torch.Tensor:
    """The L-BFGS direction ``-H grad`` of every running problem (Nocedal & Wright,
    Algorithm 7.4); ``order`` lists the history slots newest first."""
    kind = state.s_hist.dtype  # the pairs' type: the model of the curvature, not its data
    q = state.g.to(kind, copy=True)
    alphas = {}
    for j in order:
        rho = state.rho[j].to(kind)
        alpha = torch.where(state.valid[j], rho * _dot(state.s_hist[j], q), 0.0)
        q.addcmul_(alpha[:, None], state.y_hist[j], value=-1.0)
        alphas[j] = alpha
    r = q.mul_((state.gamma[:, None] * state.scale).to(kind))
    for j in reversed(order):
        rho = state.rho[j].to(kind)
        beta = torch.where(state.valid[j], rho * _dot(state.y_hist[j], r), 0.0)
        r.addcmul_((alphas[j] - beta)[:, None], state.s_hist[j])
    return r.neg_().to(torch.float64)


@dataclasses.dataclass(frozen=True)
class LbfgsOptions:
    """How :func:`fit_batched_logistic` solves (see the module docstring).

    Attributes:
        max_iter: iterations per problem before it is stopped as not converged.
        tol: the stopping tolerance (scikit-learn's ``tol``: the largest absolute gradient
            entry).
        dtype: the work type of the matrix products (``float32`` or ``float64``).
        device: where the fit runs (``cpu`` or ``cuda``).
        threads: torch threads on the CPU during the fit (``None``: as set).
        history: curvature pairs kept per problem.
        precondition: rotate and scale the features by their train covariance first.
    """

    max_iter: int = 1000
    tol: float = 1e-4
    dtype: Literal["float32", "float64"] = "float64"
    device: str | torch.device = "cpu"
    threads: int | None = None
    history: int = HISTORY
    precondition: bool = True


def fit_batched_logistic(xs: Sequence[np.ndarray], y: np.ndarray, n_classes: int,
                         cs: Sequence[float], options: LbfgsOptions | None = None, *,
                         sample_weight: np.ndarray | None = None) -> BatchedLogisticFit:
    """Fit ``len(xs) x len(cs)`` logistic regressions: every feature matrix ``xs[l]``
    (``[N, D_l]``, already standardised) with labels ``y`` (class indices ``0..K-1``, shared)
    and per-example ``sample_weight`` at every inverse strength ``cs[g]``; see the module
    docstring for the objective and the solver, :class:`LbfgsOptions` for ``options``.
    Deterministic: the same inputs on the same device and threads give the same numbers."""
    options = options or LbfgsOptions()
    if not xs or not cs:
        raise ValueError("need at least one feature matrix and one C")
    if n_classes < 2:
        raise ValueError("need at least 2 classes")
    if any(len(x) != len(y) for x in xs):
        raise ValueError("every feature matrix needs one row per label")
    device = torch.device(options.device)
    work = torch.float32 if options.dtype == "float32" else torch.float64
    with _fit_context(device, options.threads), torch.no_grad():
        problems = _Problems(xs, y, n_classes, cs, sample_weight, work, device,
                             options.precondition)
        return _lbfgs(problems, max_iter=options.max_iter, tol=options.tol,
                      history=options.history)


def _lbfgs(problems: _Problems, *, max_iter: int, tol: float, history: int
           ) -> BatchedLogisticFit:
    n_layers, n_c, device = problems.n_layers, problems.n_c, problems.device
    shape = (n_layers, n_c, problems.k, problems.dim + 1)
    size = math.prod(shape[2:])
    batch = n_layers * n_c
    ids = torch.arange(batch, device=device)
    x = torch.zeros(batch, size, dtype=torch.float64, device=device)
    f, g = problems.evaluate_some(ids, x)
    evaluations = 1
    state = _State(ids, x, f, g,
                   torch.zeros(history, batch, size, dtype=problems.work, device=device),
                   torch.zeros(history, batch, size, dtype=problems.work, device=device),
                   torch.zeros(history, batch, dtype=torch.float64, device=device),
                   torch.zeros(history, batch, dtype=torch.bool, device=device),
                   torch.ones(batch, dtype=torch.float64, device=device),
                   torch.zeros(batch, dtype=torch.int64, device=device), problems.scale)
    # what every problem ends with (written when it stops)
    out_x, out_f = torch.zeros_like(x), torch.zeros_like(f)
    out_gmax = torch.zeros_like(f)
    out_iter = torch.zeros(batch, dtype=torch.int64, device=device)
    out_converged = torch.zeros(batch, dtype=torch.bool, device=device)
    stopped = problems.grad_max(state.ids, state.g, tol) <= tol
    stall = STALL[problems.work]
    slot, order = 0, []
    for iteration in range(max_iter + 1):
        if bool(stopped.any()) or iteration == max_iter:
            done = torch.ones_like(stopped) if iteration == max_iter else stopped
            rows = state.ids[done]
            out_x[rows] = problems.to_original(rows, state.x[done])
            out_f[rows] = state.f[done]
            gmax = problems.to_original(rows, state.g[done]).abs().amax(dim=1)
            out_gmax[rows], out_iter[rows] = gmax, state.n_iter[done]
            out_converged[rows] = gmax <= tol
            if bool(done.all()):
                break
            state = state.keep(~done)
        running = len(state.ids)
        direction = _direction(state, order)
        slope = _dot(state.g, direction)
        uphill = ~(slope < 0)  # rounding spoilt the quasi-Newton model: restart from -grad
        if bool(uphill.any()):
            state.valid[:, uphill] = False
            state.gamma[uphill] = 1.0
            direction[uphill] = -state.scale[uphill] * state.g[uphill]
            slope = _dot(state.g, direction)
        fresh = ~state.valid.any(dim=0)
        step = torch.where(fresh, torch.clamp(1.0 / direction.norm(dim=1), max=1.0),
                           torch.ones_like(state.f))
        searching = torch.ones(running, dtype=torch.bool, device=device)
        x_new, f_new, g_new = state.x.clone(), state.f.clone(), state.g.clone()
        for _ in range(MAX_LINE_SEARCH):
            which = searching.nonzero().flatten()
            trial = state.x[which] + step[which, None] * direction[which]
            f_trial, g_trial = problems.evaluate_some(state.ids[which], trial)
            evaluations += 1
            bound = state.f[which] + ARMIJO_C1 * step[which] * slope[which]
            accept = torch.isfinite(f_trial) & (f_trial <= bound)
            took = which[accept]
            x_new[took], f_new[took], g_new[took] = trial[accept], f_trial[accept], \
                g_trial[accept]
            searching[took] = False
            if not bool(searching.any()):
                break
            # safeguarded quadratic interpolation of f along the direction (N&W section 3.5)
            rest, t = which[~accept], step[which[~accept]]
            curvature = f_trial[~accept] - state.f[rest] - slope[rest] * t
            guess = torch.where(torch.isfinite(curvature) & (curvature > 0),
                                -slope[rest] * t.square() / (2 * curvature), 0.1 * t)
            step[rest] = torch.minimum(torch.maximum(guess, 0.1 * t), 0.5 * t)
        failed = searching  # no sufficient decrease within MAX_LINE_SEARCH trials
        moved = ~failed
        scale = torch.maximum(torch.maximum(state.f.abs(), f_new.abs()), torch.ones_like(f_new))
        stalled = moved & ((state.f - f_new) <= stall * scale)
        s_new, y_new = x_new - state.x, g_new - state.g
        sy, yy = _dot(s_new, y_new), _dot(y_new, y_new * state.scale)
        keep = moved & (sy > 1e-10 * s_new.norm(dim=1) * y_new.norm(dim=1)) & (yy > 0)
        state.s_hist[slot], state.y_hist[slot] = s_new, y_new
        state.rho[slot] = torch.where(keep, 1.0 / torch.where(keep, sy, 1.0), 0.0)
        state.valid[slot] = keep
        state.gamma = torch.where(keep, sy / torch.where(keep, yy, 1.0), state.gamma)
        order = [slot, *[j for j in order if j != slot]][:history]
        slot = (slot + 1) % history
        state.x, state.f, state.g = x_new, f_new, g_new
        state.n_iter += moved.to(torch.int64)
        stopped = failed | stalled | (problems.grad_max(state.ids, state.g, tol) <= tol)
    theta = out_x.view(shape).cpu().numpy()
    return BatchedLogisticFit(
        weights=theta[..., :problems.dim].copy(), intercepts=theta[..., problems.dim].copy(),
        objective=out_f.view(n_layers, n_c).cpu().numpy(),
        grad_max=out_gmax.view(n_layers, n_c).cpu().numpy(),
        n_iter=out_iter.view(n_layers, n_c).cpu().numpy(),
        converged=out_converged.view(n_layers, n_c).cpu().numpy(), evaluations=evaluations)
