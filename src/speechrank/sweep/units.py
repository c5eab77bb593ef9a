"""The units of a sweep (checkpoint x rank data, checkpoint x probe task) and how one is computed.

A unit is computed whole by :func:`compute_unit`, the one computation of a unit whichever
executor runs it, and committed in one transaction by :func:`commit_unit`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal

from speechrank.errors import SpeechrankError
from speechrank.extract import FrameMemo
from speechrank.probes.linear import FitCache
from speechrank.progress import Progress, ProgressArg, as_progress
from speechrank.sweep.config import ProbeSpec, SweepConfig, probe_recipe
from speechrank.sweep.series import Checkpoint, checkpoint_keys


@dataclasses.dataclass(frozen=True)
class SweepUnit:
    """One unit of a sweep: checkpoint x rank data, or checkpoint x probe task.

    ``key`` names the unit in the store: ``RUN|CHECKPOINT|rank|DATA`` or
    ``RUN|CHECKPOINT|probe|NAME``, where CHECKPOINT is the checkpoint's identity in its run
    (``step:600``, or its content digest where the step is unknown or shared: see
    :func:`~speechrank.sweep.series.checkpoint_keys`) and DATA the rank data in its one
    spelling (:func:`~speechrank.audio.datasets.resolve_spec`), so neither a file's name nor
    how a path was written changes it. A unit is computed whole and committed in one
    transaction.
    Plain data, so it travels to a Ray worker as it is (see :mod:`speechrank.sweep.ray_executor`).
    """

    key: str
    kind: Literal["rank", "probe"]
    checkpoint: Checkpoint
    probe: ProbeSpec | None = None


def plan_units(checkpoints: Sequence[Checkpoint], cfg: SweepConfig, run: str) -> list[SweepUnit]:
    """Every unit of a sweep, checkpoint by checkpoint (rank first, then the probes in order).

    Checkpoints without a :attr:`~speechrank.sweep.series.Checkpoint.key` get theirs first.
    """
    if any(not checkpoint.key for checkpoint in checkpoints):
        checkpoints = checkpoint_keys(checkpoints)
    units: list[SweepUnit] = []
    for checkpoint in checkpoints:
        if cfg.rank_data:
            units.append(SweepUnit(unit_key(run, checkpoint, "rank", cfg.rank_data), "rank",
                                   checkpoint))
        for probe in cfg.probes:
            units.append(SweepUnit(unit_key(run, checkpoint, "probe", probe.name), "probe",
                                   checkpoint, probe))
    return units


def unit_key(run: str, checkpoint: Checkpoint, kind: str, what: str) -> str:
    """``RUN|CHECKPOINT KEY|KIND|WHAT`` (see :class:`SweepUnit`)."""
    return f"{run}|{checkpoint.key}|{kind}|{what}"


def compute_unit(unit: SweepUnit, cfg: SweepConfig, encoder: Any, *, run: str,
                 progress: ProgressArg = None, memo: FrameMemo | None = None,
                 fits: FitCache | None = None) -> tuple[list[Any], dict[str, int]]:
    """The rows of one unit (``model`` set to the run) and its skipped files by reason.

    The one computation of a unit, called by the serial sweep and by the Ray task alike, so
    both write the same rows (to float32 rounding where a ``memo`` replays frames).
    ``encoder`` is the unit's checkpoint, already loaded; ``memo`` holds frames earlier units
    of the same checkpoint computed, ``fits`` the logistic probe fits they made.
    """
    from speechrank.probes import run_probe
    from speechrank.rank import run_rank

    report = as_progress(progress)
    skipped: dict[str, int] = {}
    if unit.kind == "rank":
        rows = _rank_unit(run_rank, encoder, cfg=cfg, checkpoint=unit.checkpoint,
                          skipped=skipped, progress=report, memo=memo)
    elif unit.probe is not None:
        rows = _probe_unit(run_probe, encoder, cfg=cfg, probe=unit.probe,
                           checkpoint=unit.checkpoint, skipped=skipped, progress=report,
                           shared=(memo, fits))
    else:
        raise SpeechrankError(f"sweep unit {unit.key}: a probe unit without its probe")
    return [dataclasses.replace(row, model=run) for row in rows], skipped


def commit_unit(store: Any, unit: SweepUnit, rows: Sequence[Any], seconds: float) -> None:
    """Write one unit's rows and its done-mark in one transaction of ``store``; ``seconds``,
    the time the unit's work took wherever it ran, is its recorded wall time."""
    with store.unit(unit.key, meta={"checkpoint": unit.checkpoint.name,
                                    "step": unit.checkpoint.step,
                                    "digest": unit.checkpoint.digest},
                    seconds=seconds) as work:
        work.add_rows(rows)


def unit_line(unit: SweepUnit, n_rows: int, seconds: float, where: str = "") -> str:
    """The log line of one committed unit (serial and Ray sweeps alike)."""
    return (f"{unit.checkpoint.name} (step {unit.checkpoint.step}): "
            f"{unit.key.split('|', 2)[2]} -> {n_rows} rows in {seconds:.1f} s{where}")


def merge_skip_counts(total: dict[str, int], counts: dict[str, int]) -> None:
    """Add one unit's skipped files by reason to ``total``."""
    for reason, n in counts.items():
        total[reason] = total.get(reason, 0) + n


def _count_skips(skipped: dict[str, int], items: list[dict[str, str]]) -> None:
    for item in items:
        skipped[item["reason"]] = skipped.get(item["reason"], 0) + 1


def _rank_unit(run_rank: Callable[..., Any], encoder: Any, *, cfg: SweepConfig,
               checkpoint: Checkpoint, skipped: dict[str, int], progress: Progress,
               memo: FrameMemo | None) -> list[Any]:
    result = run_rank(encoder, cfg.rank_data, cfg.rank_spec, checkpoint=checkpoint.name,
                      step=checkpoint.step, memo=memo, progress=progress)
    _count_skips(skipped, result.info["skipped"])
    return result.rows


def _probe_unit(run_probe: Callable[..., Any], encoder: Any, *, cfg: SweepConfig,
                probe: ProbeSpec, checkpoint: Checkpoint, skipped: dict[str, int],
                progress: Progress, shared: tuple[FrameMemo | None, FitCache | None]
                ) -> list[Any]:
    from speechrank.audio import load_dataset
    from speechrank.probes import ProbeRun, resolve_task

    dataset = load_dataset(probe.data)
    config = probe_recipe(resolve_task(probe.task, dataset).kind, dict(probe.options))
    memo, fits = shared
    how = ProbeRun(config=config, cache_dir=cfg.cache_dir, fit_workers=cfg.fit_workers,
                   memo=memo, fits=fits)
    result = run_probe(encoder, dataset, probe.task, cfg.run_options(), run=how,
                       progress=progress)
    _count_skips(skipped, result.info.get("skipped", []))
    return [dataclasses.replace(row, checkpoint=checkpoint.name,
                                step=checkpoint.step, task=probe.name, domain=probe.domain,
                                conventions={**row.conventions, "task_kind": probe.task})
            for row in result.rows]
