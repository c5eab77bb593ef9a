"""``speechrank sweep``: rank and probes of every layer over a series of checkpoints.

The paper's experiment (Aldeneh et al., ICASSP 2025) as a resumable job: for each checkpoint
of a training run, the label-free metrics of every layer on the rank data, and every probe task
on every layer, all written to a :class:`~speechrank.store.ResultStore`. Each unit of work
(checkpoint x dataset for rank, checkpoint x task for probes) commits in one transaction, so
a sweep killed at any moment and started again finishes the rest, recomputes nothing that is
stored and duplicates nothing.

The sweep is described by a TOML file::

    [rank]                      # the label-free metrics
    data = "synthetic:corpus"   # any DATA spec
    num_utterances = 500        # optional, like `speechrank rank`
    max_seconds = 6.0
    poolings = ["sum", "mean", "frames"]
    metrics = ["rankme", "rankme_centered", "erank_cov", "alpha_req"]
    layers = "all"
    max_frames = 25600
    # protocol = "whetten2025"  # optional preset; the keys above still win (issue 14)

    [[probe]]                   # one table per probe task
    name = "ks"                 # unique name shown in the report
    task = "ks"                 # ks | sid | er | pr | label:COLUMN
    data = "synthetic:corpus"
    domain = "in"               # in-domain or out-of-domain ("out")
    # c_grid = [0.1, 1.0]       # optional recipe options (see probe_recipe)
    # max_iter = 100
    # fit_dtype = "float32"     # lbfgs in float32 (default "float64")
    # max_frames = {train = 2500, dev = 1250, test = 10000}

    [options]
    seed = 0
    batch_seconds = 32.0
    memo_gb = 2.0               # frames kept per checkpoint for reuse (0: encode every pass)
    fit_workers = 1             # probe layers fitted at once in worker processes

Within a checkpoint, every audio file is decoded and encoded once: the units run in order
(rank first) and share a :class:`~speechrank.extract.FrameMemo`, so a probe on the rank data's
audio (or on another probe's) replays the frames the earlier pass computed (issue 11, item 5).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from speechrank.errors import SpeechrankError
from speechrank.extract import DEFAULT_MEMO_BYTES, FrameMemo
from speechrank.options import DEFAULT_BATCH_SECONDS, RunOptions
from speechrank.progress import Progress, ProgressArg, as_progress

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One model of the series: where it is, its name and its training step."""

    path: str
    name: str
    step: int | None


#: Recipe options a ``[[probe]]`` table may set (see :func:`probe_recipe`).
PROBE_OPTIONS = ("c_grid", "max_iter", "fit_dtype", "max_frames", "max_audio_seconds")


@dataclasses.dataclass(frozen=True)
class ProbeSpec:
    """One probe task of a sweep; ``options`` adjusts the task's default recipe."""

    name: str
    task: str
    data: str
    domain: str = "in"
    options: tuple[tuple[str, Any], ...] = ()


