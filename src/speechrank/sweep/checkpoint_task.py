"""One checkpoint's units, computed together: the body every sweep executor shares, and the
serial executor that runs it for each checkpoint in this process.

A checkpoint is loaded once and its units still to do are computed in plan order (rank first)
with one shared :class:`~speechrank.extract.FrameMemo`, so every audio file is encoded once per
checkpoint, and one :class:`~speechrank.probes.linear.FitCache`, so probes with equal train and
dev arrays are fitted once (neither when ``memo_gb`` is 0: then units share nothing).
:func:`checkpoint_outcomes` yields each unit as it is done (the serial executor commits them
one by one); :func:`run_checkpoint_task` returns the same results as plain data (rows as
dicts), which is what a Ray task or a worker process sends back to the driver, and
:func:`outcomes_from_payloads` turns that data back into :class:`UnitOutcome` objects for
:func:`~speechrank.sweep.run.run_units`, the one writer of the store.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from speechrank.errors import SpeechrankError
from speechrank.extract import FrameMemo
from speechrank.probes.linear import FitCache
from speechrank.progress import ProgressArg
from speechrank.sweep.config import SweepConfig
from speechrank.sweep.units import SweepUnit, compute_unit


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


@dataclasses.dataclass(frozen=True)
class PausePoint:
    """A testing hook: the first attempt of one unit stops where it says so and waits.

    The task of unit ``unit_key`` writes its process id to ``directory/started`` (atomically,
    once: a retry finds the file and runs on) after loading its checkpoint and before computing,
    then waits up to ``wait_seconds`` to be killed, so a test can SIGKILL a worker mid-unit at a
    known point rather than racing it. Every attempt also leaves ``directory/attempt-PID``.
    """

    unit_key: str
    directory: str
    wait_seconds: float = 300.0


def pause_at(point: PausePoint | None, key: str) -> None:
    """Stop at ``point`` when it names unit ``key`` (see :class:`PausePoint`)."""
    if point is None or point.unit_key != key:
        return
    directory = Path(point.directory)
    (directory / f"attempt-{os.getpid()}").write_text(str(os.getpid()))
    scratch = directory / f".started-{os.getpid()}"
    scratch.write_text(str(os.getpid()))
    try:
        os.link(scratch, directory / "started")  # atomic; fails when an attempt came before
    except FileExistsError:
        return
    finally:
        scratch.unlink()
    deadline = time.monotonic() + point.wait_seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    raise SpeechrankError(f"pause point of {key}: not killed within {point.wait_seconds} s")


def memo_note(name: str, memo: FrameMemo | None, fits: FitCache | None = None) -> str | None:
    """The line logged after a checkpoint's last unit: what its frame memo (and fit cache)
    saved."""
    if memo is None or not memo.hits:
        return None
    reused = fits.reused if fits is not None else 0
    return (f"{name}: {memo.misses} utterances encoded, {memo.hits} replayed from memory "
            f"({memo.replayed_seconds:.0f} s of audio not encoded again)"
            + (f", {reused} layer fits reused" if reused else ""))


def checkpoint_outcomes(units: Sequence[SweepUnit], cfg: SweepConfig, *, run: str,
                        device: str = "cpu", progress: ProgressArg = None,
                        pause: PausePoint | None = None) -> Iterator[UnitOutcome]:
    """Load the checkpoint of ``units`` (all of one checkpoint) and yield each unit as it is
    computed, in order, all sharing one frame memo; the last one carries the memo's note."""
    from speechrank.encoders import load_encoder

    if not units:
        return
    checkpoint = units[0].checkpoint
    if any(unit.checkpoint != checkpoint for unit in units):
        raise SpeechrankError("checkpoint_outcomes: units of more than one checkpoint")
    encoder = load_encoder(checkpoint.path, device=device)
    memo = cfg.new_memo()
    fits = FitCache() if memo is not None else None
    for i, unit in enumerate(units):
        pause_at(pause, unit.key)
        started = time.perf_counter()
        rows, skipped = compute_unit(unit, cfg, encoder, run=run, progress=progress, memo=memo,
                                     fits=fits)
        note = memo_note(checkpoint.name, memo, fits) if i == len(units) - 1 else None
        yield UnitOutcome(unit, rows, skipped, time.perf_counter() - started, note=note)


def run_checkpoint_task(units: list[SweepUnit], cfg: SweepConfig, *, run: str, device: str,
                        threads: int, pause: PausePoint | None = None) -> list[dict[str, Any]]:
    """:func:`checkpoint_outcomes` as plain data, one dict per unit (its key, rows as dicts,
    skipped files, seconds, process id and note): the body of a Ray task or worker process.

    Sets torch's intra-op threads to ``threads`` first (the cores the task was given), so two
    tasks on two cores do not fight over them.
    """
    import torch

    torch.set_num_threads(threads)
    return [{"key": outcome.unit.key, "rows": [row.to_dict() for row in outcome.rows],
             "skipped": outcome.skipped, "seconds": outcome.seconds, "pid": os.getpid(),
             "note": outcome.note}
            for outcome in checkpoint_outcomes(units, cfg, run=run, device=device, pause=pause)]


def outcomes_from_payloads(group: Sequence[SweepUnit], payloads: Sequence[dict[str, Any]],
                           where: str) -> list[UnitOutcome]:
    """The :class:`UnitOutcome` objects of what :func:`run_checkpoint_task` returned for
    ``group`` (checked unit by unit against the keys sent)."""
    from speechrank.results import ResultRow

    outcomes = []
    for unit, payload in zip(group, payloads, strict=True):
        if payload["key"] != unit.key:
            raise SpeechrankError(f"sweep task returned unit {payload['key']} for {unit.key}")
        outcomes.append(UnitOutcome(unit, [ResultRow.from_dict(row) for row in payload["rows"]],
                                    payload["skipped"], payload["seconds"], where=where,
                                    note=payload.get("note")))
    return outcomes


@dataclasses.dataclass(frozen=True)
class SerialExecutor:
    """Every checkpoint in this process, one after the other: load it once, compute its units
    in order with one shared :class:`~speechrank.extract.FrameMemo` (so an audio file is
    encoded once per checkpoint), drop it."""

    device: str = "cpu"

    def run(self, groups: Sequence[list[SweepUnit]], cfg: SweepConfig, *, run: str,
            progress: ProgressArg = None) -> Iterator[UnitOutcome]:
        for group in groups:
            yield from checkpoint_outcomes(group, cfg, run=run, device=self.device,
                                           progress=progress)
