"""When a framework callback measures, shared by the Lightning and Hugging Face callbacks.

Both callbacks (:mod:`speechrank.monitor.lightning`, :mod:`speechrank.monitor.hf`) decide the
same things the same way here, so that each argument has one meaning:

- ``every_n_steps``: measure after every this many optimiser steps (never at step 0: that is
  ``at_start``'s job);
- one measurement per step: a second request at the step just measured (an evaluation right
  after a scheduled step, several accumulated batches ending on one step) reuses the values;
- ``stop``: a :class:`~speechrank.monitor.collapse.CollapseStop` (``stop_on_collapse``) asks
  each new measurement whether the collapse alarm should end training (:meth:`should_stop`);
  ``stop_reason`` keeps the step and the reason of the first that said yes;
- ``model``: what to measure. ``None``: the model the monitor was built with, or, for a monitor
  built without one, the model the framework hands the callback (the LightningModule, the
  Trainer's model); a string: an attribute path of the framework's model (``"encoder"``,
  ``"model.wav2vec2"``); a callable: a function of it.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any

from speechrank.monitor.collapse import CollapseStop
from speechrank.monitor.core import MonitorResult, RankMonitor

__all__ = ["ModelChoice", "ScheduledCallback", "StepSchedule"]

ModelChoice = str | Callable[[Any], Any] | None


@dataclasses.dataclass
class StepSchedule:
    """The measuring schedule and record of one callback (see the module docstring)."""

    monitor: RankMonitor
    every_n_steps: int | None = None
    at_start: bool = False
    model: ModelChoice = None
    stop: CollapseStop | None = None
    history: list[tuple[int, dict[str, float]]] = dataclasses.field(default_factory=list)
    #: the newest measurement's full result (rows and alarms)
    last: MonitorResult | None = None
    #: ``(step, message)`` of the measurement at which ``stop`` first said stop
    stop_reason: tuple[int, str] | None = None

    def __post_init__(self) -> None:
        n = self.every_n_steps
        if n is not None and (isinstance(n, bool) or n < 1):
            raise ValueError(f"every_n_steps must be positive, got {n}")

    def due(self, step: int) -> bool:
        """Whether ``step`` is a scheduled step not measured yet."""
        n = self.every_n_steps
        return bool(n) and step > 0 and step % n == 0 and not self.measured_at(step)

    def measured_at(self, step: int) -> bool:
        return bool(self.history) and self.history[-1][0] == step

    def target(self, framework_model: Any) -> Any:
        """What to measure, given the model the framework hands the callback."""
        if self.model is None:
            return None if self.monitor.has_model else framework_model
        if isinstance(self.model, str):
            return operator.attrgetter(self.model)(framework_model)
        return self.model(framework_model)

    def measure(self, framework_model: Any, step: int) -> tuple[dict[str, float], bool]:
        """The values at ``step`` and whether they are new (``False``: reused)."""
        if self.measured_at(step):
            return dict(self.history[-1][1]), False
        result = self.monitor.measure(self.target(framework_model), step)
        self.last = result
        self.history.append((step, dict(result.values)))
        if self.stop_reason is None and self.should_stop():
            self.stop_reason = (step, self.stop.message(result))  # type: ignore[union-attr]
        return dict(result.values), True

    def should_stop(self) -> bool:
        """Whether the newest measurement asks training to stop (never without ``stop``)."""
        return self.stop is not None and self.last is not None and self.stop(self.last)


class ScheduledCallback:
    """What every training-loop callback measuring through a :class:`StepSchedule` shows
    (the Hugging Face and the Lightning callback)."""

    schedule: StepSchedule

    @property
    def history(self) -> list[tuple[int, dict[str, float]]]:
        """``(step, values)`` of every measurement."""
        return self.schedule.history

    @property
    def stop_reason(self) -> tuple[int, str] | None:
        """``(step, reason)`` of the measurement that stopped training (``None``: none)."""
        return self.schedule.stop_reason
