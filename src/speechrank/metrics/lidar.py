"""LiDAR: the effective rank of the linear-discriminant matrix of surrogate classes.

Thilak et al., "LiDAR: Sensing Linear Probing Performance in Joint Embedding SSL
Architectures", ICLR 2024 (arXiv 2312.04000). Rows come in surrogate classes (in speechrank: q
augmented views of one utterance, grouped by an id). With class means mu_g, the mean of the
class means mu, n classes and N rows:

    S_b = sum_g (mu_g - mu)(mu_g - mu)^T / (n - 1)
    S_w = sum_g sum_{i in g} (x_i - mu_g)(x_i - mu_g)^T / (N - n)  + delta I
    LiDAR = exp-entropy of the eigenvalues l of S_w^{-1/2} S_b S_w^{-1/2}, p = l / sum l + eps

With q views per class N - n = n (q - 1), the paper's normaliser; with unequal class sizes the
same formulas pool the within-class scatter. S_w^{-1/2} comes from a symmetric eigensolver
(``eigh``; eigenvalues of the within scatter clamped at 0 before adding delta), the LiDAR
matrix is symmetrised and its eigenvalues come from ``eigvalsh`` clamped at 0: no general
``eig``, no matrix inverse, and no PCA of the LiDAR matrix (the reptrix pitfall, anchors.md 3).

:class:`LidarAccumulator` streams (rows, group ids) in one pass: per-group float64 sums and
counts plus the total Gram matrix (a :class:`SpectralAccumulator`, so the spectral metrics of
the same rows come for free), and merges by addition like the spectral accumulator.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import numpy as np
import torch

from speechrank.metrics import _inputs, formulas
from speechrank.metrics.accumulator import SpectralAccumulator, _check_dim
from speechrank.metrics.errors import MetricInputError, NonFiniteError
from speechrank.metrics.result import MetricResult
from speechrank.metrics.spectral import DEFAULT_EPS, check_eps
from speechrank.metrics.spectrum import SOLVER, single_threaded_lapack, symmetrize

#: Ridge added to the within-class scatter (Thilak et al.; stable-pretraining uses the same).
DEFAULT_DELTA = 1e-4


def _group_ids(groups: Any, count: int) -> np.ndarray:
    """Group ids as a 1-D numpy array of ints or strings, one per row."""
    if isinstance(groups, torch.Tensor):
        groups = groups.detach().cpu().numpy()
    # Python sequences go through object dtype so that [1, "a"] is refused, not made strings.
    try:
        ids = groups if isinstance(groups, np.ndarray) else np.asarray(list(groups), dtype=object)
    except TypeError as exc:
        raise MetricInputError(f"groups must be a sequence of ids, got {groups!r}") from exc
    if ids.shape != (count,):
        raise MetricInputError(f"groups must hold one id per row ({count}), got shape {ids.shape}")
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    if ids.dtype.kind in "US":
        return ids.astype(str)
    if ids.dtype.kind == "O" and all(isinstance(v, str) for v in ids):
        return ids.astype(str)
    if ids.dtype.kind == "O" and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in ids
    ):
        return ids.astype(np.int64)
    raise MetricInputError(f"group ids must be all integers or all strings, got {ids.dtype}")


def _py_id(value: Any) -> Hashable:
    return int(value) if isinstance(value, (int, np.integer)) else str(value)


class LidarAccumulator:
    """Per-group float64 sums and counts plus the total Gram matrix of grouped rows.

    Args:
        dim: the width D of the rows.
        device: where the float64 Gram state lives (as for :class:`SpectralAccumulator`);
            the per-group sums are kept on the CPU.
        chunk_rows: rows converted to float64 at a time.

    Memory is O(D^2 + n_groups * D). Group ids are integers or strings; rows of one group may
    arrive in any update and in any order.
    """

    def __init__(self, dim: int, *, device: Any = None, chunk_rows: int | None = None) -> None:
        self._dim = _check_dim(dim)
        self.spectral = SpectralAccumulator(self._dim, device=device, chunk_rows=chunk_rows)
        self.reset()

    def reset(self) -> None:
        """Forget every row and group."""
        self.spectral.reset()
        self._ids: list[Hashable] = []
        self._index: dict[Hashable, int] = {}
        self._sums = np.zeros((0, self._dim))
        self._counts = np.zeros(0, dtype=np.int64)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def n_rows(self) -> int:
        """Rows seen in all groups."""
        return self.spectral.n_rows

    @property
    def n_groups(self) -> int:
        """Distinct group ids seen."""
        return len(self._ids)

    @property
    def group_ids(self) -> list[Hashable]:
        """Group ids in order of first appearance."""
        return list(self._ids)

    @property
    def group_counts(self) -> np.ndarray:
        """Rows per group, aligned with :attr:`group_ids`."""
        return self._counts[: self.n_groups].copy()

    @property
    def group_sums(self) -> np.ndarray:
        """Float64 sum of each group's rows, (n_groups, D), aligned with :attr:`group_ids`."""
        return self._sums[: self.n_groups].copy()

    def __repr__(self) -> str:
        return (
            f"LidarAccumulator(dim={self._dim}, n_rows={self.n_rows}, "
            f"n_groups={self.n_groups})"
        )

    # ----------------------------------------------------------------- update
    def update(self, rows: Any, groups: Any = None) -> None:
        """Add grouped rows.

        Args:
            rows: (N, D) rows with ``groups`` one id per row, or (n, q, D) with ``groups``
                one id per class (n of them): the q rows of class i all get ``groups[i]``.
            groups: integer or string ids. Required, because a group may span updates.

        Raises:
            NonFiniteError: NaN or Inf in the rows; nothing from this call is accumulated.
        """
        array = _inputs.as_array(rows)
        if groups is None:
            raise MetricInputError("LidarAccumulator.update needs groups= (one id per row)")
        if array.ndim == 3:
            n, q = array.shape[0], array.shape[1]
            ids = np.repeat(_group_ids(groups, n), q)
            array = array.reshape(n * q, array.shape[2])
        elif array.ndim == 2:
            ids = _group_ids(groups, array.shape[0])
        else:
            raise MetricInputError(
                f"rows must be (N, D) or (n, q, D), got shape {tuple(array.shape)}"
            )
        _inputs.check_rows(array, self._dim)
        if array.shape[0] == 0:
            return
        unique, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # keep ids in order of first appearance
        position = np.empty_like(order)
        position[order] = np.arange(order.size)
        unique, inverse = unique[order], position[inverse.reshape(-1)]
        local = np.zeros((unique.size, self._dim))
        offset = 0
        for block in _inputs.iter_blocks(array, None, self.spectral.chunk_rows,
                                         torch.device("cpu")):
            np.add.at(local, inverse[offset : offset + block.shape[0]], block)
            offset += block.shape[0]
        if not np.isfinite(local).all():
            row = _inputs.first_nonfinite_row(array)
            where = f"row {row} contains NaN or Inf" if row is not None else "rows overflow"
            raise NonFiniteError(f"{where}; nothing from this update was accumulated")
        self.spectral.update(array)  # may still raise (overflow), before the groups change
        counts = np.bincount(inverse, minlength=unique.size)
        self._add_groups([_py_id(v) for v in unique], local, counts)

    def _add_groups(self, ids: list[Hashable], sums: np.ndarray, counts: np.ndarray) -> None:
        new = [g for g in ids if g not in self._index]
        if new:
            for g in new:
                self._index[g] = len(self._ids)
                self._ids.append(g)
            capacity = self._sums.shape[0]
            if len(self._ids) > capacity:
                grow = max(len(self._ids), 2 * capacity, 16)
                sums_new = np.zeros((grow, self._dim))
                sums_new[:capacity] = self._sums
                counts_new = np.zeros(grow, dtype=np.int64)
                counts_new[:capacity] = self._counts
                self._sums, self._counts = sums_new, counts_new
        where = np.array([self._index[g] for g in ids], dtype=np.int64)
        self._sums[where] += sums
        self._counts[where] += counts

    # ---------------------------------------------------------------- combine
    def merge(self, other: LidarAccumulator) -> LidarAccumulator:
        """Add ``other``'s rows and groups in place (groups with the same id combine)."""
        if not isinstance(other, LidarAccumulator):
            raise MetricInputError(f"can only merge a LidarAccumulator, got {type(other).__name__}")
        if other.dim != self._dim:
            raise MetricInputError(
                f"cannot merge accumulators of different dim ({self._dim} and {other.dim})"
            )
        self.spectral.merge(other.spectral)
        if other.n_groups:
            self._add_groups(other.group_ids, other.group_sums, other.group_counts)
        return self

    def __add__(self, other: LidarAccumulator) -> LidarAccumulator:
        if not isinstance(other, LidarAccumulator):
            return NotImplemented
        return self.copy().merge(other)

    def copy(self) -> LidarAccumulator:
        """An independent copy."""
        twin = LidarAccumulator(self._dim, chunk_rows=self.spectral.chunk_rows)
        twin.spectral = self.spectral.copy()
        twin._add_groups(self.group_ids, self.group_sums, self.group_counts)
        return twin

    # ---------------------------------------------------------------- metrics
    def scatter_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """(S_b, S_w) without delta, float64, as in the module docstring.

        Raises:
            MetricInputError: fewer than 2 groups, or no group with 2 or more rows.
        """
        n, total = self.n_groups, self.n_rows
        if n < 2:
            raise MetricInputError(f"LiDAR needs at least 2 groups, got {n}")
        if total - n < 1:
            raise MetricInputError("LiDAR needs a group with at least 2 rows, every group has 1")
        sums, counts = self.group_sums, self.group_counts.astype(np.float64)
        means = sums / counts[:, None]
        deviations = means - means.mean(axis=0)
        between = deviations.T @ deviations / (n - 1)
        within = (self.spectral.gram - means.T @ sums) / (total - n)
        return symmetrize(between), symmetrize(within)

    def lidar_eigenvalues(self, delta: float = DEFAULT_DELTA) -> np.ndarray:
        """Eigenvalues of (S_w + delta I)^{-1/2} S_b (S_w + delta I)^{-1/2}, descending, >= 0."""
        between, within = self.scatter_matrices()
        with single_threaded_lapack():
            w, vectors = np.linalg.eigh(within)
            inv_sqrt = (vectors / np.sqrt(np.maximum(w, 0.0) + delta)) @ vectors.T
            lidar_matrix = symmetrize(inv_sqrt @ between @ inv_sqrt)
            return np.maximum(np.linalg.eigvalsh(lidar_matrix)[::-1], 0.0)


