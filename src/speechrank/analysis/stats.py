"""Rank correlations with percentile bootstrap confidence intervals.

Spearman's rho and Kendall's tau-b with their p-values come from :mod:`scipy.stats`
(:func:`~scipy.stats.spearmanr`, :func:`~scipy.stats.kendalltau`). The bootstrap resamples the
paired points with replacement (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993,
ch. 13, percentile interval). A resample of n points is fully described by how many times it
drew each point, so :func:`spearman_counts` and :func:`kendall_counts` compute both statistics
for a thousand resamples at once from a (resamples x points) count matrix with a few matrix
products, exactly as scipy would on the resampled arrays (tests check this on every
resample), in well under a millisecond for the sizes of a checkpoint sweep.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from scipy import special, stats

__all__ = ["RankCorrelation", "SpearmanFields", "centred_ranks", "correlation_of_ranks",
           "kendall_counts", "partial_from_correlations", "partial_spearman", "rank_correlation",
           "resample_counts", "spearman_counts"]

#: Fewest distinct points a rank correlation is computed on.
MIN_POINTS = 3


@dataclasses.dataclass(frozen=True)
class _Points:
    n: int


@dataclasses.dataclass(frozen=True)
class SpearmanFields:
    """Spearman's rho, its p-value and its bootstrap interval."""

    spearman: float
    spearman_p: float
    spearman_low: float
    spearman_high: float


@dataclasses.dataclass(frozen=True)
class RankCorrelation(SpearmanFields, _Points):
    """Spearman and Kendall statistics of one paired series; NaN with ``reason`` when undefined."""

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


def resample_counts(rng: np.random.Generator, n: int, n_resamples: int) -> np.ndarray:
    """How many times each of ``n`` points is drawn by each of ``n_resamples`` bootstrap
    resamples of size ``n`` (uniform draws with replacement); shape ``(n_resamples, n)``."""
    idx = rng.integers(0, n, size=(n_resamples, n))
    offsets = (np.arange(n_resamples) * n)[:, None]
    return np.bincount((idx + offsets).ravel(), minlength=n_resamples * n).reshape(
        n_resamples, n).astype(np.float64)


