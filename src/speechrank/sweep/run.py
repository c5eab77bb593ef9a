"""Running a sweep: one loop over the units still to do, whichever executor computes them.

:func:`run_units` is the one place that opens the store, records the series' checkpoints,
asks which units are done, hands the rest to an :class:`Executor` grouped by checkpoint (rank
first, then the probes, in plan order) and commits each unit's rows in one transaction as its
result comes back. The store has one writer, this loop, whatever runs the units: the
serial executor (:class:`~speechrank.sweep.checkpoint_task.SerialExecutor`: this process), the
process executor (:mod:`speechrank.sweep.process_executor`: worker processes on this machine),
the Ray executor (:mod:`speechrank.sweep.ray_executor`), or any other that yields
:class:`UnitOutcome` objects. So every executor keeps the store's
guarantees: a sweep killed at any moment and started again finishes the rest, recomputes
nothing that is stored and duplicates nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from speechrank.errors import SpeechrankError
from speechrank.progress import Progress, ProgressArg, as_progress
from speechrank.sweep.checkpoint_task import SerialExecutor, UnitOutcome
from speechrank.sweep.config import SweepConfig
from speechrank.sweep.process_executor import ProcessExecutor, Workers
from speechrank.sweep.series import CheckpointSeries, find_series
from speechrank.sweep.units import (
    SweepUnit,
    commit_unit,
    merge_skip_counts,
    plan_units,
    unit_line,
)


@dataclasses.dataclass
class SweepSummary:
    """What a sweep did: units computed and reused, rows written, time taken, and the runs'
    names in the store."""

    store: str
    checkpoints: int
    units_done: int
    units_reused: int
    rows_written: int
    wall_seconds: float
    skipped: dict[str, int]
    runs: list[str] = dataclasses.field(default_factory=list)


class Executor(Protocol):
    """Computes a sweep's units; :func:`run_units` commits what it yields.

    ``groups`` holds the units still to do, one list per checkpoint in plan order. An executor
    yields one :class:`UnitOutcome` per unit, in any order across checkpoints, and raises
    :class:`~speechrank.errors.SpeechrankError` when a unit cannot be computed (what was
    yielded before is already committed).
    """

    def run(self, groups: Sequence[list[SweepUnit]], cfg: SweepConfig, *, run: str,
            progress: Progress) -> Iterator[UnitOutcome]: ...


def group_by_checkpoint(units: Sequence[SweepUnit]) -> list[list[SweepUnit]]:
    """Units in plan order, one list per checkpoint (the order of first appearance)."""
    groups: dict[str, list[SweepUnit]] = {}
    for unit in units:
        groups.setdefault(unit.checkpoint.path, []).append(unit)
    return list(groups.values())


def run_units(series: CheckpointSeries | Sequence[CheckpointSeries], cfg: SweepConfig,
              store_path: str | Path, executor: Executor, *, progress: ProgressArg = None,
              log: Callable[[str], Any] | None = None) -> SweepSummary:
    """Measure every checkpoint of ``series`` (one run, or several) into ``store_path`` with
    ``executor``.

    Each run takes its name in the store (:meth:`~speechrank.store.ResultStore.claim_run`:
    the one its resolved path had before, else the shortest free tail of that path), its
    checkpoints are recorded, and a checkpoint whose content digest differs from the one
    recorded before (a ``checkpoint_last.pt`` of a run that went on) is measured again. Then
    the units already done are skipped and each computed unit is committed in one
    transaction as the executor yields it; the store is closed whatever happens. ``log``
    (default: ``progress.log``) gets one line per unit.
    """
    from speechrank.store import ResultStore

    started = time.perf_counter()
    report = as_progress(progress)
    say = log or report.log
    all_series = [series] if isinstance(series, CheckpointSeries) else list(series)
    store = ResultStore(store_path)
    done = reused = rows_written = 0
    skipped: dict[str, int] = {}
    runs: list[str] = []
    try:
        store.set_meta("sweep_config", cfg.to_dict())
        for one in all_series:
            one = _claim(store, one, say)
            runs.append(one.run)
            units = plan_units(one.checkpoints, cfg, one.run)
            todo = [unit for unit in units if not store.is_done(unit.key)]
            reused += len(units) - len(todo)
            for checkpoint in one.checkpoints:
                if not any(unit.checkpoint == checkpoint for unit in todo):
                    n = sum(unit.checkpoint == checkpoint for unit in units)
                    say(f"{checkpoint.name}: all {n} units already in the store")
            if todo:
                report.start("sweep", len(todo), "units")
            for outcome in executor.run(group_by_checkpoint(todo), cfg, run=one.run,
                                        progress=report):
                commit_unit(store, outcome.unit, outcome.rows, outcome.seconds)
                report.advance("sweep", 1)
                merge_skip_counts(skipped, outcome.skipped)
                done += 1
                rows_written += len(outcome.rows)
                say(unit_line(outcome.unit, len(outcome.rows), outcome.seconds, outcome.where))
                if outcome.note:
                    say(outcome.note)
            if todo:
                report.end("sweep")
    finally:
        store.close()
    return SweepSummary(store=str(store_path),
                        checkpoints=sum(len(one.checkpoints) for one in all_series),
                        units_done=done, units_reused=reused, rows_written=rows_written,
                        wall_seconds=round(time.perf_counter() - started, 3), skipped=skipped,
                        runs=runs)


def _claim(store: Any, series: CheckpointSeries, say: Callable[[str], Any]) -> CheckpointSeries:
    """``series`` under its name in ``store``, its checkpoints recorded (and forgotten first
    where their content changed)."""
    run = store.claim_run(series.source, series.names) if series.source else series.run
    series = dataclasses.replace(series, run=run)
    store.set_meta("run", run)
    before = {record.checkpoint: record for record in store.checkpoints(run)}
    for record in series.records():
        old = before.get(record.checkpoint)
        if old is not None and old.digest and record.digest and old.digest != record.digest:
            dropped = store.forget_checkpoint(run, record.checkpoint)
            say(f"{record.checkpoint}: its content changed since it was measured "
                f"({old.digest[:19]} -> {record.digest[:19]}); {dropped} rows dropped, "
                "measured again")
        store.record_checkpoint(record)
    return series


def find_all(specs: str | Path | Sequence[str | Path]) -> list[CheckpointSeries]:
    """The series of one run spec or of several (see
    :func:`~speechrank.sweep.series.find_series`); a run named twice is swept once."""
    items = [specs] if isinstance(specs, (str, Path)) else list(specs)
    if not items:
        raise SpeechrankError("no run to sweep")
    found: list[CheckpointSeries] = []
    for spec in items:
        one = find_series(spec)
        if all(other.source != one.source for other in found):
            found.append(one)
    return found


def sweep(checkpoints_spec: str | Path | Sequence[str | Path], config: SweepConfig | str | Path,
          store_path: str | Path, *, device: str = "cpu", workers: Workers | None = None,
          progress: ProgressArg = None, log: Callable[[str], Any] | None = None
          ) -> SweepSummary:
    """Measure every checkpoint of one run or several into ``store_path`` (resumable) on
    this machine; each run is its own model in the store.

    Args:
        checkpoints_spec: a run, or a list of runs (see
            :func:`~speechrank.sweep.series.find_checkpoints`).
        config: a :class:`SweepConfig` or the path of its TOML file.
        store_path: the SQLite store; created when missing, reused when present.
        device: ``cpu`` or ``cuda``.
        workers: checkpoints swept side by side in worker processes, or ``"auto"`` (see
            :func:`~speechrank.sweep.process_executor.plan_workers`); 1 sweeps them one after
            the other in this process. Default: the config's ``checkpoint_workers``.
        progress: a :class:`~speechrank.progress.Progress` for the passes (its ``log``
            receives one line per unit of work unless ``log`` is given).
        log: called with one line per unit of work.
    """
    cfg = config if isinstance(config, SweepConfig) else SweepConfig.from_toml(config)
    workers = cfg.checkpoint_workers if workers is None else workers
    executor: Executor = (SerialExecutor(device=device) if workers == 1
                          else ProcessExecutor(workers=workers, device=device))
    return run_units(find_all(checkpoints_spec), cfg, store_path, executor,
                     progress=progress, log=log)
