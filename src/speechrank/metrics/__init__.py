"""Label-free metrics of embedding matrices: pure math, no audio, no models.

Streaming accumulators (:class:`SpectralAccumulator`, :class:`LidarAccumulator`) keep float64
sufficient statistics of any number of rows in O(D^2) memory and merge by addition across
batches, shards and processes; the metrics (docs/design.md, "The metrics") are computed from them or
directly from an (N, D) matrix:

==========================  ==========================================================
``rankme``                  exp-entropy of raw singular values (Garrido et al. 2023)
``rankme_centered``         the same on column-centred rows
``erank_cov``               exp-entropy of covariance eigenvalues (Roy & Vetterli 2007)
``alpha_req``               power-law decay of covariance eigenvalues (Agrawal et al. 2022)
``stable_rank``             sum / max of covariance eigenvalues (Rudelson & Vershynin 2007)
``participation_ratio``     (sum l)^2 / sum l^2 of covariance eigenvalues
``numerical_rank``          singular values above rtol times the largest
``lidar``                   effective rank of the LDA matrix of grouped rows (Thilak et al. 2024)
``kmeans_inertia``          k-means inertia / total sum of squares, lower is better (Whetten et al.)
``davies_bouldin``          Davies-Bouldin index of those clusters, lower is better
==========================  ==========================================================

:data:`METRICS` registers each with its input (Gram state, groups or stored rows), its
direction (higher or lower is better) and how its state merges across processes.

Example:
    >>> import numpy as np
    >>> from speechrank.metrics import SpectralAccumulator, compute_metrics, rankme
    >>> X = np.random.default_rng(0).standard_normal((2000, 64)).astype(np.float32)
    >>> round(rankme(X), 1)  # close to D = 64 for isotropic rows, N >> D
    63.7
    >>> acc = SpectralAccumulator(64)
    >>> acc.update(X[:1000]); acc.update(X[1000:])
    >>> abs(compute_metrics(acc)["rankme"].value - rankme(X)) < 1e-9
    True
"""

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from speechrank.metrics.errors import AccumulatorFileError, MetricInputError, NonFiniteError
from speechrank.metrics.registry import (
    GROUP_METRIC_NAMES,
    LAYER_METRIC_NAMES,
    METRICS,
    ROW_METRIC_NAMES,
    SPECTRAL_METRIC_NAMES,
    Direction,
    Merge,
    MetricInput,
    MetricSpec,
    direction,
)
from speechrank.metrics.result import MetricResult
from speechrank.metrics.spectral import DEFAULT_EPS, DEFAULT_FIT_RANGE
from speechrank.metrics.spectrum import COVARIANCE_DDOF, Spectra

if TYPE_CHECKING:
    from speechrank.metrics.accumulator import SpectralAccumulator
    from speechrank.metrics.api import (
        alpha_req,
        compute_metric,
        compute_metrics,
        compute_metrics_many,
        erank_cov,
        lidar,
        numerical_rank,
        participation_ratio,
        rankme,
        rankme_centered,
        stable_rank,
    )
    from speechrank.metrics.lidar import DEFAULT_DELTA, LidarAccumulator

#: Names whose modules need torch, loaded on first use: the registry, the results and the
#: spectra stay importable without torch (the analysis and the report read directions).
_TORCH_MODULES = {
    "SpectralAccumulator": "accumulator", "DEFAULT_DELTA": "lidar", "LidarAccumulator": "lidar",
    **{name: "api" for name in (
        "alpha_req", "compute_metric", "compute_metrics", "compute_metrics_many", "erank_cov",
        "lidar", "numerical_rank", "participation_ratio", "rankme", "rankme_centered",
        "stable_rank")},
}


def __getattr__(name: str) -> Any:
    module = _TORCH_MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'speechrank.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"speechrank.metrics.{module}"), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """This package as a module whose function ``lidar`` is not replaced by the submodule
    of the same name when that loads (the import system sets a loaded submodule as an
    attribute of its package): ``speechrank.metrics.lidar`` stays the function, as it was
    when this package imported everything eagerly."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _TORCH_MODULES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "COVARIANCE_DDOF",
    "DEFAULT_DELTA",
    "DEFAULT_EPS",
    "DEFAULT_FIT_RANGE",
    "GROUP_METRIC_NAMES",
    "LAYER_METRIC_NAMES",
    "METRICS",
    "ROW_METRIC_NAMES",
    "SPECTRAL_METRIC_NAMES",
    "AccumulatorFileError",
    "Direction",
    "LidarAccumulator",
    "Merge",
    "MetricInput",
    "MetricInputError",
    "MetricResult",
    "MetricSpec",
    "NonFiniteError",
    "Spectra",
    "SpectralAccumulator",
    "alpha_req",
    "compute_metric",
    "compute_metrics",
    "compute_metrics_many",
    "direction",
    "erank_cov",
    "lidar",
    "numerical_rank",
    "participation_ratio",
    "rankme",
    "rankme_centered",
    "stable_rank",
]
