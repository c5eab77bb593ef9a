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

__all__ = ["PRETRAIN_MAX_AUDIO_SECONDS", "PRETRAIN_MAX_UTTERANCES", "pretrain_monitor"]

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
