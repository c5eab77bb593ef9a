"""The one measuring pipeline of ``rank``, a sweep's rank units and the training monitor.

Whoever reads the audio, the label-free metrics are made the same way (docs/design.md, "From
audio to rows"):

1. :func:`plan_measure` applies the spec's protocol (:mod:`speechrank.protocols`), resolves
   the poolings and metrics, splits the metrics by their declared input (``gram`` or stored
   ``rows``, :data:`speechrank.metrics.METRICS`) and refuses what cannot be measured (a
   cluster metric without the ``frames`` pooling);
2. :meth:`MeasurePlan.check_processes` refuses, when the pass is split across processes, the
   metrics whose state is not merged by addition (each metric declares its merge), and
   :meth:`MeasurePlan.convergence_in` turns the convergence record off there (its prefix bins
   are not merged either);
3. :func:`frame_budget` and :func:`new_accumulators` build one accumulator per (layer,
   pooling) with the ``frames`` pooling's water-filling quota;
4. :func:`measure_rows` turns the accumulators into rows: the Gram metrics
   (:func:`~speechrank.accumulate.metric_rows`), their convergence and dominance records,
   then the metrics of stored rows (:func:`~speechrank.accumulate.cluster_metric_rows`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

from speechrank.accumulate import (
    LayerAccumulators,
    RowLabels,
    attach_convergence,
    attach_dominance,
    cluster_metric_rows,
    frame_quotas,
    metric_rows,
)
from speechrank.errors import SpeechrankError
from speechrank.extract import PlannedUtterance
from speechrank.metrics import METRICS, SPECTRAL_METRIC_NAMES
from speechrank.options import POOLINGS
from speechrank.protocols import apply_protocol
from speechrank.results import ResultRow
from speechrank.selection import parse_layers
from speechrank.spec import DEFAULT_SPEC, MeasureSpec

__all__ = ["FrameBudget", "MeasurePlan", "Measured", "frame_budget", "measure_rows",
           "new_accumulators", "plan_measure"]


@dataclasses.dataclass(frozen=True)
class MeasurePlan:
    """A spec with its protocol applied and its choices resolved.

    Attributes:
        spec: the spec after its protocol (what is measured).
        protocol: the protocol's record (``None`` without one).
        poolings, metrics: the resolved choices, in the order given.
        spectral: the metrics of the Gram state; ``cluster``: the metrics of stored rows.
    """

    spec: MeasureSpec
    protocol: dict[str, Any] | None
    poolings: tuple[str, ...]
    metrics: tuple[str, ...]
    spectral: tuple[str, ...]
    cluster: tuple[str, ...]

    def layers_of(self, available: Sequence[str]) -> list[str]:
        """The spec's layers among an encoder's ``available`` layer names."""
        return parse_layers(self.spec.layers, available)

    def convergence_in(self, processes: int) -> bool:
        """Whether the convergence record is made: only in one process (the prefix bins are
        not merged across processes)."""
        return self.spec.convergence and processes == 1

    def check_processes(self, processes: int, hint: str) -> None:
        """Refuse, for a pass split over ``processes``, every metric whose state is not merged
        by addition (``hint`` says what to do instead)."""
        if processes > 1:
            unmerged = [m for m in self.metrics if METRICS[m].merge != "sum"]
            if unmerged:
                raise SpeechrankError(f"{', '.join(unmerged)} cannot be measured across "
                                      f"processes yet (only Gram states are summed); {hint}")


def plan_measure(spec: MeasureSpec, defaults: MeasureSpec = DEFAULT_SPEC) -> MeasurePlan:
    """The plan of ``spec``: its protocol applied over ``defaults`` (the caller's own, see
    :func:`speechrank.protocols.apply_protocol`), ``None`` choices resolved (every pooling,
    every Gram metric) and the metrics split by input."""
    spec, record = apply_protocol(spec, defaults)
    poolings = spec.poolings or POOLINGS
    metrics = spec.metrics or SPECTRAL_METRIC_NAMES
    cluster = tuple(m for m in metrics if METRICS[m].input == "rows")
    spectral = tuple(m for m in metrics if METRICS[m].input == "gram")
    if cluster and "frames" not in poolings:
        raise SpeechrankError(f"{', '.join(cluster)} cluster(s) the frames pooling's rows; "
                              "add frames to the poolings (--pooling)")
    return MeasurePlan(spec=spec, protocol=record, poolings=tuple(poolings),
                       metrics=tuple(metrics), spectral=spectral, cluster=cluster)


@dataclasses.dataclass(frozen=True)
class FrameBudget:
    """The ``frames`` pooling's row cap and each utterance's share of it (by uid)."""

    cap: int
    quota: Mapping[str, int]


def frame_budget(planned: Sequence[PlannedUtterance], max_frames: int | None) -> FrameBudget:
    """Split ``max_frames`` (``None``: every frame) across ``planned`` by water-filling
    (:func:`~speechrank.accumulate.frame_quotas`)."""
    counts = [p.num_frames for p in planned]
    cap = sum(counts) if max_frames is None else max_frames
    quotas = frame_quotas(counts, cap)
    return FrameBudget(cap, {p.utterance.uid: q for p, q in zip(planned, quotas, strict=True)})


def new_accumulators(plan: MeasurePlan, layer_dims: Mapping[str, int], budget: FrameBudget,
                     processes: int = 1) -> LayerAccumulators:
    """Empty accumulators for every layer of ``layer_dims`` and pooling of ``plan``."""
    spec = plan.spec
    return LayerAccumulators(
        dict(layer_dims), list(plan.poolings), frame_quota=dict(budget.quota), seed=spec.seed,
        cluster_rows=(spec.cluster_max_rows or budget.cap) if plan.cluster else None,
        convergence=plan.convergence_in(processes))


@dataclasses.dataclass
class Measured:
    """The rows of one measurement, the dominance record per layer and pooling, and the time
    the metrics of stored rows took."""

    rows: list[ResultRow]
    dominance: dict[str, dict[str, Any]]
    cluster_seconds: float


def measure_rows(accumulators: LayerAccumulators, plan: MeasurePlan, labels: RowLabels
                 ) -> Measured:
    """Every metric of ``plan`` from ``accumulators`` as tidy rows labelled by ``labels``."""
    rows = metric_rows(accumulators, plan.spectral, labels) if plan.spectral else []
    rows = attach_convergence(rows, accumulators, plan.spectral)
    dominance: dict[str, dict[str, Any]] = {}
    if plan.spec.dominance:
        rows, dominance = attach_dominance(rows, accumulators)
    started = time.perf_counter()
    rows += cluster_metric_rows(accumulators, plan.cluster, labels,
                                n_clusters=plan.spec.n_clusters, seed=plan.spec.seed)
    return Measured(rows, dominance, time.perf_counter() - started)
