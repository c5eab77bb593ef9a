"""The key of one analysed pair: a label-free metric series against a probe score series."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["Choice", "MetricSide", "ModelSide", "PairKey", "Record", "Regret", "ScoreSide",
           "mean_and_se", "plain_dict"]


@dataclasses.dataclass(frozen=True)
class Record:
    """A frozen analysis record that turns into a JSON-ready dict."""

    def to_dict(self) -> dict[str, Any]:
        return plain_dict(self)


@dataclasses.dataclass(frozen=True)
class ModelSide(Record):
    """The model (training run) a record is about."""

    model: str


@dataclasses.dataclass(frozen=True)
class MetricSide(Record):
    """Which label-free metric series a record is about."""

    metric: str
    pooling: str
    metric_dataset: str
    metric_variant: str
    metric_orientation: int


@dataclasses.dataclass(frozen=True)
class ScoreSide(Record):
    """Which probe score series a record is about."""

    task: str
    score: str
    domain: str
    probe_dataset: str
    probe_pooling: str
    split: str
    score_variant: str
    score_orientation: int


@dataclasses.dataclass(frozen=True)
class Regret(Record):
    """What choosing by a label-free signal cost: the picked and the best candidate's score,
    the regret (best minus picked score, and that over the best minus the worst), and why
    it is undefined when it is."""

    picked_score: float
    best_score: float
    regret: float
    regret_fraction: float
    reason: str


@dataclasses.dataclass(frozen=True)
class _Picked(Record):
    picked: str
    best: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Choice(Regret, _Picked):
    """The candidate a label-free signal picked, the best ones, and the :class:`Regret`."""


# The bases are listed last-first: a dataclass takes the fields of its bases in reverse
# method resolution order, so these read model, metric, score.
@dataclasses.dataclass(frozen=True)
class PairKey(ScoreSide, MetricSide, ModelSide):
    """One label-free metric series against one probe score series."""

    @property
    def pair(self) -> PairKey:
        """The bare key of this record (drops the record's own fields)."""
        return PairKey(**{f.name: getattr(self, f.name) for f in dataclasses.fields(PairKey)})


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """The mean of ``values`` and its standard error (NaN when there are too few)."""
    mean = statistics.fmean(values) if values else math.nan
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, se


def plain_dict(record: Any) -> dict[str, Any]:
    """A record's fields, tuples as lists and every NaN as :data:`math.nan` (one object, so
    that two dicts of the same numbers compare equal)."""
    out = {}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, float) and value != value:
            value = math.nan
        out[field.name] = value
    return out
