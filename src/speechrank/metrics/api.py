"""Public entry points: ``compute_metric(s)`` and one function per metric.

The metrics themselves are registered in :mod:`speechrank.metrics.registry` (:data:`METRICS`:
each declares its input, its direction and how its state merges across processes).

Every metric accepts either an (N, D) matrix (numpy array or torch tensor, any float dtype,
CPU or CUDA) or an accumulator, and routes both through the same float64 Gram computation, so
a matrix and an accumulator fed the same rows give the same value. The per-metric functions
(:func:`rankme`, :func:`alpha_req`, ...) return a plain float; :func:`compute_metric` and
:func:`compute_metrics` return :class:`MetricResult` with the conventions, and the latter
computes each spectrum once for all the metrics asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from speechrank.metrics import _inputs
from speechrank.metrics.accumulator import SpectralAccumulator
from speechrank.metrics.errors import MetricInputError
from speechrank.metrics.lidar import DEFAULT_DELTA, LidarAccumulator
from speechrank.metrics.registry import (
    GROUP_METRIC_NAMES,
    LAYER_METRIC_NAMES,
    METRICS,
    ROW_METRIC_NAMES,
    SPECTRAL_METRIC_NAMES,
    MetricSpec,
    direction,
)
from speechrank.metrics.result import MetricResult
from speechrank.metrics.spectral import DEFAULT_EPS, DEFAULT_FIT_RANGE
from speechrank.metrics.spectrum import single_threaded_lapack

# Re-exported: the registry lived here before it had a torch-free module of its own.
__all__ = ["GROUP_METRIC_NAMES", "LAYER_METRIC_NAMES", "METRICS", "ROW_METRIC_NAMES",
           "SPECTRAL_METRIC_NAMES", "MetricSpec", "alpha_req", "as_accumulator",
           "as_lidar_accumulator", "compute_metric", "compute_metrics", "compute_metrics_many",
           "direction", "erank_cov", "lidar", "numerical_rank", "participation_ratio", "rankme",
           "rankme_centered", "stable_rank"]

def _spec(name: str) -> MetricSpec:
    try:
        return METRICS[name]
    except KeyError:
        known = ", ".join(METRICS)
        raise MetricInputError(f"unknown metric {name!r} (known: {known})") from None


def as_accumulator(source: Any) -> SpectralAccumulator:
    """The spectral accumulator behind ``source`` (a matrix is accumulated into a new one)."""
    if isinstance(source, SpectralAccumulator):
        return source
    if isinstance(source, LidarAccumulator):
        return source.spectral
    array = _inputs.as_array(source, "the matrix")
    if array.ndim != 2:
        raise MetricInputError(
            f"metrics take an (N, D) matrix or an accumulator, got shape {tuple(array.shape)}"
        )
    device = array.device if isinstance(array, torch.Tensor) else None
    acc = SpectralAccumulator(array.shape[1], device=device)
    acc.update(array)
    return acc


def as_lidar_accumulator(source: Any, groups: Any = None) -> LidarAccumulator:
    """The LiDAR accumulator behind ``source``.

    ``source`` is a :class:`LidarAccumulator` (``groups`` must be None), an (N, D) matrix with
    ``groups`` one id per row, or an (n, q, D) array: n classes of q views, with ``groups``
    one id per class or None (classes numbered 0..n-1).
    """
    if isinstance(source, LidarAccumulator):
        if groups is not None:
            raise MetricInputError("groups= cannot be given with a LidarAccumulator")
        return source
    if isinstance(source, SpectralAccumulator):
        raise MetricInputError(
            "LiDAR needs group ids: use a LidarAccumulator or a matrix with groups="
        )
    array = _inputs.as_array(source, "the matrix")
    if array.ndim == 3 and groups is None:
        groups = list(range(array.shape[0]))
    if array.ndim not in (2, 3) or groups is None:
        raise MetricInputError(
            "LiDAR takes an (N, D) matrix with groups= (one id per row) or an (n, q, D) array, "
            f"got shape {tuple(array.shape)}" + (" without groups" if groups is None else "")
        )
    acc = LidarAccumulator(array.shape[-1])
    acc.update(array, groups)
    return acc


def _check_options(names: Iterable[str], options: Mapping[str, Any]) -> None:
    allowed = {opt for name in names for opt in _spec(name).options}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise MetricInputError(
            f"unknown option(s) {', '.join(unknown)} for metric(s) {', '.join(names)} "
            f"(allowed: {', '.join(sorted(allowed)) or 'none'})"
        )


def compute_metric(name: str, source: Any, *, groups: Any = None, **options: Any) -> MetricResult:
    """One metric as a :class:`MetricResult` (value, conventions, extras).

    Args:
        name: a key of :data:`METRICS`.
        source: an (N, D) matrix, a :class:`SpectralAccumulator`, or a
            :class:`LidarAccumulator` (for ``lidar`` also an (n, q, D) array).
        groups: group ids for ``lidar`` with a matrix source.
        **options: the metric's options (``eps``, ``fit_range``, ``rtol``, ``delta``).
    """
    spec = _spec(name)
    _check_options([name], options)
    if spec.input == "groups":
        return spec.compute(as_lidar_accumulator(source, groups), **options)
    if groups is not None:
        raise MetricInputError(f"{name} takes no groups")
    if spec.input == "rows":
        return spec.compute(_as_rows(source, name), **options)
    return spec.compute(as_accumulator(source).spectra(), **options)


def _as_rows(source: Any, name: str) -> Any:
    if isinstance(source, (SpectralAccumulator, LidarAccumulator)):
        raise MetricInputError(f"{name} needs the rows themselves, not an accumulator")
    array = _inputs.as_array(source, "the matrix")
    if array.ndim != 2:
        raise MetricInputError(f"{name} takes an (N, D) matrix, got shape {tuple(array.shape)}")
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else array


def compute_metrics(
    source: Any,
    names: Iterable[str] | None = None,
    *,
    groups: Any = None,
    **options: Any,
) -> dict[str, MetricResult]:
    """Several metrics of one source, computing each spectrum once.

    ``names`` defaults to :data:`SPECTRAL_METRIC_NAMES`, plus ``lidar`` when the source is a
    :class:`LidarAccumulator` or ``groups`` is given. Each option goes to the metrics that take
    it (``eps`` to every entropy metric, including LiDAR's); an option no selected metric takes
    is an error. Returns ``{name: MetricResult}`` in the canonical order.
    """
    grouped = isinstance(source, LidarAccumulator) or groups is not None
    if names is None:
        selected = list(SPECTRAL_METRIC_NAMES) + (list(GROUP_METRIC_NAMES) if grouped else [])
    else:
        if isinstance(names, str):
            names = [names]
        selected = [n for n in METRICS if n in set(names)]
        for name in names:
            _spec(name)
    _check_options(selected, options)
    lidar_acc = None
    if any(METRICS[n].needs_groups for n in selected) or groups is not None:
        lidar_acc = as_lidar_accumulator(source, groups)
    spectral_source = lidar_acc if lidar_acc is not None else source
    spectra = None
    results: dict[str, MetricResult] = {}
    for name in selected:
        spec = METRICS[name]
        own = {k: v for k, v in options.items() if k in spec.options}
        if spec.input == "groups":
            results[name] = spec.compute(lidar_acc, **own)
        elif spec.input == "rows":
            results[name] = spec.compute(_as_rows(source, name), **own)
        else:
            if spectra is None:
                spectra = as_accumulator(spectral_source).spectra()
            results[name] = spec.compute(spectra, **own)
    return results


def compute_metrics_many(
    sources: Sequence[Any],
    names: Iterable[str] | None = None,
    *,
    workers: int | None = None,
    **options: Any,
) -> list[dict[str, MetricResult]]:
    """:func:`compute_metrics` of each source, several at a time.

    A D x D eigensolve is tens of milliseconds of single-threaded LAPACK that releases the
    GIL, and an encoder gives one accumulator per (layer, pooling), so running the
    accumulators on parallel threads (each eigensolve on one BLAS thread) uses every core
    without the thread oversubscription of a threaded eigensolver. ``workers`` defaults to
    torch's intra-op thread count (which the command line sets to the available cores).
    The values are the same as one at a time, in the same order.
    """
    names = None if names is None else list(names)
    count = max(1, min(workers or torch.get_num_threads(), len(sources)))

    def one(source: Any) -> dict[str, MetricResult]:
        return compute_metrics(source, names, **options)

    if count == 1:
        return [one(source) for source in sources]
    # The limit is process-wide, so it is set once around the pool, not per thread.
    with single_threaded_lapack(), ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, sources))


# ---------------------------------------------------------------- float functions
def rankme(X: Any, *, eps: float = DEFAULT_EPS, centered: bool = False) -> float:
    """RankMe of an (N, D) matrix or accumulator (Garrido et al., ICML 2023, arXiv 2210.02885).

    RankMe = exp(-sum_k p_k log p_k) with p_k = s_k / sum_j s_j + eps over the singular values
    s_k of the raw matrix (``centered=True``: of the column-centred matrix, the
    ``rankme_centered`` metric). Between 1 and min(N, D); grows with N, so compare values at
    equal N. RankMe-t (Aldeneh et al., ICASSP 2025, arXiv 2409.10787) is RankMe of the
    per-utterance summed frames. NaN when there are no rows or all rows are zero.
    """
    name = "rankme_centered" if centered else "rankme"
    return compute_metric(name, X, eps=eps).value


def rankme_centered(X: Any, *, eps: float = DEFAULT_EPS) -> float:
    """RankMe of the column-centred rows: a common offset of all rows does not change it."""
    return compute_metric("rankme_centered", X, eps=eps).value


def erank_cov(X: Any, *, eps: float = DEFAULT_EPS) -> float:
    """Effective rank of the covariance eigenvalues (Roy & Vetterli, EUSIPCO 2007).

    exp-entropy of p_k = l_k / sum l + eps, l_k the covariance eigenvalues (squared singular
    values of the centred rows): the quantity the reptrix library reports as RankMe.
    """
    return compute_metric("erank_cov", X, eps=eps).value


def alpha_req(X: Any, *, fit_range: tuple[int, int] = DEFAULT_FIT_RANGE) -> float:
    """alpha-ReQ (Agrawal et al., NeurIPS 2022): power-law decay exponent of the covariance
    eigenvalues, fitted by weighted least squares (weights 1/j) over one-based ranks
    ``fit_range`` (default 6..100). NaN when fewer eigenvalues exist than the range needs; use
    :func:`compute_metric` for R^2 and the reason."""
    return compute_metric("alpha_req", X, fit_range=fit_range).value


def stable_rank(X: Any) -> float:
    """Stable rank sum l / max l of the covariance eigenvalues (Rudelson & Vershynin 2007)."""
    return compute_metric("stable_rank", X).value


def participation_ratio(X: Any) -> float:
    """Participation ratio (sum l)^2 / sum l^2 of the covariance eigenvalues."""
    return compute_metric("participation_ratio", X).value


def numerical_rank(X: Any, *, rtol: float | None = None) -> float:
    """Count of raw singular values above ``rtol`` times the largest.

    Default ``rtol = sqrt(max(N, D) * eps64)``: numpy.linalg.matrix_rank's tolerance applied to
    the eigenvalues of X^T X, the finest the float64 Gram route resolves. A float (NaN for no
    rows).
    """
    return compute_metric("numerical_rank", X, rtol=rtol).value


def lidar(
    X: Any, groups: Any = None, *, delta: float = DEFAULT_DELTA, eps: float = DEFAULT_EPS
) -> float:
    """LiDAR (Thilak et al., ICLR 2024, arXiv 2312.04000) of grouped rows.

    ``X`` is an (N, D) matrix with ``groups`` one id per row, an (n, q, D) array of n classes
    of q views (``groups`` one id per class, or None), or a :class:`LidarAccumulator`.
    exp-entropy of the eigenvalues of (S_w + delta I)^{-1/2} S_b (S_w + delta I)^{-1/2};
    see :mod:`speechrank.metrics.lidar`.
    """
    return compute_metric("lidar", X, groups=groups, delta=delta, eps=eps).value
