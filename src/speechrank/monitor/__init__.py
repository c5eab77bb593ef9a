"""The training monitor: rank of every layer during self-supervised training.

:class:`RankMonitor` measures RankMe-t (Aldeneh et al., ICASSP 2025) and the other label-free
metrics of chosen layers on a fixed held-out set, from inside a training loop; it raises a
:class:`RankCollapseWarning` when a layer collapses, and can end training when asked
(:class:`CollapseStop`). Framework callbacks build on it, each importing its framework only
when used: :mod:`speechrank.monitor.lightning` (``RankMonitorCallback``) and
:mod:`speechrank.monitor.hf` (``RankMonitorTrainerCallback``); :func:`pretrain_monitor` is the
monitor of ``speechrank pretrain --monitor-data``.
"""

from speechrank.monitor.collapse import (
    AlarmRule,
    CollapseAlarm,
    CollapseDetector,
    CollapseStop,
    RankCollapseWarning,
)
from speechrank.monitor.core import (
    DEFAULT_MAX_UTTERANCES,
    MonitorResult,
    MonitorSetup,
    RankMonitor,
    metric_key,
)
from speechrank.monitor.pretrain import pretrain_monitor, pretrain_with_monitor
from speechrank.spec import MONITOR_SPEC, MeasureSpec

__all__ = [
    "DEFAULT_MAX_UTTERANCES",
    "MONITOR_SPEC",
    "AlarmRule",
    "CollapseAlarm",
    "CollapseDetector",
    "CollapseStop",
    "MeasureSpec",
    "MonitorResult",
    "MonitorSetup",
    "RankCollapseWarning",
    "RankMonitor",
    "metric_key",
    "pretrain_monitor",
    "pretrain_with_monitor",
]
