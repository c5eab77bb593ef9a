"""Spectra of a streamed matrix from its float64 Gram matrix.

For rows X (N x D) the Gram matrix G = X^T X has eigenvalues s_k^2, the squared singular values
of X; with column sums c and mean mu = c / N, the centred Gram matrix
G - N mu mu^T = G - c c^T / N is the Gram matrix of the column-centred rows. Both are
symmetric, so a symmetric eigensolver (LAPACK ``syevd`` through :func:`numpy.linalg.eigvalsh`)
in float64 gives every spectrum the metrics need, exactly and in O(D^3) time whatever N is.

Conventions (recorded in every metric's ``conventions``):

- values are sorted in descending order; tiny negative eigenvalues from round-off are clamped
  to 0 before the square root;
- eigenvalues at or below the round-off level ``max(N, D) * eps64 * lambda_max(X^T X)`` are
  set to 0 (:attr:`Spectra.noise_floor`), so exact zeros stay zeros;
- only ``min(N, D)`` values exist for an N x D matrix, so every spectrum is truncated to
  ``min(N, D)`` values (the same count ``torch.linalg.svdvals`` returns);
- covariance eigenvalues are l_k = s_k^2 / (N - 1) of the centred rows (the unbiased sample
  covariance, as ``numpy.cov`` and scikit-learn's ``PCA.explained_variance_``); the scale
  changes no metric here, only alpha-ReQ's intercept. With N < 2 they are undefined (NaN).

Precision: the Gram route resolves singular values down to about sqrt(eps64 * max(N, D)) times
the largest one (eigenvalues of G carry an absolute error of a few eps64 * s_1^2). Centring by
subtraction loses about log10(|mu|^2 / l_k) digits on a covariance eigenvalue l_k, which in
float64 matters only for offsets many orders of magnitude above the spread.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

#: Divisor of the centred Gram matrix that gives the covariance: N - COVARIANCE_DDOF.
COVARIANCE_DDOF = 1

#: The solver a spectrum comes from, recorded in ``conventions["solver"]``: the D x D Gram
#: matrix, or (for at most D/2 rows, when the rows are at hand) the N x N matrix X X^T,
#: whose non-zero eigenvalues are the same s_k^2.
SOLVER = "gram-float64-eigvalsh"
SOLVER_ROWS = "rows-float64-eigvalsh"

EPS64 = float(np.finfo(np.float64).eps)


def symmetrize(matrix: np.ndarray) -> np.ndarray:
    """(A + A^T) / 2, removing the asymmetry round-off leaves in a symmetric product."""
    return (matrix + matrix.T) * 0.5


def gram_eigenvalues(gram: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` largest eigenvalues of a symmetric PSD matrix, descending, clamped at 0.

    LAPACK reads the lower triangle only; callers pass an exactly symmetric matrix (the
    accumulator's :attr:`gram` is built from one triangle).
    """
    if count <= 0:
        return np.zeros(0)
    with single_threaded_lapack():
        values = np.linalg.eigvalsh(np.asarray(gram, dtype=np.float64))[::-1]
    return np.maximum(values[:count], 0.0)


@functools.cache
def _blas_controller() -> ThreadpoolController:
    # Finding the loaded BLAS libraries scans the process's memory maps (milliseconds), so it
    # is done once, not around every eigensolve.
    return ThreadpoolController()


def single_threaded_lapack() -> contextlib.AbstractContextManager[Any]:
    """Run BLAS/LAPACK on one thread for the enclosed eigensolves.

    At the widths of speech encoders (D <= 1024) a float64 ``syevd`` takes tens of
    milliseconds on one thread, while OpenBLAS's threaded version was measured 7-100x slower
    on a 2-core machine with other work running (its threads spin against the encoder's).
    One thread per eigensolve is the predictable choice; :func:`compute_metrics_many` uses the
    cores by running several eigensolves at once. ``rank`` runs its Gram updates under this
    limit too, since OpenBLAS workers left spinning between forward passes slow torch down.
    """
    return _blas_controller().limit(limits=1, user_api="blas")


def centered_gram(gram: np.ndarray, column_sums: np.ndarray, n_rows: int) -> np.ndarray:
    """G - c c^T / N: the Gram matrix of the column-centred rows."""
    if n_rows == 0:
        return np.zeros_like(gram)
    return gram - np.outer(column_sums, column_sums) / n_rows


