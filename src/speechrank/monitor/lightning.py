"""PyTorch Lightning callback: log the rank of every layer while a LightningModule trains.

::

    from speechrank.monitor import MeasureSpec, RankMonitor
    from speechrank.monitor.lightning import RankMonitorCallback

    monitor = RankMonitor(module.encoder, "fsdd:data/fsdd#split=test",
                          MeasureSpec.for_monitor(num_utterances=500))
    trainer = pl.Trainer(callbacks=[RankMonitorCallback(monitor, every_n_train_steps=500)])

Values are named as :class:`~speechrank.monitor.RankMonitor` names them (``rankme_t/layer_3``,
``collapse/layer_3`` ...). When they are measured:

- ``on_validation_epoch_end`` (default on; skipped during the sanity check): logged with
  ``pl_module.log_dict(..., on_epoch=True)``, so they reach the loggers, the progress bar if
  asked, and ``trainer.callback_metrics`` (``ModelCheckpoint(monitor="rankme_t/layer_4")``
  works);
- every ``every_n_train_steps`` optimiser steps: put in ``trainer.callback_metrics`` through
  ``pl_module.log_dict(..., logger=False)`` and written to every logger with
  ``logger.log_metrics(values, step=global_step)``. Writing to the loggers directly is
  deliberate: values logged on step from a callback only reach a logger on the steps that
  ``Trainer(log_every_n_steps=...)`` allows, and a monitor that runs every 500 steps would
  otherwise be dropped whenever the two do not line up;
- ``at_start``: once before the first step (step 0), written to the loggers only, as the
  baseline that early collapse is measured against.

With ``stop_on_collapse`` (``True`` or a :class:`~speechrank.monitor.collapse.CollapseStop`),
a measurement at which the collapse alarm asks to stop sets ``trainer.should_stop``: Lightning
ends the run after the current step (running its usual end-of-training hooks, checkpoints
included), and :attr:`RankMonitorCallback.stop_reason` says at which step and why.

Under DDP every process runs the callback at the same steps and the monitor shares the
held-out set between them (see :mod:`speechrank.monitor.core`).

Lightning is imported only when this module is: ``pip install 'speechrank[lightning]'``.
"""

from __future__ import annotations

import warnings
from typing import Any

from speechrank.monitor.collapse import CollapseStop, RankCollapseWarning
from speechrank.monitor.core import RankMonitor
from speechrank.monitor.schedule import ModelChoice, ScheduledCallback, StepSchedule

try:  # the classic package name first: it is the one speechrank's extra installs
    from pytorch_lightning import Callback
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        from lightning.pytorch import Callback
    except ImportError:
        raise ImportError(
            "speechrank.monitor.lightning needs PyTorch Lightning: "
            "pip install 'speechrank[lightning]'") from None

__all__ = ["RankMonitorCallback"]


class RankMonitorCallback(ScheduledCallback, Callback):
    """Runs a :class:`RankMonitor` from a Lightning ``Trainer`` and logs its values.

    Args:
        monitor: the monitor (built once, outside the callback).
        every_n_train_steps: also measure after every this many optimiser steps (``None``:
            only at validation).
        on_validation: measure at the end of every validation epoch.
        at_start: measure once before training starts (step 0).
        model: what to measure: ``None`` (default) the model the monitor was built with, or
            the LightningModule when the monitor has none; an attribute path of the
            LightningModule such as ``"encoder"`` or ``"model.wav2vec2"``; or a function of
            it (see :mod:`speechrank.monitor.schedule`).
        prog_bar: show the values in the progress bar too.
        stop_on_collapse: end training when the collapse alarm fires (``True``) or when a
            layer has stayed collapsed for a :class:`CollapseStop`'s ``patience`` checks;
            ``False`` (default) only logs and warns.
    """

    def __init__(self, monitor: RankMonitor, *, every_n_train_steps: int | None = None,
                 on_validation: bool = True, at_start: bool = False,
                 model: ModelChoice = None, prog_bar: bool = False,
                 stop_on_collapse: bool | CollapseStop = False) -> None:
        super().__init__()
        self.schedule = StepSchedule(monitor, every_n_steps=every_n_train_steps,
                                     at_start=at_start, model=model,
                                     stop=CollapseStop.of(stop_on_collapse))
        self.monitor = monitor
        self.on_validation = on_validation
        self.prog_bar = prog_bar

    def _measure(self, trainer: Any, pl_module: Any) -> dict[str, float]:
        values, fresh = self.schedule.measure(pl_module, int(trainer.global_step))
        if fresh and self.schedule.should_stop():
            if not trainer.should_stop and trainer.is_global_zero:
                warnings.warn(self.schedule.stop.message(self.schedule.last),  # type: ignore
                              RankCollapseWarning, stacklevel=3)
            trainer.should_stop = True
        return values

    @staticmethod
    def _to_loggers(trainer: Any, values: dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(dict(values), step=int(trainer.global_step))

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.schedule.at_start:
            self._to_loggers(trainer, self._measure(trainer, pl_module))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # With gradient accumulation several batches end on the same step: measure once.
        if not self.schedule.due(int(trainer.global_step)):
            return
        values = self._measure(trainer, pl_module)
        pl_module.log_dict(values, on_step=True, on_epoch=False, logger=False,
                           prog_bar=self.prog_bar)
        self._to_loggers(trainer, values)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not self.on_validation or trainer.sanity_checking:
            return
        values = self._measure(trainer, pl_module)
        pl_module.log_dict(values, on_step=False, on_epoch=True, prog_bar=self.prog_bar)
