"""The formulas of the label-free metrics, on a spectrum (a 1-D array of values >= 0).

Pure numpy, no state, no conventions: :mod:`speechrank.metrics.spectral` picks the spectrum
and records the conventions. Every function returns NaN (never raises) when the spectrum
cannot define the value; the callers attach the reason.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import entr


def entropy_effective_rank(values: np.ndarray, eps: float) -> float:
    """exp of the Shannon entropy of p_k = v_k / sum(v) + eps (natural log).

    Roy & Vetterli, "The effective rank: a measure of effective dimensionality", EUSIPCO 2007;
    with singular values and eps = 1e-7 this is RankMe (Garrido et al., "RankMe: Assessing the
    downstream performance of pretrained self-supervised representations by their rank",
    ICML 2023, arXiv 2210.02885). The eps keeps log p finite; as in the reference code it is
    added after normalising, so p sums to 1 + K * eps. NaN for an empty or all-zero spectrum.
    """
    values = np.asarray(values, dtype=np.float64)
    total = float(values.sum()) if values.size else 0.0
    if total <= 0.0:
        return float("nan")
    p = values / total + eps
    return float(np.exp(entr(p).sum()))


def stable_rank(values: np.ndarray) -> float:
    """sum(l) / max(l) for eigenvalues l (= ||X||_F^2 / ||X||_2^2 on squared singular values).

    Rudelson & Vershynin, "Sampling from large matrices: an approach through geometric
    functional analysis", J. ACM 2007; on covariance eigenvalues it is the NESum of He & Ozay,
    "Exploring the gap between collapsed and whitened features in self-supervised learning",
    ICML 2022. NaN for an empty or all-zero spectrum.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or values.max() <= 0.0:
        return float("nan")
    return float(values.sum() / values.max())


def participation_ratio(values: np.ndarray) -> float:
    """(sum l)^2 / sum(l^2) for eigenvalues l.

    The participation ratio of a covariance spectrum (e.g. Gao et al., "A theory of
    multineuronal dimensionality, dynamics and measurement", bioRxiv 2017; Recanatesi et al.,
    2019). NaN for an empty or all-zero spectrum.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or values.max() <= 0.0:
        return float("nan")
    # Scale by the largest value first: avoids overflow and underflow of the squares.
    scaled = values / values.max()
    return float(scaled.sum() ** 2 / np.square(scaled).sum())


def count_above(values: np.ndarray, rtol: float) -> int:
    """Number of values strictly greater than ``rtol`` times the largest (0 if all are zero)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or values.max() <= 0.0:
        return 0
    return int(np.count_nonzero(values > rtol * values.max()))


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """log l_j ~ intercept - alpha * log j fitted over ranks ``first .. last`` (one-based)."""

    alpha: float
    intercept: float
    r2: float
    r2_weighted: float


def power_law_fit(values: np.ndarray, first: int, last: int) -> PowerLawFit:
    """Weighted least squares of log l_j on log j over one-based ranks first..last, weights 1/j.

    Agrawal et al., "alpha-ReQ: Assessing representation quality in self-supervised learning by
    measuring eigenspectrum decay", NeurIPS 2022 (weights 1/j following Stringer et al., Nature
    2019). ``values`` must hold at least ``last`` positive values (the caller checks).
    ``r2`` is the ordinary coefficient of determination of the fitted line over the fit range
    (what reptrix reports), ``r2_weighted`` the one with the fit's own weights.
    """
    ranks = np.arange(first, last + 1, dtype=np.float64)
    x = np.log(ranks)
    y = np.log(np.asarray(values, dtype=np.float64)[first - 1 : last])
    weights = 1.0 / ranks
    # numpy.polyfit weights residuals by w, so w = sqrt(1/j) minimises sum (1/j) r_j^2.
    slope, intercept = np.polyfit(x, y, 1, w=np.sqrt(weights))
    residual = y - (intercept + slope * x)
    ss_tot = float(np.square(y - y.mean()).sum())
    y_wmean = float(np.average(y, weights=weights))
    ss_tot_w = float((weights * np.square(y - y_wmean)).sum())
    r2 = 1.0 - float(np.square(residual).sum()) / ss_tot if ss_tot > 0 else float("nan")
    r2_w = (
        1.0 - float((weights * np.square(residual)).sum()) / ss_tot_w
        if ss_tot_w > 0
        else float("nan")
    )
    return PowerLawFit(alpha=float(-slope), intercept=float(intercept), r2=r2, r2_weighted=r2_w)


def isoscore(values: np.ndarray, dim: int) -> float:
    """IsoScore of a point cloud in R^dim from its covariance eigenvalues l.

    Rudman, Gillman, Rayne and Eickhoff, "IsoScore: Measuring the Uniformity of Embedding
    Space Utilization", Findings of ACL 2022: the variances along the principal axes are
    scaled to norm sqrt(dim), their distance to the all-ones vector becomes the isotropy
    defect delta, and IsoScore = ((dim - delta^2 (dim - sqrt(dim)))^2 - dim) / (dim (dim - 1)).
    Expanding delta^2 = |sqrt(dim) l / |l| - 1|^2 / (2 (dim - sqrt(dim))) gives
    dim - delta^2 (dim - sqrt(dim)) = sqrt(dim) sum(l) / |l|, so

        IsoScore = (PR - 1) / (dim - 1),  PR = (sum l)^2 / sum l^2,

    the participation ratio mapped onto [0, 1]: 0 when one direction holds all the variance, 1
    when every one of the dim directions holds the same. The eigenvalues beyond min(N - 1, dim)
    are 0 and change neither sum. NaN for an empty or all-zero spectrum or dim < 2.
    """
    return isoscore_from_ratio(participation_ratio(values), dim)


def isoscore_from_ratio(ratio: float, dim: int) -> float:
    """IsoScore ``(PR - 1) / (dim - 1)`` from a participation ratio measured in R^dim (see
    :func:`isoscore`); NaN for a non-finite ratio or dim < 2."""
    if dim < 2 or not np.isfinite(ratio):
        return float("nan")
    return float((ratio - 1.0) / (dim - 1.0))