def resolution_rtol(n_rows: int, dim: int) -> float:
    """Relative size below which the Gram route cannot tell a singular value from zero.

    ``sqrt(max(N, D) * eps64)``: numpy.linalg.matrix_rank's tolerance ``max(N, D) * eps``
    applied to the eigenvalues s_k^2 of X^T X, expressed on the singular values.
    """
    return float(np.sqrt(max(n_rows, dim, 1) * EPS64))


class Spectra:
    """The spectra of one matrix, computed lazily from its Gram state, each at most once.

    Built by :meth:`SpectralAccumulator.spectra`; :func:`compute_metrics` shares one instance
    between all metrics so each eigendecomposition runs once.
    """

    def __init__(self, gram: np.ndarray | Callable[[], np.ndarray], column_sums: np.ndarray,
                 n_rows: int, rows: np.ndarray | None = None) -> None:
        self._gram = gram
        self.column_sums = column_sums
        self.n_rows = int(n_rows)
        self.dim = len(column_sums)
        #: How many values every spectrum has: min(N, D).
        self.n_values = min(self.n_rows, self.dim)
        #: The (N, D) float64 rows when the caller kept them and N < D, else None.
        self.rows = rows if rows is not None and rows.shape[0] < self.dim else None
        self.solver = SOLVER_ROWS if self.rows is not None else SOLVER

    @functools.cached_property
    def gram(self) -> np.ndarray:
        """X^T X (D x D, float64); built on first use when it was given as a callable."""
        return self._gram() if callable(self._gram) else self._gram

    def _small_side(self, rows: np.ndarray) -> np.ndarray:
        # X X^T (N x N) has the same non-zero eigenvalues as X^T X (D x D).
        return gram_eigenvalues(rows @ rows.T, self.n_values)

    @functools.cached_property
    def _raw_eigenvalues(self) -> np.ndarray:
        if self.rows is not None:
            return self._small_side(self.rows)
        return gram_eigenvalues(self.gram, self.n_values)

    @property
    def noise_floor(self) -> float:
        """Eigenvalues of the (centred) Gram matrix at or below this are set to 0.

        ``max(N, D) * eps64 * lambda_max(X^T X)``: the round-off level of the Gram route (see
        :func:`resolution_rtol`). Zeroing them makes a rank-deficient matrix give the same
        spectrum as a float64 SVD instead of a floor of round-off noise.
        """
        top = float(self._raw_eigenvalues[0]) if self.n_values else 0.0
        return resolution_rtol(self.n_rows, self.dim) ** 2 * top

    def _denoise(self, values: np.ndarray) -> np.ndarray:
        return np.where(values > self.noise_floor, values, 0.0)

    @functools.cached_property
    def gram_eigenvalues(self) -> np.ndarray:
        """Eigenvalues of X^T X (= s_k^2), descending, min(N, D) of them."""
        return self._denoise(self._raw_eigenvalues)

    @functools.cached_property
    def centered_gram_eigenvalues(self) -> np.ndarray:
        """Eigenvalues of the centred Gram matrix (= squared centred singular values)."""
        if self.rows is not None:
            return self._denoise(self._small_side(self.rows - self.column_sums / self.n_rows))
        centred = centered_gram(self.gram, self.column_sums, self.n_rows)
        return self._denoise(gram_eigenvalues(centred, self.n_values))

    @property
    def singular_values(self) -> np.ndarray:
        """Singular values s_k of the raw rows, descending."""
        return np.sqrt(self.gram_eigenvalues)

    @property
    def centered_singular_values(self) -> np.ndarray:
        """Singular values of the column-centred rows, descending."""
        return np.sqrt(self.centered_gram_eigenvalues)

    @property
    def covariance_eigenvalues(self) -> np.ndarray:
        """Eigenvalues l_k of the sample covariance (divisor N - 1), descending; NaN if N < 2."""
        if self.n_rows <= COVARIANCE_DDOF:
            return np.full(self.n_values, np.nan)
        return self.centered_gram_eigenvalues / (self.n_rows - COVARIANCE_DDOF)