def probe_recipe(kind: str, options: dict[str, Any]) -> Any:
    """The default recipe of a probe kind with a sweep's options applied.

    ``c_grid`` replaces the logistic probe's grid of inverse L2 strengths and ``max_iter`` its
    lbfgs iteration cap (a fit that hits it is recorded as not converged), ``fit_dtype``
    (``float64`` or ``float32``) the type lbfgs works in; ``max_frames`` and
    ``max_audio_seconds`` cap the train split of frame and CTC probes (dev and test get
    half as much each), or, as a table ``{train = .., dev = .., test = ..}``, each split.
    Returns ``None`` when there are no options (the default recipe).
    """
    from speechrank.probes.config import SPLITS, default_config

    if not options:
        return None
    config = default_config(kind)
    changes: dict[str, Any] = {}
    logistic_changes = {}
    if "c_grid" in options:
        logistic_changes["c_grid"] = tuple(float(c) for c in options["c_grid"])
    if "max_iter" in options:
        logistic_changes["max_iter"] = int(options["max_iter"])
    if "fit_dtype" in options:
        if options["fit_dtype"] not in ("float64", "float32"):
            raise SpeechrankError(f"probe option fit_dtype must be 'float64' or 'float32', "
                                  f"got {options['fit_dtype']!r}")
        logistic_changes["fit_dtype"] = options["fit_dtype"]
    if logistic_changes:
        if not hasattr(config, "logistic"):
            raise SpeechrankError(f"probe options {sorted(logistic_changes)} do not apply to a "
                                  f"{kind} probe")
        changes["logistic"] = dataclasses.replace(config.logistic, **logistic_changes)
    for key in ("max_frames", "max_audio_seconds"):
        if key in options:
            if not hasattr(config, key):
                raise SpeechrankError(f"probe option {key} does not apply to a {kind} probe")
            value = options[key]
            if isinstance(value, dict):
                if set(value) != set(SPLITS) or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                        for v in value.values()):
                    raise SpeechrankError(f"probe option {key}: a table needs positive train, "
                                          f"dev and test values, got {value!r}")
                changes[key] = {name: value[name] for name in SPLITS}
                continue
            half = value / 2 if isinstance(value, float) else value // 2
            changes[key] = {"train": value, "dev": half, "test": half}
    return dataclasses.replace(config, **changes)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """What a sweep measures (parsed from the TOML file; see the module docstring)."""

    rank_data: str | None
    rank_options: dict[str, Any]
    probes: tuple[ProbeSpec, ...]
    seed: int = 0
    batch_seconds: float = DEFAULT_BATCH_SECONDS
    max_seconds: float | None = None
    cache_dir: str | None = None
    memo_gb: float = DEFAULT_MEMO_BYTES / 1024**3
    fit_workers: int = 1

    def new_memo(self) -> FrameMemo | None:
        """A fresh frame memo for one checkpoint's units (``None`` when ``memo_gb`` is 0)."""
        return FrameMemo(int(self.memo_gb * 1024**3)) if self.memo_gb > 0 else None

    def run_options(self) -> RunOptions:
        """The ``[options]`` section as the shared :class:`~speechrank.options.RunOptions`
        (a ``[rank]`` section may override its subset size, crop and frame cap)."""
        return RunOptions(seed=self.seed, batch_seconds=self.batch_seconds,
                          crop_seconds=self.max_seconds)

    @classmethod
    def from_toml(cls, path: str | Path) -> SweepConfig:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise SpeechrankError(f"sweep config not found: {path}") from err
        except tomllib.TOMLDecodeError as err:
            raise SpeechrankError(f"{path}: not valid TOML ({err})") from err
        return cls.from_dict(raw, base=path.parent)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base: Path | None = None) -> SweepConfig:
        base = base or Path(".")
        known = {"rank", "probe", "options"}
        unknown = set(raw) - known
        if unknown:
            raise SpeechrankError(f"sweep config: unknown section(s) {sorted(unknown)}; "
                                  f"expected {sorted(known)}")
        rank = dict(raw.get("rank", {}))
        rank_data = rank.pop("data", None)
        allowed_rank = {"num_utterances", "max_seconds", "poolings", "metrics", "layers",
                        "max_frames", "n_clusters", "protocol", "total_seconds"}  # issue 14
        bad = set(rank) - allowed_rank
        if bad:
            raise SpeechrankError(f"sweep config [rank]: unknown key(s) {sorted(bad)}")
        probes = []
        names: set[str] = set()
        for i, entry in enumerate(raw.get("probe", [])):
            missing = {"task", "data"} - set(entry)
            if missing:
                raise SpeechrankError(f"sweep config [[probe]] #{i + 1}: missing "
                                      f"{sorted(missing)}")
            name = str(entry.get("name", entry["task"]))
            if name in names:
                raise SpeechrankError(f"sweep config: probe name '{name}' used twice")
            names.add(name)
            domain = str(entry.get("domain", "in"))
            unknown_keys = set(entry) - {"name", "task", "data", "domain", *PROBE_OPTIONS}
            if unknown_keys:
                raise SpeechrankError(f"sweep config [[probe]] '{name}': unknown key(s) "
                                      f"{sorted(unknown_keys)}")
            options = tuple((key, entry[key]) for key in PROBE_OPTIONS if key in entry)
            probes.append(ProbeSpec(name=name, task=str(entry["task"]),
                                    data=_resolve_data(str(entry["data"]), base), domain=domain,
                                    options=options))
        options = dict(raw.get("options", {}))
        unknown_options = set(options) - {"seed", "batch_seconds", "max_seconds", "cache_dir",
                                          "memo_gb", "fit_workers"}
        if unknown_options:
            raise SpeechrankError(f"sweep config [options]: unknown key(s) "
                                  f"{sorted(unknown_options)}")
        memo_gb = float(options.get("memo_gb", DEFAULT_MEMO_BYTES / 1024**3))
        if not memo_gb >= 0:
            raise SpeechrankError(f"sweep config [options]: memo_gb must be >= 0, got {memo_gb}")
        fit_workers = options.get("fit_workers", 1)
        if isinstance(fit_workers, bool) or not isinstance(fit_workers, int) or fit_workers < 1:
            raise SpeechrankError(f"sweep config [options]: fit_workers must be an integer >= 1, "
                                  f"got {fit_workers!r}")
        if rank_data is None and not probes:
            raise SpeechrankError("sweep config names neither [rank] data nor any [[probe]]")
        return cls(rank_data=_resolve_data(rank_data, base) if rank_data else None,
                   rank_options=rank, probes=tuple(probes),
                   seed=int(options.get("seed", 0)),
                   batch_seconds=float(options.get("batch_seconds", DEFAULT_BATCH_SECONDS)),
                   max_seconds=options.get("max_seconds"),
                   cache_dir=options.get("cache_dir"), memo_gb=memo_gb,
                   fit_workers=fit_workers)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _resolve_data(spec: str, base: Path) -> str:
    """Make a relative DATA path in a config file relative to that file."""
    fmt, sep, rest = spec.partition(":")
    if sep and re.fullmatch(r"[a-z0-9_]+", fmt) and len(fmt) > 1:
        path = Path(rest)
        return f"{fmt}:{path if path.is_absolute() else (base / path)}"
    path = Path(spec)
    return str(path if path.is_absolute() else base / path)


