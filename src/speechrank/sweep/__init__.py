"""``speechrank sweep``: rank and probes of every layer over a series of checkpoints.

The paper's experiment (Aldeneh et al., ICASSP 2025) as a resumable job: for each checkpoint
of a training run, the label-free metrics of every layer on the rank data, and every probe task
on every layer, all written to a :class:`~speechrank.store.ResultStore`. Each unit of work
(checkpoint x dataset for rank, checkpoint x task for probes) commits in one transaction, so
a sweep killed at any moment and started again finishes the rest, recomputes nothing that is
stored and duplicates nothing.

Three rooms:

- :mod:`~speechrank.sweep.config`: the sweep file (TOML) and the probe-recipe overrides;
- :mod:`~speechrank.sweep.series`: the checkpoint series (which models, in which order, under
  which run), and what the store records of each checkpoint;
- :mod:`~speechrank.sweep.units` and :mod:`~speechrank.sweep.run`: the units, the one
  computation of a unit, and :func:`~speechrank.sweep.run.run_units`, the one loop that commits
  them whichever executor computes them: in this process
  (:mod:`~speechrank.sweep.checkpoint_task`, which also holds the computation of one
  checkpoint's units that every executor shares), in worker processes on this machine
  (:mod:`~speechrank.sweep.process_executor`, chosen by default when there are cores to
  spare), or as Ray tasks (:mod:`~speechrank.sweep.ray_executor`).

Within a checkpoint, every audio file is decoded and encoded once: the units run in order
(rank first) and share a :class:`~speechrank.extract.FrameMemo`, so a probe on the rank data's
audio (or on another probe's) replays the frames the earlier pass computed.
"""

from speechrank.sweep.checkpoint_task import SerialExecutor, UnitOutcome
from speechrank.sweep.config import PROBE_OPTIONS, ProbeSpec, SweepConfig, probe_recipe
from speechrank.sweep.process_executor import ProcessExecutor, plan_workers
from speechrank.sweep.run import (
    Executor,
    SweepSummary,
    find_all,
    group_by_checkpoint,
    run_units,
    sweep,
)
from speechrank.sweep.series import (
    Checkpoint,
    CheckpointSeries,
    checkpoint_keys,
    find_checkpoints,
    find_series,
    run_name,
)
from speechrank.sweep.units import (
    SweepUnit,
    commit_unit,
    compute_unit,
    merge_skip_counts,
    plan_units,
    unit_line,
)

__all__ = [
    "PROBE_OPTIONS",
    "Checkpoint",
    "CheckpointSeries",
    "Executor",
    "ProbeSpec",
    "ProcessExecutor",
    "SerialExecutor",
    "SweepConfig",
    "SweepSummary",
    "SweepUnit",
    "UnitOutcome",
    "checkpoint_keys",
    "commit_unit",
    "compute_unit",
    "find_all",
    "find_checkpoints",
    "find_series",
    "group_by_checkpoint",
    "merge_skip_counts",
    "plan_units",
    "plan_workers",
    "probe_recipe",
    "run_name",
    "run_units",
    "sweep",
    "unit_line",
]
