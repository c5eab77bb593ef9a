"""Rank correlations with percentile bootstrap confidence intervals.

Spearman's rho and Kendall's tau-b with their p-values come from :mod:`scipy.stats`
(:func:`~scipy.stats.spearmanr`, :func:`~scipy.stats.kendalltau`). The bootstrap resamples the
paired points with replacement (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993,
ch. 13, percentile interval) and recomputes both statistics on every resample with the
vectorised :func:`spearman_rows` and :func:`kendall_rows`, which agree with scipy on each
resample (tests check this) but handle a thousand resamples at once.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from scipy import stats

__all__ = ["RankCorrelation", "kendall_rows", "rank_correlation", "spearman_rows"]

#: Fewest distinct points a rank correlation is computed on.
MIN_POINTS = 3

# cap on resamples x n x n elements held at once by kendall_rows
_KENDALL_BLOCK_ELEMENTS = 4_000_000


@dataclasses.dataclass(frozen=True)
class RankCorrelation:
    """Spearman and Kendall statistics of one paired series; NaN with ``reason`` when undefined."""

    n: int
    spearman: float
    spearman_p: float
    spearman_low: float
    spearman_high: float
    kendall: float
    kendall_p: float
    kendall_low: float
    kendall_high: float
    n_boot: int
    reason: str = ""

    @classmethod
    def undefined(cls, n: int, reason: str) -> RankCorrelation:
        nan = math.nan
        return cls(n, nan, nan, nan, nan, nan, nan, nan, nan, 0, reason)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of ``x`` and ``y`` (shape ``(B, n)``), ties averaged.

    Pearson correlation of the average ranks (Spearman 1904); NaN for a row that is constant
    in either argument.
    """
    rx = stats.rankdata(x, axis=1)
    ry = stats.rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    num = np.einsum("ij,ij->i", rx, ry)
    den = np.sqrt(np.einsum("ij,ij->i", rx, rx) * np.einsum("ij,ij->i", ry, ry))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[den == 0] = np.nan
    return np.clip(out, -1.0, 1.0)


def kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair of ``x`` and ``y`` (shape ``(B, n)``).

    tau-b = (P - Q) / sqrt((n0 - n1)(n0 - n2)) with n0 = n(n-1)/2 pairs, n1 pairs tied in x and
    n2 pairs tied in y (Kendall 1945), the statistic :func:`scipy.stats.kendalltau` returns by
    default. NaN for a row that is constant in either argument.
    """
    n_rows, n = x.shape
    out = np.empty(n_rows)
    n0 = n * (n - 1) / 2.0
    block = max(1, _KENDALL_BLOCK_ELEMENTS // max(1, n * n))
    for start in range(0, n_rows, block):
        xs, ys = x[start:start + block], y[start:start + block]
        dx = np.sign(xs[:, :, None] - xs[:, None, :])
        dy = np.sign(ys[:, :, None] - ys[:, None, :])
        s = (dx * dy).sum(axis=(1, 2)) / 2.0
        # the n diagonal zeros are not pairs
        n1 = ((dx == 0).sum(axis=(1, 2)) - n) / 2.0
        n2 = ((dy == 0).sum(axis=(1, 2)) - n) / 2.0
        den = np.sqrt((n0 - n1) * (n0 - n2))
        with np.errstate(invalid="ignore", divide="ignore"):
            tau = s / den
        tau[den == 0] = np.nan
        out[start:start + block] = tau
    return np.clip(out, -1.0, 1.0)


def rank_correlation(x: np.ndarray, y: np.ndarray, *, n_bootstrap: int = 1000,
                     rng: np.random.Generator | None = None,
                     confidence: float = 0.95) -> RankCorrelation:
    """Spearman rho and Kendall tau-b of paired values with p-values and bootstrap CIs.

    Undefined (NaN, with a reason) for fewer than :data:`MIN_POINTS` points or a constant
    series. The confidence interval is the percentile interval of ``n_bootstrap`` resamples
    of the points with replacement; resamples whose statistic is undefined (a resample that
    drew one point only, say) are left out and ``n_boot`` counts the rest. ``n_bootstrap=0``
    skips the bootstrap (CI NaN).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = int(x.shape[0])
    if n < MIN_POINTS:
        return RankCorrelation.undefined(n, f"fewer than {MIN_POINTS} points ({n})")
    if np.ptp(x) == 0:
        return RankCorrelation.undefined(n, "constant metric")
    if np.ptp(y) == 0:
        return RankCorrelation.undefined(n, "constant score")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        sp = stats.spearmanr(x, y)
        kt = stats.kendalltau(x, y)
    rho_ci = tau_ci = (math.nan, math.nan)
    n_boot = 0
    if n_bootstrap > 0:
        rng = rng if rng is not None else np.random.default_rng(0)
        idx = rng.integers(0, n, size=(n_bootstrap, n))
        rho_b = spearman_rows(x[idx], y[idx])
        tau_b = kendall_rows(x[idx], y[idx])
        ok = np.isfinite(rho_b) & np.isfinite(tau_b)
        n_boot = int(ok.sum())
        if n_boot:
            alpha = (1.0 - confidence) / 2.0
            q = [100.0 * alpha, 100.0 * (1.0 - alpha)]
            rho_ci = tuple(float(v) for v in np.percentile(rho_b[ok], q))
            tau_ci = tuple(float(v) for v in np.percentile(tau_b[ok], q))
    return RankCorrelation(
        n=n, spearman=float(sp.statistic), spearman_p=float(sp.pvalue),
        spearman_low=rho_ci[0], spearman_high=rho_ci[1],
        kendall=float(kt.statistic), kendall_p=float(kt.pvalue),
        kendall_low=tau_ci[0], kendall_high=tau_ci[1], n_boot=n_boot)