_STEP_IN_NAME = re.compile(r"(\d+)(?!.*\d)")


def _checkpoint_step(path: Path) -> int | None:
    """The training step of a checkpoint directory, from its own files or its name."""
    for name, key in (("trainer.json", "step"), ("trainer_state.json", "global_step")):
        file = path / name
        if file.is_file():
            try:
                value = json.loads(file.read_text(encoding="utf-8")).get(key)
            except (OSError, json.JSONDecodeError):
                value = None
            if isinstance(value, int):
                return value
    match = _STEP_IN_NAME.search(path.name)
    return int(match.group(1)) if match else None


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def find_checkpoints(spec: str | Path) -> list[Checkpoint]:
    """The checkpoints of a series, ordered by training step.

    ``spec`` is a directory of checkpoint directories (those of ``speechrank pretrain``, or
    Hugging Face model directories such as ``checkpoint-500``), a single model directory, or a
    text file listing one model per line (``PATH`` or ``PATH STEP``; ``#`` starts a comment;
    a ``random:NAME`` spec is allowed and counts as step 0 unless a step is given).
    """
    path = Path(spec)
    found: list[Checkpoint] = []
    if path.is_file():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) > 2:
                raise SpeechrankError(f"{path}:{lineno}: expected 'PATH [STEP]'")
            target = parts[0]
            step: int | None
            if len(parts) == 2:
                try:
                    step = int(parts[1])
                except ValueError as err:
                    raise SpeechrankError(f"{path}:{lineno}: step must be an integer") from err
            else:
                step = 0 if target.startswith("random:") else None
            if not target.startswith("random:"):
                resolved = Path(target) if Path(target).is_absolute() else path.parent / target
                if not resolved.is_dir():
                    raise SpeechrankError(f"{path}:{lineno}: no model directory {resolved}")
                if step is None:
                    step = _checkpoint_step(resolved)
                target = str(resolved)
            found.append(Checkpoint(path=target, name=Path(target).name or target, step=step))
    elif path.is_dir():
        if _is_model_dir(path):
            found.append(Checkpoint(str(path), path.name, _checkpoint_step(path)))
        else:
            # Hidden directories hold unfinished work (pretrain writes into .partial/).
            for child in sorted(p for p in path.iterdir()
                                if p.is_dir() and not p.name.startswith(".")):
                if _is_model_dir(child):
                    found.append(Checkpoint(str(child), child.name, _checkpoint_step(child)))
    else:
        raise SpeechrankError(f"checkpoints not found: {spec}")
    if not found:
        raise SpeechrankError(f"no checkpoints in {spec} (expected directories with config.json)")
    return sorted(found, key=lambda c: (c.step is None, c.step or 0, c.name))


