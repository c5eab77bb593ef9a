"""The spectral metrics (docs/design.md, "The metrics") as functions of a :class:`Spectra`.

Each function picks its spectrum, applies its formula from :mod:`speechrank.metrics.formulas`
and returns a :class:`MetricResult` whose ``conventions`` record everything that produced the
value. Degenerate inputs give NaN with ``extras["reason"]``, never an exception:

- no rows: NaN for every metric;
- one row: raw metrics are defined (RankMe of one non-zero row is 1 up to eps: exactly
  exp(-(1 + eps) log(1 + eps))); centred ones are NaN (they need 2 rows);
- all rows zero (raw) or all rows equal (centred): NaN, except ``numerical_rank`` = 0;
- alpha-ReQ with fewer non-zero covariance eigenvalues than its fit range needs: NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from speechrank.metrics import formulas
from speechrank.metrics.errors import MetricInputError
from speechrank.metrics.result import MetricResult
from speechrank.metrics.spectrum import COVARIANCE_DDOF, Spectra, resolution_rtol

#: eps added to every normalised value before the entropy (Garrido et al.'s reference code).
DEFAULT_EPS = 1e-7
#: alpha-ReQ fit range, one-based inclusive ranks (the reference code's 0-based arange(5, 100)).
DEFAULT_FIT_RANGE = (6, 100)

_NO_ROWS = "no rows"
_ONE_ROW = "centred metrics need at least 2 rows, got 1"
_ZERO = "all rows are zero"
_EQUAL = "the centred rows are zero to float64 precision (every row is the same)"


def check_eps(eps: Any) -> float:
    """eps must be a finite number >= 0."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < math.inf:
        raise MetricInputError(f"eps must be a finite number >= 0, got {eps!r}")
    return float(eps)


def _check_fit_range(fit_range: Any) -> tuple[int, int]:
    try:
        first, last = (int(v) for v in fit_range)
        ok = all(float(v) == int(v) for v in fit_range)
    except (TypeError, ValueError):
        ok = False
    if not ok or not 1 <= first < last:
        raise MetricInputError(
            "fit_range must be two one-based ranks (first, last) with 1 <= first < last, got "
            f"{fit_range!r}"
        )
    return first, last


def _conventions(spectra: Spectra, spectrum: str, centered: bool, **more: Any) -> dict[str, Any]:
    return {
        "spectrum": spectrum,
        "centered": centered,
        **more,
        "n_rows": spectra.n_rows,
        "dim": spectra.dim,
        "n_values": spectra.n_values,
        "solver": spectra.solver,
    }


def _undefined(spectra: Spectra, centered: bool) -> str | None:
    if spectra.n_rows == 0:
        return _NO_ROWS
    if centered and spectra.n_rows <= COVARIANCE_DDOF:
        return _ONE_ROW
    return None


def _result(name: str, value: float, conventions: dict[str, Any], reason: str | None,
            **extras: Any) -> MetricResult:
    if reason is not None:
        return MetricResult(name, float("nan"), conventions, {"reason": reason})
    return MetricResult(name, float(value), conventions, extras)


def _entropy_metric(name: str, spectra: Spectra, values_of: str, centered: bool,
                    eps: float, **more: Any) -> MetricResult:
    eps = check_eps(eps)
    conventions = _conventions(spectra, values_of, centered, eps=eps, **more)
    reason = _undefined(spectra, centered)
    value = float("nan")
    if reason is None:
        values = getattr(spectra, values_of)
        value = formulas.entropy_effective_rank(values, eps)
        if math.isnan(value):
            reason = _EQUAL if centered else _ZERO
    return _result(name, value, conventions, reason)


def rankme_result(spectra: Spectra, *, eps: float = DEFAULT_EPS) -> MetricResult:
    """RankMe (Garrido et al., ICML 2023, arXiv 2210.02885): exp-entropy of the raw singular
    values, p_k = s_k / sum s + eps. RankMe-t (Aldeneh et al., ICASSP 2025, arXiv 2409.10787)
    is this on per-utterance summed frames."""
    return _entropy_metric("rankme", spectra, "singular_values", False, eps)


def rankme_centered_result(spectra: Spectra, *, eps: float = DEFAULT_EPS) -> MetricResult:
    """RankMe on column-centred rows: insensitive to a common offset of all rows."""
    return _entropy_metric("rankme_centered", spectra, "centered_singular_values", True, eps)


