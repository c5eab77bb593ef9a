"""The monitor of ``speechrank pretrain``: RankMe-t of every layer at every checkpoint.

:func:`speechrank.pretrain.pretrain` builds its model itself and calls ``monitor(encoder,
step)`` after each checkpoint save, so this monitor is built without a model and prepares its
held-out set at the first call (step 0). Its rows are named the way ``speechrank sweep`` names
the same checkpoints (``model`` = the run directory, ``checkpoint`` = ``checkpoint-000100``),
so with a store the report shows them beside the sweep's probe results.

With ``stop_on_collapse`` the collapse alarm ends the run at the checkpoint where it fires
(``speechrank pretrain --stop-on-collapse``): that checkpoint is saved and resumable, and the
summary says ``stopped_by="monitor"`` with the alarm's reason.
"""

from __future__ import annotations

from typing import Any

from speechrank.errors import SpeechrankError
from speechrank.monitor.collapse import CollapseStop
from speechrank.monitor.core import MonitorSetup, RankMonitor
from speechrank.progress import ProgressArg, as_progress
from speechrank.spec import MONITOR_SPEC, MeasureSpec

__all__ = ["PRETRAIN_MAX_AUDIO_SECONDS", "PRETRAIN_MAX_UTTERANCES", "PRETRAIN_SPEC",
           "default_heldout",
           "pretrain_monitor", "pretrain_with_monitor"]

#: Held-out budget during pretraining: the monitor's forward passes count against the run's
#: wall-time budget, so it is smaller than the stand-alone monitor's.
PRETRAIN_MAX_UTTERANCES = 500
PRETRAIN_MAX_AUDIO_SECONDS = 600.0
#: The pretraining monitor's measurement: the monitor's defaults within that budget.
PRETRAIN_SPEC = MeasureSpec.for_monitor(num_utterances=PRETRAIN_MAX_UTTERANCES,
                                        total_seconds=PRETRAIN_MAX_AUDIO_SECONDS)


def pretrain_monitor(data: Any, spec: MeasureSpec | None = None, *,
                     protocol: str | None = None, **monitor_args: Any) -> RankMonitor:
    """A :class:`RankMonitor` for :func:`speechrank.pretrain.pretrain` (``monitor=``).

    Args:
        data: the held-out set (a DATA spec, a Dataset, paths or waveforms).
        spec: what to measure (default :data:`PRETRAIN_SPEC`, the pretraining budget).
        protocol: a published protocol; without a ``spec`` the pretraining budget then gives
            way to the protocol's (10,000 utterances for ``aldeneh2025``, an hour of audio for
            ``whetten2025``).
        monitor_args: any other :class:`RankMonitor` argument (``alarm``, ``store``,
            ``run_name``, ``setup``; the default setup names checkpoints as ``speechrank
            pretrain`` saves them, ``checkpoint-000100``).
    """
    monitor_args.setdefault("setup", MonitorSetup(checkpoint_format="checkpoint-{step:06d}"))
    if spec is None:
        spec = MONITOR_SPEC if protocol is not None else PRETRAIN_SPEC
    if protocol is not None:
        spec = spec.replace(protocol=protocol)
    return RankMonitor(None, data, spec, **monitor_args)


def default_heldout(data: Any) -> str | None:
    """The monitor's held-out set when none is given: a synthetic corpus's test manifest
    (probe speakers, never trained on); ``None`` for other data."""
    if isinstance(data, str) and data.startswith("synthetic:"):
        return data.split("#", 1)[0] + "#manifest=test"
    return None


def pretrain_with_monitor(data: Any, out_dir: Any, *, monitor_data: Any = "auto",
                          monitor_protocol: str | None = None,
                          stop_on_collapse: bool | CollapseStop = False,
                          progress: ProgressArg = None, **pretrain_options: Any
                          ) -> tuple[Any, RankMonitor | None]:
    """:func:`speechrank.pretrain.pretrain` as the ``pretrain`` command runs it: with the rank
    monitor on ``monitor_data`` (``"auto"``: :func:`default_heldout` of ``data``; ``"none"``
    or ``None``: off), following ``monitor_protocol`` when given (see
    :func:`pretrain_monitor`), and, with ``stop_on_collapse`` (``True`` or a
    :class:`CollapseStop`), ending the run when the collapse alarm says so. Returns the
    summary and the monitor (``None`` when off); what was chosen is logged through
    ``progress``."""
    from speechrank.pretrain import pretrain

    report = as_progress(progress)
    heldout = default_heldout(data) if monitor_data == "auto" else monitor_data
    monitor = None
    if heldout is not None and not (isinstance(heldout, str) and heldout.lower() == "none"):
        monitor = pretrain_monitor(heldout, protocol=monitor_protocol)
        report.log(f"monitoring RankMe-t of every layer on {heldout}"
                   + (f" ({monitor_protocol} protocol)" if monitor_protocol else ""))
    elif monitor_protocol is not None:
        raise SpeechrankError(f"the {monitor_protocol} protocol is for the rank monitor, "
                              "which is off: give --monitor-data HELDOUT")
    elif monitor_data == "auto":
        report.log("no held-out set for the rank monitor: give --monitor-data HELDOUT")
    rule = CollapseStop.of(stop_on_collapse)
    stop = None
    if rule is not None:
        if monitor is None:
            raise SpeechrankError("stopping on collapse needs the rank monitor, which is off: "
                                  "give --monitor-data HELDOUT")
        stop = _collapse_stop(monitor, rule)
    summary = pretrain(data, out_dir, progress=report, monitor=monitor, stop=stop,
                       **pretrain_options)
    return summary, monitor


def _collapse_stop(monitor: RankMonitor, rule: CollapseStop) -> Any:
    """The ``stop`` hook of :func:`speechrank.pretrain.pretrain`: the reason to stop when the
    monitor's measurement at this step asks for it."""

    def stop(step: int) -> str | None:
        last = monitor.last
        if last is None or last.step != step or not rule(last):
            return None
        return rule.message(last)

    return stop