def run_name(checkpoints: Sequence[Checkpoint], spec: str | Path) -> str:
    """The run a series belongs to: the directory holding the checkpoints."""
    path = Path(spec)
    if path.is_dir() and not _is_model_dir(path):
        return path.resolve().name
    return Path(checkpoints[0].path).resolve().parent.name if checkpoints else str(spec)


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


def sweep(checkpoints_spec: str | Path, config: SweepConfig | str | Path, store_path: str | Path,
          *, device: str = "cpu", progress: ProgressArg = None,
          log: Callable[[str], Any] | None = None) -> SweepSummary:
    """Measure every checkpoint of a series into ``store_path`` (resumable).

    Args:
        checkpoints_spec: see :func:`find_checkpoints`.
        config: a :class:`SweepConfig` or the path of its TOML file.
        store_path: the SQLite store; created when missing, reused when present.
        device: ``cpu`` or ``cuda``.
        progress: a :class:`~speechrank.progress.Progress` for the passes (its ``log``
            receives one line per unit of work unless ``log`` is given).
        log: called with one line per unit of work.
    """
    from speechrank.encoders import load_encoder
    from speechrank.store import ResultStore

    started = time.perf_counter()
    cfg = config if isinstance(config, SweepConfig) else SweepConfig.from_toml(config)
    checkpoints = find_checkpoints(checkpoints_spec)
    run = run_name(checkpoints, checkpoints_spec)
    report = as_progress(progress)
    say = log or report.log
    store = ResultStore(store_path)
    store.set_meta("sweep_config", cfg.to_dict())
    store.set_meta("run", run)
    done = reused = rows_written = 0
    skipped: dict[str, int] = {}
    for checkpoint in checkpoints:
        units = plan_units([checkpoint], cfg, run)
        todo = [unit for unit in units if not store.is_done(unit.key)]
        reused += len(units) - len(todo)
        if not todo:
            say(f"{checkpoint.name}: all {len(units)} units already in the store")
            continue
        encoder = load_encoder(checkpoint.path, device=device)
        memo = cfg.new_memo()
        for unit in todo:
            unit_started = time.perf_counter()
            rows, unit_skipped = compute_unit(unit, cfg, encoder, run=run, progress=report,
                                              memo=memo)
            merge_skip_counts(skipped, unit_skipped)
            commit_unit(store, unit, rows)
            done += 1
            rows_written += len(rows)
            say(unit_line(unit, len(rows), time.perf_counter() - unit_started))
        if memo is not None and memo.hits:
            say(f"{checkpoint.name}: {memo.misses} utterances encoded, {memo.hits} replayed "
                f"from memory ({memo.replayed_seconds:.0f} s of audio not encoded again)"
                + (f", {memo.fits_reused} layer fits reused" if memo.fits_reused else ""))
        del memo
    store.close()
    return SweepSummary(store=str(store_path), checkpoints=len(checkpoints), units_done=done,
                        units_reused=reused, rows_written=rows_written,
                        wall_seconds=round(time.perf_counter() - started, 3), skipped=skipped)