def _check_delta(delta: Any) -> float:
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < math.inf:
        raise MetricInputError(f"delta must be a finite number > 0, got {delta!r}")
    return float(delta)


def lidar_result(
    acc: LidarAccumulator, *, delta: float = DEFAULT_DELTA, eps: float = DEFAULT_EPS
) -> MetricResult:
    """LiDAR (Thilak et al., ICLR 2024) of a :class:`LidarAccumulator`.

    ``conventions`` records n (classes), q (rows per class; ``None`` when classes differ in
    size, with ``q_min`` / ``q_max``), delta, eps and the scatter normalisers. Extras:
    ``top_eigenvalue``. NaN with a reason for fewer than 2 groups, groups of one row only, or
    a zero between-class scatter.
    """
    delta, eps = _check_delta(delta), check_eps(eps)
    counts = acc.group_counts
    q_min = int(counts.min()) if counts.size else 0
    q_max = int(counts.max()) if counts.size else 0
    conventions: dict[str, Any] = {
        "delta": delta,
        "eps": eps,
        "n": acc.n_groups,
        "q": q_min if q_min == q_max else None,
        "q_min": q_min,
        "q_max": q_max,
        "scatter": "S_b / (n - 1), S_w / (N - n) + delta I",
        "spectrum": "lidar_eigenvalues",
        "n_rows": acc.n_rows,
        "dim": acc.dim,
        "n_values": acc.dim,
        "solver": SOLVER,
    }
    try:
        values = acc.lidar_eigenvalues(delta)
    except MetricInputError as exc:
        reason = "no rows" if acc.n_rows == 0 else str(exc)
        return MetricResult("lidar", math.nan, conventions, {"reason": reason})
    value = formulas.entropy_effective_rank(values, eps)
    if math.isnan(value):
        return MetricResult(
            "lidar", math.nan, conventions, {"reason": "the between-group scatter is zero"}
        )
    return MetricResult("lidar", value, conventions, {"top_eigenvalue": float(values[0])})
