"""Downstream probes on frozen encoder features, layer by layer (``speechrank probe``).

- :func:`run_probe`: the whole command as a function, returning tidy rows per layer and split
  (how it runs: a :class:`ProbeRun`);
- :mod:`~speechrank.probes.tasks`: ``ks``, ``sid``, ``er``, ``pr`` and ``label:COLUMN``;
- :mod:`~speechrank.probes.drivers`: the probe protocol and :data:`DRIVERS`, the registry of
  probe kinds (each driver declares its kind, recipe, metrics and pooling);
- :mod:`~speechrank.probes.config`: one recipe dataclass per probe kind, every hyperparameter;
  :mod:`~speechrank.probes.recipes`: a recipe from a flat TOML table;
- :mod:`~speechrank.probes.features`: one encoder pass, every layer, cached on disk;
- :mod:`~speechrank.probes.linear`, :mod:`~speechrank.probes.ctc`: the probes on arrays;
- :mod:`~speechrank.probes.alignment`, :mod:`~speechrank.probes.edit_distance`: frame labels
  from time-aligned phones, and phone error rate.
"""

from speechrank.probes.config import (
    CTCProbeConfig,
    FrameProbeConfig,
    LogisticConfig,
    UtteranceProbeConfig,
)
from speechrank.probes.ctc import fit_ctc_probe
from speechrank.probes.drivers import DRIVERS, TaskKind, default_config
from speechrank.probes.edit_distance import edit_distance, phone_error_rate
from speechrank.probes.features import resolve_cache_dir
from speechrank.probes.linear import FitCache, fit_logistic_probe
from speechrank.probes.run import ProbeResult, ProbeRun, run_probe
from speechrank.probes.tasks import TASK_NAMES, TaskSpec, resolve_task

__all__ = [
    "DRIVERS",
    "TASK_NAMES",
    "CTCProbeConfig",
    "FitCache",
    "FrameProbeConfig",
    "LogisticConfig",
    "ProbeResult",
    "ProbeRun",
    "TaskKind",
    "TaskSpec",
    "UtteranceProbeConfig",
    "default_config",
    "edit_distance",
    "fit_ctc_probe",
    "fit_logistic_probe",
    "phone_error_rate",
    "resolve_cache_dir",
    "resolve_task",
    "run_probe",
]
