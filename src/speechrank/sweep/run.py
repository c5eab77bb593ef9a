"""Running a sweep: one loop over the units still to do, whichever executor computes them.

:func:`run_units` is the one place that opens the store, records the series' checkpoints,
asks which units are done, hands the rest to an :class:`Executor` grouped by checkpoint (rank
first, then the probes, in plan order) and commits each unit's rows in one transaction as its
result comes back. The store has one writer, this loop, whatever runs the units: the
:class:`SerialExecutor` here, the Ray executor (:mod:`speechrank.sweep.ray_executor`), or any
other that yields :class:`UnitOutcome` objects. So every executor keeps the store's
guarantees: a sweep killed at any moment and started again finishes the rest, recomputes
nothing that is stored and duplicates nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from speechrank.progress import Progress, ProgressArg, as_progress
from speechrank.sweep.config import SweepConfig
from speechrank.sweep.series import CheckpointSeries, find_series
from speechrank.sweep.units import (
    SweepUnit,
    commit_unit,
    compute_unit,
    merge_skip_counts,
    plan_units,
    unit_line,
)


@dataclasses.dataclass
class SweepSummary:
    """What a sweep did: units computed and reused, rows written, time taken."""

    store: str
    checkpoints: int
    units_done: int
    units_reused: int
    rows_written: int
    wall_seconds: float
    skipped: dict[str, int]


@dataclasses.dataclass(frozen=True)
class UnitOutcome:
    """One computed unit as an executor hands it back: its rows and skipped files by reason,
    the seconds it took, where it ran (shown in the log line) and an optional note (a line
    about its checkpoint, logged after the unit)."""

    unit: SweepUnit
    rows: list[Any]
    skipped: dict[str, int]
    seconds: float
    where: str = ""
    note: str | None = None


class Executor(Protocol):
    """Computes a sweep's units; :func:`run_units` commits what it yields.

    ``groups`` holds the units still to do, one list per checkpoint in plan order. An executor
    yields one :class:`UnitOutcome` per unit, in any order across checkpoints, and raises
    :class:`~speechrank.errors.SpeechrankError` when a unit cannot be computed (what was
    yielded before is already committed).
    """

    def run(self, groups: Sequence[list[SweepUnit]], cfg: SweepConfig, *, run: str,
            progress: Progress) -> Iterator[UnitOutcome]: ...


@dataclasses.dataclass(frozen=True)
class SerialExecutor:
    """Every checkpoint in this process, one after the other: load it once, compute its units
    in order with one shared :class:`~speechrank.extract.FrameMemo` (so an audio file is
    encoded once per checkpoint), drop it."""

    device: str = "cpu"

    def run(self, groups: Sequence[list[SweepUnit]], cfg: SweepConfig, *, run: str,
            progress: Progress) -> Iterator[UnitOutcome]:
        from speechrank.encoders import load_encoder

        for group in groups:
            checkpoint = group[0].checkpoint
            encoder = load_encoder(checkpoint.path, device=self.device)
            memo = cfg.new_memo()
            for i, unit in enumerate(group):
                started = time.perf_counter()
                rows, skipped = compute_unit(unit, cfg, encoder, run=run, progress=progress,
                                             memo=memo)
                note = None
                if i == len(group) - 1 and memo is not None and memo.hits:
                    note = (f"{checkpoint.name}: {memo.misses} utterances encoded, {memo.hits} "
                            f"replayed from memory ({memo.replayed_seconds:.0f} s of audio not "
                            "encoded again)"
                            + (f", {memo.fits_reused} layer fits reused"
                               if memo.fits_reused else ""))
                yield UnitOutcome(unit, rows, skipped, time.perf_counter() - started, note=note)
            del encoder, memo


def group_by_checkpoint(units: Sequence[SweepUnit]) -> list[list[SweepUnit]]:
    """Units in plan order, one list per checkpoint (the order of first appearance)."""
    groups: dict[str, list[SweepUnit]] = {}
    for unit in units:
        groups.setdefault(unit.checkpoint.path, []).append(unit)
    return list(groups.values())


def run_units(series: CheckpointSeries, cfg: SweepConfig, store_path: str | Path,
              executor: Executor, *, progress: ProgressArg = None,
              log: Callable[[str], Any] | None = None) -> SweepSummary:
    """Measure every checkpoint of ``series`` into ``store_path`` with ``executor``.

    Records the series' checkpoints in the store, skips the units already done, and commits
    each computed unit in one transaction as the executor yields it; the store is closed
    whatever happens. ``log`` (default: ``progress.log``) gets one line per unit.
    """
    from speechrank.store import ResultStore

    started = time.perf_counter()
    report = as_progress(progress)
    say = log or report.log
    store = ResultStore(store_path)
    done = reused = rows_written = 0
    skipped: dict[str, int] = {}
    try:
        store.set_meta("sweep_config", cfg.to_dict())
        store.set_meta("run", series.run)
        for record in series.records():
            store.record_checkpoint(record)
        units = plan_units(series.checkpoints, cfg, series.run)
        todo = [unit for unit in units if not store.is_done(unit.key)]
        reused = len(units) - len(todo)
        for checkpoint in series.checkpoints:
            if not any(unit.checkpoint == checkpoint for unit in todo):
                n = sum(unit.checkpoint == checkpoint for unit in units)
                say(f"{checkpoint.name}: all {n} units already in the store")
        for outcome in executor.run(group_by_checkpoint(todo), cfg, run=series.run,
                                    progress=report):
            commit_unit(store, outcome.unit, outcome.rows)
            merge_skip_counts(skipped, outcome.skipped)
            done += 1
            rows_written += len(outcome.rows)
            say(unit_line(outcome.unit, len(outcome.rows), outcome.seconds, outcome.where))
            if outcome.note:
                say(outcome.note)
    finally:
        store.close()
    return SweepSummary(store=str(store_path), checkpoints=len(series.checkpoints),
                        units_done=done, units_reused=reused, rows_written=rows_written,
                        wall_seconds=round(time.perf_counter() - started, 3), skipped=skipped)


def sweep(checkpoints_spec: str | Path, config: SweepConfig | str | Path, store_path: str | Path,
          *, device: str = "cpu", progress: ProgressArg = None,
          log: Callable[[str], Any] | None = None) -> SweepSummary:
    """Measure every checkpoint of a series into ``store_path`` (resumable), in this process.

    Args:
        checkpoints_spec: see :func:`~speechrank.sweep.series.find_checkpoints`.
        config: a :class:`SweepConfig` or the path of its TOML file.
        store_path: the SQLite store; created when missing, reused when present.
        device: ``cpu`` or ``cuda``.
        progress: a :class:`~speechrank.progress.Progress` for the passes (its ``log``
            receives one line per unit of work unless ``log`` is given).
        log: called with one line per unit of work.
    """
    cfg = config if isinstance(config, SweepConfig) else SweepConfig.from_toml(config)
    return run_units(find_series(checkpoints_spec), cfg, store_path,
                     SerialExecutor(device=device), progress=progress, log=log)
