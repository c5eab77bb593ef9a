"""Hugging Face ``Trainer`` callback: log the rank of every layer while a model trains.

::

    from speechrank.monitor import MeasureSpec, RankMonitor
    from speechrank.monitor.hf import RankMonitorTrainerCallback

    monitor = RankMonitor(model, "fsdd:data/fsdd#split=test",
                          MeasureSpec.for_monitor(num_utterances=500))
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collate)
    RankMonitorTrainerCallback(monitor, every_n_steps=500).attach(trainer)
    trainer.train()

Values are named as :class:`~speechrank.monitor.RankMonitor` names them (``rankme_t/layer_3``,
``collapse/layer_3`` ...) and are measured after every ``every_n_steps`` optimiser steps, after
each evaluation (``on_evaluate``, default on) and, if asked, at each checkpoint save
(``on_save``). A model with a head (``Wav2Vec2ForPreTraining``, ``HubertForCTC``) is measured
through its base model.

With ``stop_on_collapse`` (``True`` or a :class:`~speechrank.monitor.collapse.CollapseStop`),
a measurement at which the collapse alarm asks to stop sets ``control.should_training_stop``:
the Trainer ends the run after the current step, and
:attr:`RankMonitorTrainerCallback.stop_reason` says at which step and why.

Where the values go: a ``TrainerCallback`` is not given the trainer, so

- once :meth:`RankMonitorTrainerCallback.attach` has given it the trainer, the values go
  through ``trainer.log``: into ``trainer.state.log_history`` and to every reporting
  integration (TensorBoard, W&B, ...), like the loss;
- without it they are appended to ``state.log_history`` (with ``step``) and kept in
  :attr:`RankMonitorTrainerCallback.history`, but the reporting integrations, which run before
  user callbacks, do not see them; a warning says so once.

The Trainer needs ``accelerate``; transformers is imported only when this module is.
"""

from __future__ import annotations

import warnings
from typing import Any

from transformers import TrainerCallback

from speechrank.monitor.collapse import CollapseStop, RankCollapseWarning
from speechrank.monitor.core import RankMonitor
from speechrank.monitor.schedule import ModelChoice, ScheduledCallback, StepSchedule

__all__ = ["RankMonitorTrainerCallback"]


class RankMonitorTrainerCallback(ScheduledCallback, TrainerCallback):
    """Runs a :class:`RankMonitor` from a Hugging Face ``Trainer`` and logs its values.

    Args:
        monitor: the monitor (built once, outside the callback).
        every_n_steps: measure after every this many optimiser steps (``None``: never on
            steps).
        on_evaluate: measure after every evaluation.
        on_save: measure at every checkpoint save.
        at_start: measure once when training begins (step 0).
        model: what to measure: ``None`` (default) the model the monitor was built with, or
            the model the Trainer hands its callbacks when the monitor has none; an attribute
            path of the Trainer's model such as ``"wav2vec2"``; or a function of it (see
            :mod:`speechrank.monitor.schedule`).
        trainer: the Trainer to log through (or call :meth:`attach` later).
        stop_on_collapse: end training when the collapse alarm fires (``True``) or when a
            layer has stayed collapsed for a :class:`CollapseStop`'s ``patience`` checks;
            ``False`` (default) only logs and warns.
    """

    def __init__(self, monitor: RankMonitor, *, every_n_steps: int | None = None,
                 on_evaluate: bool = True, on_save: bool = False, at_start: bool = False,
                 model: ModelChoice = None, trainer: Any = None,
                 stop_on_collapse: bool | CollapseStop = False) -> None:
        self.schedule = StepSchedule(monitor, every_n_steps=every_n_steps, at_start=at_start,
                                     model=model, stop=CollapseStop.of(stop_on_collapse))
        self.monitor = monitor
        self.measure_on_evaluate = on_evaluate
        self.measure_on_save = on_save
        self.trainer = trainer
        self._warned = False

    def attach(self, trainer: Any) -> RankMonitorTrainerCallback:
        """Log through ``trainer`` and add this callback to it (once); returns self."""
        self.trainer = trainer
        if all(cb is not self for cb in trainer.callback_handler.callbacks):
            trainer.add_callback(self)
        return self

    def _measure(self, state: Any, model: Any, control: Any = None) -> None:
        step = int(state.global_step)
        values, fresh = self.schedule.measure(model, step)
        if not fresh:
            return  # measured at this step already (say, on_step_end then on_evaluate)
        if self.trainer is not None:
            # trainer.log clears control.should_log: keep the Trainer's own plan to log the loss
            # at this step (on_step_end runs before the Trainer acts on it).
            planned = None if control is None else control.should_log
            self.trainer.log(dict(values))
            if planned is not None:
                control.should_log = planned
                self.trainer.control.should_log = planned
        else:
            state.log_history.append({**values, "step": step})
        if self.schedule.should_stop():
            self._stop(state, control)
        if self.trainer is not None:
            return
        if not self._warned and state.is_world_process_zero:
            self._warned = True
            warnings.warn("RankMonitorTrainerCallback has no trainer: its values are only in "
                          "state.log_history; call .attach(trainer) to send them to the "
                          "reporting integrations too", stacklevel=3)

    def _stop(self, state: Any, control: Any) -> None:
        already = control is not None and control.should_training_stop
        if not already and state.is_world_process_zero:
            warnings.warn(self.schedule.stop.message(self.schedule.last),  # type: ignore
                          RankCollapseWarning, stacklevel=4)
        # the Trainer acts on its own control object, which trainer.log may have replaced
        for target in (control, getattr(self.trainer, "control", None)):
            if target is not None:
                target.should_training_stop = True

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       **kwargs: Any) -> None:
        if self.schedule.at_start:
            self._measure(state, model, control)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None,
                    **kwargs: Any) -> None:
        if self.schedule.due(int(state.global_step)):
            self._measure(state, model, control)

    def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None,
                    **kwargs: Any) -> None:
        if self.measure_on_evaluate:
            self._measure(state, model, control)

    def on_save(self, args: Any, state: Any, control: Any, model: Any = None,
                **kwargs: Any) -> None:
        if self.measure_on_save:
            self._measure(state, model, control)