@dataclasses.dataclass(frozen=True)
class SweepUnit:
    """One unit of a sweep: checkpoint x rank data, or checkpoint x probe task.

    ``key`` names the unit in the store (``RUN|CHECKPOINT|rank|DATA`` or
    ``RUN|CHECKPOINT|probe|NAME``); a unit is computed whole and committed in one transaction.
    Plain data, so it travels to a Ray worker as it is (see :mod:`speechrank.sweep_ray`).
    """

    key: str
    kind: Literal["rank", "probe"]
    checkpoint: Checkpoint
    probe: ProbeSpec | None = None


def plan_units(checkpoints: Sequence[Checkpoint], cfg: SweepConfig, run: str) -> list[SweepUnit]:
    """Every unit of a sweep, checkpoint by checkpoint (rank first, then the probes in order)."""
    units: list[SweepUnit] = []
    for checkpoint in checkpoints:
        if cfg.rank_data:
            units.append(SweepUnit(f"{run}|{checkpoint.name}|rank|{cfg.rank_data}", "rank",
                                   checkpoint))
        for probe in cfg.probes:
            units.append(SweepUnit(f"{run}|{checkpoint.name}|probe|{probe.name}", "probe",
                                   checkpoint, probe))
    return units


def compute_unit(unit: SweepUnit, cfg: SweepConfig, encoder: Any, *, run: str,
                 progress: ProgressArg = None, memo: FrameMemo | None = None
                 ) -> tuple[list[Any], dict[str, int]]:
    """The rows of one unit (``model`` set to the run) and its skipped files by reason.

    The one computation of a unit, called by the serial sweep and by the Ray task alike, so
    both write the same rows (to float32 rounding where a ``memo`` replays frames).
    ``encoder`` is the unit's checkpoint, already loaded; ``memo`` holds frames earlier units
    of the same checkpoint computed.
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
                           memo=memo)
    else:
        raise SpeechrankError(f"sweep unit {unit.key}: a probe unit without its probe")
    return [dataclasses.replace(row, model=run) for row in rows], skipped


def commit_unit(store: Any, unit: SweepUnit, rows: Sequence[Any]) -> None:
    """Write one unit's rows and its done-mark in one transaction of ``store``."""
    with store.unit(unit.key, meta={"checkpoint": unit.checkpoint.name,
                                    "step": unit.checkpoint.step}) as work:
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
    options = dict(cfg.rank_options)
    result = run_rank(
        encoder, cfg.rank_data, RunOptions.from_mapping(options, base=cfg.run_options()),
        layers=options.get("layers"), poolings=options.get("poolings"),
        metrics=options.get("metrics"), checkpoint=checkpoint.name, step=checkpoint.step,
        n_clusters=int(options.get("n_clusters", 1024)),  # issue 14
        protocol=options.get("protocol"), total_seconds=options.get("total_seconds"),
        memo=memo, progress=progress)
    _count_skips(skipped, result.info["skipped"])
    return result.rows


def _probe_unit(run_probe: Callable[..., Any], encoder: Any, *, cfg: SweepConfig,
                probe: ProbeSpec, checkpoint: Checkpoint, skipped: dict[str, int],
                progress: Progress, memo: FrameMemo | None) -> list[Any]:
    from speechrank.audio import load_dataset
    from speechrank.probes import resolve_task

    dataset = load_dataset(probe.data)
    config = probe_recipe(resolve_task(probe.task, dataset).kind, dict(probe.options))
    result = run_probe(encoder, dataset, probe.task, cfg.run_options(), config=config,
                       cache_dir=cfg.cache_dir, memo=memo, fit_workers=cfg.fit_workers,
                       progress=progress)
    _count_skips(skipped, result.info.get("skipped", []))
    return [dataclasses.replace(row, checkpoint=checkpoint.name,
                                step=checkpoint.step, task=probe.name, domain=probe.domain,
                                conventions={**row.conventions, "task_kind": probe.task})
            for row in result.rows]
