"""The key of one analysed pair: a label-free metric series against a probe score series."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["PairKey", "plain_dict"]


@dataclasses.dataclass(frozen=True)
class PairKey:
    """One label-free metric series against one probe score series."""

    model: str
    metric: str
    pooling: str
    metric_dataset: str
    metric_variant: str
    metric_orientation: int
    task: str
    score: str
    domain: str
    probe_dataset: str
    probe_pooling: str
    split: str
    score_variant: str
    score_orientation: int

    @property
    def pair(self) -> PairKey:
        """The bare key of this record (drops the record's own fields)."""
        return PairKey(**{f.name: getattr(self, f.name) for f in dataclasses.fields(PairKey)})

    def to_dict(self) -> dict[str, Any]:
        return plain_dict(self)


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