def erank_cov_result(spectra: Spectra, *, eps: float = DEFAULT_EPS) -> MetricResult:
    """Effective rank (Roy & Vetterli, EUSIPCO 2007) of the covariance eigenvalues l_k,
    p_k = l_k / sum l + eps: what the reptrix library calls RankMe."""
    return _entropy_metric(
        "erank_cov", spectra, "covariance_eigenvalues", True, eps,
        covariance_ddof=COVARIANCE_DDOF,
    )


def alpha_req_result(
    spectra: Spectra, *, fit_range: tuple[int, int] = DEFAULT_FIT_RANGE
) -> MetricResult:
    """alpha-ReQ (Agrawal et al., NeurIPS 2022): the decay exponent alpha of the covariance
    eigenvalues, l_j ~ j^-alpha, by weighted least squares of log l_j on log j (weights 1/j)
    over one-based ranks ``fit_range`` (inclusive). Extras: ``r2``, ``r2_weighted``,
    ``intercept``. NaN when fewer than ``last`` non-zero eigenvalues exist."""
    first, last = _check_fit_range(fit_range)
    conventions = _conventions(
        spectra, "covariance_eigenvalues", True,
        fit_range=[first, last], fit_range_ranks="one-based, inclusive", weights="1/j",
        covariance_ddof=COVARIANCE_DDOF,
    )
    reason = _undefined(spectra, True)
    if reason is not None:
        return _result("alpha_req", math.nan, conventions, reason)
    values = spectra.covariance_eigenvalues
    if values.size < last:
        reason = (
            f"the fit range {first}..{last} needs min(N, D) >= {last} covariance eigenvalues, "
            f"got {values.size}"
        )
    elif values[last - 1] <= 0.0:
        rank = int(np.count_nonzero(values > 0.0))
        reason = (
            f"the fit range {first}..{last} needs {last} non-zero covariance eigenvalues, "
            f"the centred rows have rank {rank}"
        )
    if reason is not None:
        return _result("alpha_req", math.nan, conventions, reason)
    fit = formulas.power_law_fit(values, first, last)
    return _result(
        "alpha_req", fit.alpha, conventions, None,
        r2=fit.r2, r2_weighted=fit.r2_weighted, intercept=fit.intercept,
    )


def covariance_ratio(name: str, spectra: Spectra,
                     formula: Callable[[np.ndarray], float]) -> MetricResult:
    """The metric ``name``: ``formula`` of the covariance eigenvalues (descending, ddof
    :data:`~speechrank.metrics.spectrum.COVARIANCE_DDOF`), with the conventions recorded and
    NaN with a reason where the spectrum is undefined (too few rows) or the formula gives NaN
    (every row the same). A new covariance metric is this and its formula."""
    conventions = _conventions(
        spectra, "covariance_eigenvalues", True, covariance_ddof=COVARIANCE_DDOF
    )
    reason = _undefined(spectra, True)
    value = math.nan if reason else formula(spectra.covariance_eigenvalues)
    if reason is None and math.isnan(value):
        reason = _EQUAL
    return _result(name, value, conventions, reason)


def stable_rank_result(spectra: Spectra) -> MetricResult:
    """Stable rank sum l / max l of the covariance eigenvalues (Rudelson & Vershynin 2007;
    NESum of He & Ozay 2022 on centred data)."""
    return covariance_ratio("stable_rank", spectra, formulas.stable_rank)


def participation_ratio_result(spectra: Spectra) -> MetricResult:
    """Participation ratio (sum l)^2 / sum l^2 of the covariance eigenvalues."""
    return covariance_ratio("participation_ratio", spectra, formulas.participation_ratio)


def numerical_rank_result(spectra: Spectra, *, rtol: float | None = None) -> MetricResult:
    """Count of raw singular values s_k > rtol * s_1.

    Default rtol = sqrt(max(N, D) * eps64): numpy.linalg.matrix_rank's rule
    (``max(N, D) * eps``) applied to the eigenvalues s_k^2 of X^T X, which is as fine as the
    float64 Gram route can resolve. An all-zero matrix has numerical rank 0.
    """
    default = rtol is None
    if default:
        rtol = resolution_rtol(spectra.n_rows, spectra.dim)
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0 < rtol < 1:
        raise MetricInputError(f"rtol must be a number in (0, 1), got {rtol!r}")
    conventions = _conventions(
        spectra, "singular_values", False, rtol=float(rtol), rtol_default=default
    )
    reason = _undefined(spectra, False)
    value = math.nan if reason else float(formulas.count_above(spectra.singular_values, rtol))
    return _result("numerical_rank", value, conventions, reason)
