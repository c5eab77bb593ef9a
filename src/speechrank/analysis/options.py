"""The options of an analysis: which series, which probe split, the bootstrap, orientations."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from speechrank.errors import SpeechrankError

__all__ = ["AnalysisOptions"]


def _names(value: Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class AnalysisOptions:
    """What :func:`~speechrank.analysis.correlate` and
    :func:`~speechrank.analysis.across_runs.compare_runs` analyse, and how.

    Attributes:
        metrics: label-free metric names to analyse (``None``: all in the source).
        tasks: probe task names to analyse (``None``: all).
        poolings: poolings of the label-free metrics (``None``: all).
        probe_split: the probe split whose scores are used.
        n_bootstrap: bootstrap resamples per correlation (0: no intervals).
        seed: seeds the bootstrap; every correlation draws from its own stream derived from
            the seed and its own values, so results depend neither on what else is analysed
            nor on names or paths.
        confidence: level of the percentile bootstrap interval.
        orientations: +1/-1 overrides by metric or score name (default: each metric's
            direction in the metric registry, and the known lower-is-better scores).
    """

    metrics: Sequence[str] | None = None
    tasks: Sequence[str] | None = None
    poolings: Sequence[str] | None = None
    probe_split: str = "test"
    n_bootstrap: int = 1000
    seed: int = 0
    confidence: float = 0.95
    orientations: Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        if self.n_bootstrap < 0:
            raise SpeechrankError(f"n_bootstrap must be >= 0, not {self.n_bootstrap}")
        if not 0.0 < self.confidence < 1.0:
            raise SpeechrankError(
                f"confidence must be between 0 and 1, not {self.confidence}")
        for name in ("metrics", "tasks", "poolings"):
            object.__setattr__(self, name, _names(getattr(self, name)))
        if self.orientations is not None:
            object.__setattr__(self, "orientations", dict(self.orientations))

    def selection(self) -> dict[str, Any]:
        """The keywords of :func:`~speechrank.analysis.series.collect_series`."""
        return {"probe_split": self.probe_split, "metrics": self.metrics, "tasks": self.tasks,
                "poolings": self.poolings}

    def bootstrap(self) -> dict[str, Any]:
        """The bootstrap's keywords (resamples, seed, confidence)."""
        return {"n_bootstrap": self.n_bootstrap, "seed": self.seed,
                "confidence": self.confidence}
