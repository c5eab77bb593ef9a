"""The monitor of ``speechrank pretrain``: RankMe-t of every layer at every checkpoint.

:func:`speechrank.pretrain.pretrain` builds its model itself and calls ``monitor(encoder,
step)`` after each checkpoint save, so this monitor is built without a model and prepares its
held-out set at the first call (step 0). Its rows are named the way ``speechrank sweep`` names
the same checkpoints (``model`` = the run directory, ``checkpoint`` = ``checkpoint-000100``),
so with a store the report shows them beside the sweep's probe results.
"""

from __future__ import annotations

from typing import Any

from speechrank.monitor.core import RankMonitor
from speechrank.progress import ProgressArg, as_progress

__all__ = ["PRETRAIN_MAX_AUDIO_SECONDS", "PRETRAIN_MAX_UTTERANCES", "default_heldout",
           "pretrain_monitor", "pretrain_with_monitor"]

#: Held-out budget during pretraining: the monitor's forward passes count against the run's
#: wall-time budget, so it is smaller than the stand-alone monitor's.
PRETRAIN_MAX_UTTERANCES = 500
PRETRAIN_MAX_AUDIO_SECONDS = 600.0


def pretrain_monitor(data: Any, *, max_utterances: int | None = PRETRAIN_MAX_UTTERANCES,
                     max_audio_seconds: float | None = PRETRAIN_MAX_AUDIO_SECONDS,
                     **kwargs: Any) -> RankMonitor:
    """A :class:`RankMonitor` for :func:`speechrank.pretrain.pretrain` (``monitor=``).

    Args:
        data: the held-out set (a DATA spec, a Dataset, paths or waveforms).
        max_utterances, max_audio_seconds: the held-out budget.
        kwargs: any other :class:`RankMonitor` argument (``layers``, ``store``,
            ``run_name`` ...).
    """
    kwargs.setdefault("checkpoint_format", "checkpoint-{step:06d}")
    return RankMonitor(None, data, max_utterances=max_utterances,
                       max_audio_seconds=max_audio_seconds, **kwargs)


def default_heldout(data: Any) -> str | None:
    """The monitor's held-out set when none is given: a synthetic corpus's test manifest
    (probe speakers, never trained on); ``None`` for other data."""
    if isinstance(data, str) and data.startswith("synthetic:"):
        return data.split("#", 1)[0] + "#manifest=test"
    return None


def pretrain_with_monitor(data: Any, out_dir: Any, *, monitor_data: Any = "auto",
                          progress: ProgressArg = None, **pretrain_options: Any
                          ) -> tuple[Any, RankMonitor | None]:
    """:func:`speechrank.pretrain.pretrain` as the ``pretrain`` command runs it: with the rank
    monitor on ``monitor_data`` (``"auto"``: :func:`default_heldout` of ``data``; ``"none"``
    or ``None``: off). Returns the summary and the monitor (``None`` when off); what was
    chosen is logged through ``progress``."""
    from speechrank.pretrain import pretrain

    report = as_progress(progress)
    heldout = default_heldout(data) if monitor_data == "auto" else monitor_data
    monitor = None
    if heldout is not None and not (isinstance(heldout, str) and heldout.lower() == "none"):
        monitor = pretrain_monitor(heldout)
        report.log(f"monitoring RankMe-t of every layer on {heldout}")
    elif monitor_data == "auto":
        report.log("no held-out set for the rank monitor: give --monitor-data HELDOUT")
    summary = pretrain(data, out_dir, progress=report, monitor=monitor, **pretrain_options)
    return summary, monitor
