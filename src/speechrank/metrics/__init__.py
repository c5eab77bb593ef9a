"""Label-free metrics of embedding matrices: pure math, no audio, no models.

Streaming accumulators (:class:`SpectralAccumulator`, :class:`LidarAccumulator`) keep float64
sufficient statistics of any number of rows in O(D^2) memory and merge by addition across
batches, shards and processes; the metrics of DESIGN.md section 1 are computed from them or
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
==========================  ==========================================================

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

from speechrank.metrics.accumulator import SpectralAccumulator
from speechrank.metrics.api import (
    GROUP_METRIC_NAMES,
    METRICS,
    SPECTRAL_METRIC_NAMES,
    MetricSpec,
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
from speechrank.metrics.errors import AccumulatorFileError, MetricInputError, NonFiniteError
from speechrank.metrics.lidar import DEFAULT_DELTA, LidarAccumulator
from speechrank.metrics.result import MetricResult
from speechrank.metrics.spectral import DEFAULT_EPS, DEFAULT_FIT_RANGE
from speechrank.metrics.spectrum import COVARIANCE_DDOF, Spectra

__all__ = [
    "COVARIANCE_DDOF",
    "DEFAULT_DELTA",
    "DEFAULT_EPS",
    "DEFAULT_FIT_RANGE",
    "GROUP_METRIC_NAMES",
    "METRICS",
    "SPECTRAL_METRIC_NAMES",
    "AccumulatorFileError",
    "LidarAccumulator",
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
    "erank_cov",
    "lidar",
    "numerical_rank",
    "participation_ratio",
    "rankme",
    "rankme_centered",
    "stable_rank",
]