def _average_ranks(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """1-based average rank, within each resample, of every point's value: (number of drawn
    values below it) + (number of drawn values equal to it + 1) / 2."""
    levels, dense = np.unique(values, return_inverse=True)
    onehot = np.zeros((values.size, levels.size))
    onehot[np.arange(values.size), dense] = 1.0
    per_level = counts @ onehot                       # drawn values at each distinct level
    below = np.cumsum(per_level, axis=1) - per_level
    return (below + (per_level + 1.0) / 2.0) @ onehot.T


def centred_ranks(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Average ranks of every point within each resample, minus the resample's mean rank
    ``(m + 1) / 2``; shape ``(resamples, points)``. Computed once per series, they give the
    Spearman correlation of any two series over the same resamples
    (:func:`correlation_of_ranks`)."""
    m = counts.sum(axis=1, keepdims=True)
    return _average_ranks(np.asarray(values, dtype=np.float64), counts) - (m + 1.0) / 2.0


def correlation_of_ranks(rx: np.ndarray, ry: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Spearman's rho of every resample from two :func:`centred_ranks` matrices of the same
    ``counts``: the Pearson correlation of the ranks with each point weighted by how often it
    was drawn. NaN where a resample is constant in either series."""
    m = counts.sum(axis=1)
    num = (counts * rx * ry).sum(axis=1)
    den = np.sqrt((counts * rx * rx).sum(axis=1) * (counts * ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = num / den
    rho[~(den > 1e-12 * m ** 3)] = np.nan
    return np.clip(rho, -1.0, 1.0)


def partial_from_correlations(r_xy: np.ndarray | float, r_xz: np.ndarray | float,
                              r_yz: np.ndarray | float) -> np.ndarray:
    """First-order partial correlation of x and y given z from the three pairwise ones:
    ``(r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2))`` (Yule 1907; Fisher 1924). On the
    ranks' Pearson correlations it is the partial Spearman: the correlation of the residuals
    of x's and y's ranks after a least-squares line on z's ranks. NaN where z determines x or
    y (a denominator below 1e-12)."""
    r_xy, r_xz, r_yz = (np.asarray(v, dtype=np.float64) for v in (r_xy, r_xz, r_yz))
    den = np.sqrt(np.clip((1.0 - r_xz ** 2) * (1.0 - r_yz ** 2), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (r_xy - r_xz * r_yz) / den
    out = np.where(den > 1e-12, out, np.nan)
    return np.clip(out, -1.0, 1.0)


def partial_spearman(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    """Spearman's rho of x and y given z: the ranks of x and y are residualised on the ranks
    of z by least squares, and the residuals correlated (Pearson). NaN for fewer than
    :data:`MIN_POINTS` points, a constant series, or z determining x or y."""
    x, y, z = (np.asarray(v, dtype=np.float64) for v in (x, y, z))
    if x.size < MIN_POINTS or min(np.ptp(x), np.ptp(y), np.ptp(z)) == 0:
        return math.nan
    ones = np.ones((1, x.size))
    rx, ry, rz = (centred_ranks(v, ones)[0] for v in (x, y, z))
    corr = [float(correlation_of_ranks(a[None], b[None], ones)[0])
            for a, b in ((rx, ry), (rx, rz), (ry, rz))]
    return float(partial_from_correlations(*corr))


def spearman_counts(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Spearman's rho (Spearman 1904; ties get average ranks) of every resample.

    ``counts[b, i]`` is how many times resample ``b`` drew point ``i``; the result equals
    ``scipy.stats.spearmanr(np.repeat(x, counts[b]), np.repeat(y, counts[b]))`` and is NaN
    where a resample is constant in x or y.
    """
    m = counts.sum(axis=1, keepdims=True)
    rx = _average_ranks(x, counts) - (m + 1.0) / 2.0
    ry = _average_ranks(y, counts) - (m + 1.0) / 2.0
    num = (counts * rx * ry).sum(axis=1)
    den = np.sqrt((counts * rx * rx).sum(axis=1) * (counts * ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = num / den
    rho[~(den > 1e-12 * m[:, 0] ** 3)] = np.nan
    return np.clip(rho, -1.0, 1.0)


def kendall_counts(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Kendall's tau-b (Kendall 1945) of every resample, as :func:`scipy.stats.kendalltau`.

    tau-b = S / sqrt((n0 - n1)(n0 - n2)) over the m = sum(counts[b]) drawn values: n0 = m(m-1)/2
    pairs, S = sum over pairs of sign(dx) sign(dy), n1 and n2 the pairs tied in x and in y.
    Two draws of one point are a pair tied in both; draws of points i and j make w_i w_j pairs,
    so S = w^T A w / 2 with A_ij = sign(x_i - x_j) sign(y_i - y_j), and likewise for the ties.
    NaN where a resample is constant in x or y.
    """
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    tx = (sx == 0).astype(np.float64)
    ty = (sy == 0).astype(np.float64)
    np.fill_diagonal(tx, 0.0)
    np.fill_diagonal(ty, 0.0)
    m = counts.sum(axis=1)
    n0 = m * (m - 1.0) / 2.0
    self_pairs = (counts * (counts - 1.0) / 2.0).sum(axis=1)
    s = 0.5 * ((counts @ (sx * sy)) * counts).sum(axis=1)
    n1 = self_pairs + 0.5 * ((counts @ tx) * counts).sum(axis=1)
    n2 = self_pairs + 0.5 * ((counts @ ty) * counts).sum(axis=1)
    den = np.sqrt(np.clip(n0 - n1, 0.0, None) * np.clip(n0 - n2, 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = s / den
    tau[den == 0] = np.nan
    return np.clip(tau, -1.0, 1.0)


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value as :func:`scipy.stats.spearmanr` computes them
    (the t statistic ``rho sqrt((n - 2) / ((1 + rho)(1 - rho)))`` with n - 2 degrees of
    freedom), without its input checks: the caller has excluded constant series."""
    ones = np.ones((1, x.size))
    rho = float(correlation_of_ranks(centred_ranks(x, ones), centred_ranks(y, ones), ones)[0])
    dof = x.size - 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = rho * math.sqrt(max(dof / ((rho + 1.0) * (1.0 - rho)), 0.0)) if abs(rho) < 1 \
            else math.copysign(math.inf, rho)
    return rho, float(2.0 * special.stdtr(dof, -abs(t)))


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
    rho, rho_p = _spearman(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        kt = stats.kendalltau(x, y)
    rho_ci = tau_ci = (math.nan, math.nan)
    n_boot = 0
    if n_bootstrap > 0:
        rng = rng if rng is not None else np.random.default_rng(0)
        counts = resample_counts(rng, n, n_bootstrap)
        rho_b = spearman_counts(x, y, counts)
        tau_b = kendall_counts(x, y, counts)
        ok = np.isfinite(rho_b) & np.isfinite(tau_b)
        n_boot = int(ok.sum())
        if n_boot:
            alpha = (1.0 - confidence) / 2.0
            q = [100.0 * alpha, 100.0 * (1.0 - alpha)]
            bounds = np.percentile(np.vstack([rho_b[ok], tau_b[ok]]), q, axis=1)
            rho_ci = (float(bounds[0, 0]), float(bounds[1, 0]))
            tau_ci = (float(bounds[0, 1]), float(bounds[1, 1]))
    return RankCorrelation(
        n=n, spearman=rho, spearman_p=rho_p,
        spearman_low=rho_ci[0], spearman_high=rho_ci[1],
        kendall=float(kt.statistic), kendall_p=float(kt.pvalue),
        kendall_low=tau_ci[0], kendall_high=tau_ci[1], n_boot=n_boot)
