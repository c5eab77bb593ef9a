"""The value of one metric together with the conventions that produced it."""

from __future__ import annotations

import dataclasses
import math
from typing import Any


@dataclasses.dataclass(frozen=True)
class MetricResult:
    """One label-free metric value.

    Attributes:
        name: the metric's registry name (``rankme``, ``alpha_req``, ``lidar``, ...).
        value: the value; NaN when the input cannot define it (``extras["reason"]`` says why).
        conventions: everything that produced the value and must travel with it into a
            result row: eps, centring, spectrum, fit range, rtol, delta, ``n_rows``, ``dim``,
            solver, ... (plain JSON types).
        extras: by-products (alpha-ReQ's R^2 and intercept, LiDAR's top eigenvalue, ...) and
            ``reason`` for a NaN value.
    """

    name: str
    value: float
    conventions: dict[str, Any]
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.value)

    @property
    def is_defined(self) -> bool:
        """False when ``value`` is NaN."""
        return not math.isnan(self.value)

    @property
    def reason(self) -> str | None:
        """Why the value is NaN (None when it is defined)."""
        return self.extras.get("reason")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN stays a float)."""
        return dataclasses.asdict(self)
