"""The one registry of label-free metrics: what each is computed from, which way is better,
and how its state merges across processes.

Every metric is one :class:`MetricSpec` in ``_SPECS``. Besides its implementation, a metric
declares

- its input (:data:`MetricInput`): the float64 Gram state of the rows (the spectral metrics:
  every pooling and layer of ``rank`` feeds one :class:`~speechrank.metrics.SpectralAccumulator`),
  grouped rows (LiDAR), or the stored rows themselves (the cluster metrics, on the ``frames``
  pooling's rows);
- its direction (:data:`Direction`): whether a larger or a smaller value is better, which
  ``correlate``, its tables and the report read to orient values (a lower-is-better metric is
  negated before any statistic), so registering a metric is all it takes;
- how its state merges across processes (:data:`Merge`): added (exact, and done under
  torchrun) or gathered (declared; ``rank`` refuses those metrics under torchrun until then).

This module needs no torch, so the analysis and the report read directions without loading
it. Adding a metric: a module with its ``*_result`` function (on
:class:`~speechrank.metrics.spectrum.Spectra` for a ``gram`` metric) and one line here
(docs/design.md, "Adding a metric").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal

from speechrank.metrics import spectral
from speechrank.metrics.cluster import cluster_metrics
from speechrank.metrics.result import MetricResult

__all__ = ["GROUP_METRIC_NAMES", "LAYER_METRIC_NAMES", "METRICS", "ROW_METRIC_NAMES",
           "SPECTRAL_METRIC_NAMES", "Direction", "Merge", "MetricInput", "MetricSpec",
           "direction"]

#: What a metric is computed from: ``gram`` the float64 Gram state of the rows (a
#: :class:`SpectralAccumulator`: X^T X, the row sum and the count), ``groups`` rows with group
#: ids (a :class:`LidarAccumulator`), ``rows`` the stored rows themselves (a seeded selection
#: kept in memory, as :class:`~speechrank.metrics.cluster.ClusterRows` keeps).
MetricInput = Literal["gram", "groups", "rows"]
#: Whether a larger value is better (``higher``: a richer, less collapsed representation for
#: the rank metrics) or a smaller one (``lower``: tighter clusters, faster spectral decay).
Direction = Literal["higher", "lower"]
#: How the states of several processes (torchrun shards) become one: ``sum`` adds them (the
#: Gram state, the per-group sums: exact, and what ``speechrank.distributed`` all-reduces);
#: ``gather`` concatenates the stored rows and keeps the same seeded selection as one
#: process would (declared; not done yet, so ``rank`` refuses these metrics under torchrun).
Merge = Literal["sum", "gather"]


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """A registered metric.

    Attributes:
        name: the metric's name in rows and on the command line.
        compute: its implementation: ``compute(Spectra, **options)`` for ``gram``,
            ``compute(LidarAccumulator, **options)`` for ``groups``, ``compute(rows,
            **options)`` for ``rows``; returns a :class:`MetricResult`.
        options: the keyword options ``compute`` takes.
        input: what it is computed from (:data:`MetricInput`).
        direction: whether higher or lower is better (:data:`Direction`).
        merge: how its state merges across processes (:data:`Merge`).
        summary: one line for help texts.
    """

    name: str
    compute: Callable[..., MetricResult]
    options: tuple[str, ...]
    input: MetricInput
    direction: Direction
    merge: Merge
    summary: str

    @property
    def needs_groups(self) -> bool:
        return self.input == "groups"

    @property
    def orientation(self) -> int:
        """+1 when higher is better, -1 when lower is (the sign ``correlate`` applies)."""
        return 1 if self.direction == "higher" else -1


def _cluster(name: str) -> Callable[..., MetricResult]:
    def compute(rows: Any, **options: Any) -> MetricResult:
        return cluster_metrics(rows, [name], **options)[name]

    compute.__name__ = f"{name}_result"
    return compute


def _lidar_result(acc: Any, **options: Any) -> MetricResult:
    from speechrank.metrics.lidar import lidar_result  # torch: loaded when LiDAR is computed

    return lidar_result(acc, **options)


_CLUSTER_OPTIONS = ("n_clusters", "seed", "batch_size", "threads")

_SPECS = (
    MetricSpec("rankme", spectral.rankme_result, ("eps",), "gram", "higher", "sum",
               "RankMe: exp-entropy of the raw singular values (Garrido et al. 2023)"),
    MetricSpec("rankme_centered", spectral.rankme_centered_result, ("eps",), "gram", "higher",
               "sum", "RankMe of the column-centred rows"),
    MetricSpec("erank_cov", spectral.erank_cov_result, ("eps",), "gram", "higher", "sum",
               "effective rank of the covariance eigenvalues (reptrix's 'RankMe')"),
    MetricSpec("alpha_req", spectral.alpha_req_result, ("fit_range",), "gram", "lower", "sum",
               "power-law decay exponent of the covariance eigenvalues (Agrawal et al. 2022; "
               "a slower decay, a smaller alpha, is the richer representation)"),
    MetricSpec("stable_rank", spectral.stable_rank_result, (), "gram", "higher", "sum",
               "sum / max of the covariance eigenvalues"),
    MetricSpec("participation_ratio", spectral.participation_ratio_result, (), "gram",
               "higher", "sum", "(sum l)^2 / sum l^2 of the covariance eigenvalues"),
    MetricSpec("numerical_rank", spectral.numerical_rank_result, ("rtol",), "gram", "higher", "sum",
               "count of singular values above rtol times the largest"),
    MetricSpec("lidar", _lidar_result, ("delta", "eps"), "groups", "higher", "sum",
               "LiDAR: effective rank of the LDA matrix of grouped rows (Thilak et al. 2024)"),
    MetricSpec("kmeans_inertia", _cluster("kmeans_inertia"), _CLUSTER_OPTIONS, "rows", "lower",
               "gather", "k-means inertia over the total sum of squares (Whetten et al. 2025; "
               "tighter clusters are better)"),
    MetricSpec("davies_bouldin", _cluster("davies_bouldin"), _CLUSTER_OPTIONS, "rows", "lower",
               "gather", "Davies-Bouldin index of the k-means clusters (Whetten et al. 2025; "
               "better separated clusters are better)"),
)

#: Every metric by name, in the canonical order (the spectral ones, ``lidar``, the cluster
#: ones).
METRICS: Mapping[str, MetricSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
#: The metrics that need only the rows' spectrum (the Gram state), in the canonical order.
SPECTRAL_METRIC_NAMES: tuple[str, ...] = tuple(s.name for s in _SPECS if s.input == "gram")
#: Metrics that need group ids (surrogate classes).
GROUP_METRIC_NAMES: tuple[str, ...] = tuple(s.name for s in _SPECS if s.input == "groups")
#: Metrics of the stored rows themselves (``rank`` keeps the ``frames`` pooling's rows).
ROW_METRIC_NAMES: tuple[str, ...] = tuple(s.name for s in _SPECS if s.input == "rows")
#: The metrics ``rank``, the sweep and the monitor measure per layer: the spectral ones and,
#: opt in, the row ones.
LAYER_METRIC_NAMES: tuple[str, ...] = SPECTRAL_METRIC_NAMES + ROW_METRIC_NAMES


def direction(name: str) -> Direction | None:
    """Whether higher or lower is better for the metric ``name`` (``None``: not a metric of
    the registry, e.g. a probe score)."""
    spec = METRICS.get(name)
    return spec.direction if spec is not None else None
