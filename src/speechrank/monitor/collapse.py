"""The collapse alarm: a layer whose rank falls too low, or too far from its best.

Dimensional collapse (the embeddings of a self-supervised model spanning only a few directions)
is what RankMe was made to see (Garrido et al., ICML 2023, arXiv 2210.02885): a collapsed layer
has a RankMe near 1. In speech SSL training the deep layers' rank can also fall sharply early in
training and then recover (Aldeneh et al., ICASSP 2025, arXiv 2409.10787; in early runs of the
built-in BEST-RQ encoder, layer 4 went from about 145 to 40-55 within two minutes). So there are
two rules, each optional:

- ``min_rank``: the value is below an absolute floor (default 2: at most about two effective
  directions left);
- ``max_drop``: the value is more than this fraction below the best value the same key has
  had so far in this monitor (default 0.5: it lost half of its rank).

A value that is not finite (NaN features, say) always raises the alarm. Every check that finds
a layer collapsed gives a :class:`CollapseAlarm` (and a ``collapse/layer_<i>`` flag of 1.0 in
the monitor's values); only a layer that *enters* the collapsed state, at its first collapsed
check or after a healthy one, also gives a :class:`RankCollapseWarning` (``alarm.new``), so a
layer that stays collapsed for a thousand checks warns once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

__all__ = ["CollapseAlarm", "CollapseDetector", "RankCollapseWarning"]


class RankCollapseWarning(UserWarning):
    """A monitored layer's rank collapsed (see :mod:`speechrank.monitor.collapse`)."""


@dataclasses.dataclass(frozen=True)
class CollapseAlarm:
    """One layer that collapsed at one step.

    ``reason`` is ``below_min_rank``, ``dropped`` or ``non_finite``; ``best`` is the best value
    before this step (``None`` at the first check); ``new`` is true when the layer was not
    collapsed at the previous check.
    """

    step: int | None
    key: str
    layer: str
    value: float
    best: float | None
    reason: str
    new: bool = True

    def message(self) -> str:
        at = f"step {self.step}" if self.step is not None else "this check"
        if self.reason == "non_finite":
            return f"rank collapse at {at}: {self.key} is {self.value}"
        if self.reason == "below_min_rank":
            return f"rank collapse at {at}: {self.key} = {self.value:.4g} is below the floor"
        return (f"rank collapse at {at}: {self.key} = {self.value:.4g} dropped "
                f"{1 - self.value / self.best:.0%} from its best {self.best:.4g}"
                if self.best else f"rank collapse at {at}: {self.key} = {self.value:.4g}")


class CollapseDetector:
    """Checks one value per layer against a floor and against its best so far.

    Args:
        min_rank: alarm when a value is below this (``None``: no floor).
        max_drop: alarm when a value is below ``(1 - max_drop) * best`` (``None``: no drop
            rule); must be in ``(0, 1]``.
    """

    def __init__(self, min_rank: float | None = 2.0, max_drop: float | None = 0.5) -> None:
        if max_drop is not None and not 0.0 < max_drop <= 1.0:
            raise ValueError(f"max_drop must be in (0, 1], got {max_drop}")
        self.min_rank = min_rank
        self.max_drop = max_drop
        self.best: dict[str, float] = {}
        self.collapsed: set[str] = set()

    def check(self, step: int | None, values: Mapping[str, tuple[str, float]]
              ) -> list[CollapseAlarm]:
        """Check ``{key: (layer, value)}``; returns the alarms and updates the best values."""
        alarms: list[CollapseAlarm] = []
        for key, (layer, value) in values.items():
            best = self.best.get(key)
            reason = None
            if not math.isfinite(value):
                reason = "non_finite"
            elif self.min_rank is not None and value < self.min_rank:
                reason = "below_min_rank"
            elif (self.max_drop is not None and best is not None
                  and value < (1.0 - self.max_drop) * best):
                reason = "dropped"
            if reason is not None:
                alarms.append(CollapseAlarm(step, key, layer, value, best, reason,
                                            new=key not in self.collapsed))
                self.collapsed.add(key)
            else:
                self.collapsed.discard(key)
            if math.isfinite(value) and (best is None or value > best):
                self.best[key] = value
        return alarms
