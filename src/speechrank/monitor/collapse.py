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

The alarm can end training, opt-in: a :class:`CollapseStop` (given to the Lightning and Hugging
Face callbacks as ``stop_on_collapse``, and behind ``speechrank pretrain --stop-on-collapse``)
says stop once a layer has been collapsed at ``patience`` consecutive checks (default 2); a
plain loop reads
:attr:`MonitorResult.should_stop <speechrank.monitor.core.MonitorResult.should_stop>` (the
alarm fired at this check) or asks a :class:`CollapseStop` about the result.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["AlarmRule", "CollapseAlarm", "CollapseDetector", "CollapseStop",
           "RankCollapseWarning"]


class RankCollapseWarning(UserWarning):
    """A monitored layer's rank collapsed (see :mod:`speechrank.monitor.collapse`)."""


@dataclasses.dataclass(frozen=True)
class CollapseAlarm:
    """One layer that collapsed at one step.

    ``reason`` is ``below_min_rank``, ``dropped`` or ``non_finite``; ``best`` is the best value
    before this step (``None`` at the first check); ``new`` is true when the layer was not
    collapsed at the previous check; ``streak`` counts the consecutive checks, this one
    included, at which the layer has been collapsed.
    """

    step: int | None
    key: str
    layer: str
    value: float
    best: float | None
    reason: str
    new: bool = True
    streak: int = 1

    def message(self) -> str:
        at = f"step {self.step}" if self.step is not None else "this check"
        if self.reason == "non_finite":
            return f"rank collapse at {at}: {self.key} is {self.value}"
        if self.reason == "below_min_rank":
            return f"rank collapse at {at}: {self.key} = {self.value:.4g} is below the floor"
        return (f"rank collapse at {at}: {self.key} = {self.value:.4g} dropped "
                f"{1 - self.value / self.best:.0%} from its best {self.best:.4g}"
                if self.best else f"rank collapse at {at}: {self.key} = {self.value:.4g}")


@dataclasses.dataclass(frozen=True)
class AlarmRule:
    """When the monitor's collapse alarm fires, and what it watches.

    Attributes:
        min_rank: alarm when a value is below this (``None``: no floor).
        max_drop: alarm when a value is below ``(1 - max_drop) * best`` so far (``None``: no
            drop rule); in ``(0, 1]``.
        on: which metric/pooling the alarm watches, as a key prefix such as ``"rankme_t"`` or
            ``"erank_cov_mean"`` (``None``: the first measured pair; ``""``: no alarm).
        warn: issue a :class:`RankCollapseWarning` when a layer enters collapse (rank 0 only).
    """

    min_rank: float | None = 2.0
    max_drop: float | None = 0.5
    on: str | None = None
    warn: bool = True

    def detector(self) -> CollapseDetector:
        """A fresh detector of this rule."""
        return CollapseDetector(min_rank=self.min_rank, max_drop=self.max_drop)


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
        self.streak: dict[str, int] = {}

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
                self.streak[key] = self.streak.get(key, 0) + 1
                alarms.append(CollapseAlarm(step, key, layer, value, best, reason,
                                            new=key not in self.collapsed,
                                            streak=self.streak[key]))
                self.collapsed.add(key)
            else:
                self.collapsed.discard(key)
                self.streak.pop(key, None)
            if math.isfinite(value) and (best is None or value > best):
                self.best[key] = value
        return alarms


@dataclasses.dataclass(frozen=True)
class CollapseStop:
    """When the collapse alarm ends training: once a layer has been collapsed at ``patience``
    consecutive checks (1: at the first alarm). A healthy run's deep layers can lose half
    their rank early in training and recover (see the module docstring); a larger
    ``patience`` waits that out at the price of stopping a real collapse later.

    The default is 2 because, on the 12 pretraining runs of the built-in encoder in
    ``benchmarks/results/model_selection.json`` (checked every 50 steps), patience 1 stopped
    two runs at step 50 that then recovered to the default run's probe scores (BEST-RQ
    targets, five times the learning rate: a one-check dip of the deep layers), while
    patience 2 stopped only the two runs that stayed damaged (shuffled targets at step 100,
    a learning rate ramped to ten times the default at step 500) and no healthy run.

    Call it with a :class:`~speechrank.monitor.core.MonitorResult` or a list of alarms: the
    answer is whether to stop; :meth:`reasons` gives the alarms that decide it.
    """

    patience: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) \
                or self.patience < 1:
            raise ValueError(f"patience must be a positive integer, got {self.patience!r}")

    @classmethod
    def of(cls, choice: bool | CollapseStop | None) -> CollapseStop | None:
        """A callback's ``stop_on_collapse``: ``True`` is ``CollapseStop()``, ``False`` or
        ``None`` is no stop."""
        if choice is None or choice is False:
            return None
        if choice is True:
            return cls()
        if isinstance(choice, cls):
            return choice
        raise ValueError(f"stop_on_collapse must be a bool or a CollapseStop, got {choice!r}")

    def reasons(self, alarms: Iterable[CollapseAlarm] | Any) -> list[CollapseAlarm]:
        """The alarms (of a result, or given) whose layer has been collapsed long enough."""
        alarms = getattr(alarms, "alarms", alarms)
        return [alarm for alarm in alarms if alarm.streak >= self.patience]

    def __call__(self, alarms: Iterable[CollapseAlarm] | Any) -> bool:
        return bool(self.reasons(alarms))

    def message(self, alarms: Iterable[CollapseAlarm] | Any) -> str:
        """One line: why training stops."""
        chosen = self.reasons(alarms)
        if not chosen:
            return "no collapse"
        layers = ", ".join(alarm.layer for alarm in chosen)
        wait = (f" at {self.patience} consecutive checks" if self.patience > 1 else "")
        return f"stopping on rank collapse (layer {layers}{wait}): {chosen[0].message()}"
