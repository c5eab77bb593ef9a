"""The ``speechrank`` command line: a thin layer over the Python API.

See docs/design.md, "Commands, MODEL and DATA".

Every command parses its options, calls one API function, prints a table and optionally writes
``--json``. A :class:`~speechrank.errors.SpeechrankError` (a user mistake: a missing path, an
unknown format, a bad option) becomes one line on stderr and exit code 2; nothing a user can
cause prints a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from speechrank.errors import SpeechrankError
from speechrank.options import (
    DEFAULT_BATCH_SECONDS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_N_CLUSTERS,
    DEFAULT_NUM_UTTERANCES,
)
from speechrank.results import ResultRow, dumps_json, layer_sort_key
from speechrank.tabular import TextTable

app = typer.Typer(
    name="speechrank",
    help="Label-free assessment of self-supervised speech encoders by embedding rank.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console()


@app.callback()
def _root() -> None:
    """Label-free assessment of self-supervised speech encoders by embedding rank."""
err_console = Console(stderr=True)


# ----------------------------------------------------------------------------- helpers

def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` as strict JSON, creating the parent directory."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps_json(payload) + "\n", encoding="utf-8")
    except OSError as err:
        raise SpeechrankError(f"cannot write {path}: {err.strerror}") from err
    err_console.print(f"wrote {path}")


class RichProgress:
    """The :class:`~speechrank.progress.Progress` protocol drawn as rich bars on stderr (one
    bar per stage, gone when the stage ends); log lines are printed as plain text. Nothing is
    drawn when disabled or when stderr is not a terminal, but log lines still print."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and err_console.is_terminal
        self._bar: Progress | None = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        if self.enabled:
            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), AmountColumn(), SpeedColumn(),
                TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=err_console, transient=True)
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        self._tasks.clear()

    def start(self, stage: str, total: float | None, unit: str) -> None:
        if self._bar is None:
            return
        if stage in self._tasks:
            self._bar.remove_task(self._tasks.pop(stage))
        self._tasks[stage] = self._bar.add_task(stage, total=total, unit=unit, note="")

    def advance(self, stage: str, amount: float, note: str = "") -> None:
        if self._bar is not None and stage in self._tasks:
            self._bar.update(self._tasks[stage], advance=amount, note=note)

    def end(self, stage: str) -> None:
        if self._bar is not None and stage in self._tasks:
            self._bar.remove_task(self._tasks.pop(stage))

    def log(self, message: str) -> None:
        err_console.print(message, markup=False, highlight=False)


class AmountColumn(ProgressColumn):
    """Done out of the total (once known), in the stage's unit."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        total = "?" if task.total is None else f"{task.total:.0f}"
        return Text(f"{task.completed:.0f}/{total} {unit}")


class SpeedColumn(ProgressColumn):
    """Audio seconds per wall-clock second (the real-time factor) for audio stages."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        if speed is None or task.fields.get("unit") != "s audio":
            return Text("")
        return Text(f"{speed:.1f}x real time", style="cyan")


def to_rich(table: TextTable) -> Table:
    """A library :class:`~speechrank.tabular.TextTable` as a rich table (texts never read as
    markup)."""
    out = Table(title=Text(table.title), caption=Text(table.caption) if table.caption else None,
                title_justify="left",
                caption_justify="left")
    for column in table.columns:
        out.add_column(Text(column.header), justify=column.justify, no_wrap=column.no_wrap,
                       overflow=column.overflow or "ellipsis", min_width=column.min_width)
    for row in table.rows:
        out.add_row(*(Text.assemble(*((text, style) for text, style in cell.parts))
                      for cell in row))
    return out


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "nan"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"


def rows_tables(rows: Sequence[ResultRow], title: str, *,
                group_key: str = "pooling") -> list[Table]:
    """Layer x metric tables of tidy rows, one per pooling (or per split: ``group_key``).

    One table per group keeps each about 80 columns wide, so it stays readable in a log or a
    narrow terminal; metric names wrap at their underscores. A probe score is followed by its
    standard error (``0.611±0.046``; see :mod:`speechrank.probes.stderr`).
    """
    from speechrank.analysis.flags import legend, marker

    groups: dict[str, list[str]] = {}
    cells: dict[tuple[str, str, str], str] = {}
    marks: dict[tuple[str, str, str], str] = {}  # * not converged, ! dominated
    for row in rows:
        group = str(getattr(row, group_key))
        metrics = groups.setdefault(group, [])
        if row.metric not in metrics:
            metrics.append(row.metric)
        marks[(group, row.layer, row.metric)] = marker(row)
        text = _fmt(row.value) + marks[(group, row.layer, row.metric)]
        se = row.conventions.get("standard_error")
        if isinstance(se, float) and se == se:  # a probe score's standard error
            text += f"±{se:.3f}"
        cells[(group, row.layer, row.metric)] = text
    tables = []
    for group, metrics in groups.items():
        layers = sorted({layer for g, layer, _ in cells if g == group}, key=layer_sort_key)
        caption = legend(marks.get((group, layer, m), "") for layer in layers
                         for m in metrics)
        table = Table(title=f"{title}\n{group_key} {group}", show_lines=False,
                      caption=caption or None)
        table.add_column("layer", justify="right")
        for metric in metrics:
            table.add_column(metric.replace("_", "\n"), justify="right")
        for layer in layers:
            table.add_row(layer, *(cells.get((group, layer, m), "-") for m in metrics))
        tables.append(table)
    return tables


def report_skips(skipped: list[dict[str, str]], limit: int = 10) -> None:
    if not skipped:
        return
    err_console.print(f"[yellow]{len(skipped)} file(s) skipped:[/yellow]")
    for item in skipped[:limit]:
        detail = f" ({item['detail']})" if item.get("detail") else ""
        err_console.print(f"  {item['path']}: {item['reason']}{detail}", markup=False)
    if len(skipped) > limit:
        err_console.print(f"  ... and {len(skipped) - limit} more (all listed in --json)")


def _threads() -> None:
    """Size torch's CPU thread pool to the cores this process may use."""
    from speechrank.encoders import configure_cpu_threads

    configure_cpu_threads()


def _join_job(device: str) -> tuple[Any, str]:
    """Under torchrun, join the process group (see speechrank.distributed).

    Returns the job (``None`` in one process) and the device this process encodes on.
    """
    from speechrank import distributed

    job = distributed.setup(device)
    return job, job.device if job is not None else device


def _is_main(job: Any) -> bool:
    return job is None or job.is_main


def _leave_job(job: Any) -> bool:
    """Leave the process group after a command's work; whether this process prints and writes
    the outputs (only rank 0 does)."""
    from speechrank import distributed

    distributed.teardown()
    return _is_main(job)


# ----------------------------------------------------------------------------- rank

JsonOpt = Annotated[Path | None, typer.Option(
    "--json", dir_okay=False,  # refused before the work, not after it
    help="Write the machine-readable result (tidy rows plus what was measured).")]


@app.command()
def rank(
    model: Annotated[str, typer.Argument(help="HF model dir or cached hub id, a `speechrank "
                                         "pretrain` checkpoint, or random:NAME.")],
    data: Annotated[str, typer.Argument(help="Audio directory, manifest (.csv/.tsv/.jsonl) "
                                        "or FORMAT:PATH.")],
    layers: Annotated[str | None, typer.Option(help="Layers, e.g. all, 0,3,6, 2-5, cnn.")] = None,
    pooling: Annotated[str | None, typer.Option(help="Poolings: sum (RankMe-t), mean, frames "
                                                "(default all three).")] = None,
    metrics: Annotated[str | None, typer.Option(help="Metrics (comma list; default all "
                                                "spectral metrics; kmeans_inertia and "
                                                "davies_bouldin opt in).")] = None,
    n_clusters: Annotated[int, typer.Option(help="k of the k-means cluster metrics.")] = (
        DEFAULT_N_CLUSTERS),
    convergence: Annotated[bool, typer.Option(help="Values at nested seeded prefixes N/8, "
                                              "N/4, N/2 (not converged past 2 %).")] = True,
    protocol: Annotated[str | None, typer.Option(help="A published protocol: aldeneh2025 or "
                                                 "whetten2025; explicit options win.")] = None,
    total_seconds: Annotated[float | None, typer.Option(help="Seeded draw of whole files up "
                                                        "to this much audio.")] = None,
    num_utterances: Annotated[int, typer.Option(help="Seeded random subset size (the "
                                                "paper used 10,000).")] = DEFAULT_NUM_UTTERANCES,
    max_frames: Annotated[int, typer.Option(help="Row cap for the frames pooling.")] = (
        DEFAULT_MAX_FRAMES),
    max_seconds: Annotated[float | None, typer.Option(help="Crop long files to this many "
                                                      "seconds.")] = None,
    batch_seconds: Annotated[float, typer.Option(help="Padded audio per batch.")] = (
        DEFAULT_BATCH_SECONDS),
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seeds the subset and frame sampling.")] = 0,
    strict: Annotated[bool, typer.Option(help="Fail on the first unusable file.")] = False,
    json_path: JsonOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Label-free metrics (RankMe-t and relatives) for every layer, in one pass."""
    from speechrank.rank import run_rank
    from speechrank.spec import MeasureSpec

    _threads()
    spec = MeasureSpec(metrics=metrics, poolings=pooling, layers=layers,
                       num_utterances=num_utterances, total_seconds=total_seconds,
                       crop_seconds=max_seconds, max_frames=max_frames,
                       batch_seconds=batch_seconds, seed=seed, strict=strict,
                       protocol=protocol, n_clusters=n_clusters, convergence=convergence)
    job, device = _join_job(device)
    with RichProgress(enabled=not quiet and _is_main(job)) as progress:
        result = run_rank(model, data, spec, device=device, progress=progress)
    if not _leave_job(job):
        return
    counts = result.info["counts"]
    title = (f"{result.info['model']} on {result.info['data']['spec']}: "
             f"{counts['utterances_used']} utterances, {counts['audio_seconds']:.0f} s audio")
    for table in rows_tables(result.rows, title):
        console.print(table)
    report_skips(result.info["skipped"])
    err_console.print(f"{result.info['wall_seconds']:.1f} s wall time")
    write_json(json_path, result.to_json())


# ----------------------------------------------------------------------------- probe

@app.command()
def probe(
    model: Annotated[str, typer.Argument(help="HF model dir or cached hub id, a `speechrank "
                                         "pretrain` checkpoint, or random:NAME.")],
    data: Annotated[str, typer.Argument(help="Labelled data: a manifest or FORMAT:PATH.")],
    task: Annotated[str, typer.Option(help="ks, sid, er, pr or label:COLUMN.")],
    layers: Annotated[str | None, typer.Option(help="Layers, e.g. all, 0,3,6, 2-5.")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Crop long files to this many "
                                                      "seconds.")] = None,
    batch_seconds: Annotated[float, typer.Option(help="Padded audio per batch.")] = (
        DEFAULT_BATCH_SECONDS),
    cache_dir: Annotated[Path | None, typer.Option(help="Feature cache (default "
                                                   "$SPEECHRANK_CACHE or "
                                                   "~/.cache/speechrank/features).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not keep features on "
                                           "disk.")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seeds drawn splits, caps and the CTC "
                                      "probe.")] = 0,
    strict: Annotated[bool, typer.Option(help="Fail on the first unusable file.")] = False,
    fit_workers: Annotated[int, typer.Option(min=1, help="Layers fitted at once in worker "
                                             "processes (logistic probes, sklearn "
                                             "solver).")] = 1,
    solver: Annotated[str | None, typer.Option(help="Logistic probes: torch (every layer "
                                               "and C in one batch, on --device) or sklearn "
                                               "(one fit at a time, the reference). "
                                               "Default: the recipe's.")] = None,
    recipe: Annotated[Path | None, typer.Option(help="TOML file of probe recipe keys (c_grid, "
                                                "max_iter, max_frames ...; those of a "
                                                "sweep's [[probe]] table).")] = None,
    json_path: JsonOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Downstream probes (linear, on frozen features) of every layer."""
    from speechrank.options import RunOptions
    from speechrank.probes import ProbeRun, run_probe
    from speechrank.probes.recipes import read_recipe

    _threads()
    options = RunOptions(crop_seconds=max_seconds, batch_seconds=batch_seconds, seed=seed)
    table = read_recipe(recipe) if recipe is not None else None
    if solver is not None:  # checked with the recipe's keys (one line when wrong)
        table = {**(table or {}), "solver": solver}
    job, device = _join_job(device)
    with RichProgress(enabled=not quiet and _is_main(job)) as progress:
        run = ProbeRun(layers=layers, config=table, cache_dir=cache_dir,
                       use_cache=not no_cache, strict=strict, device=device,
                       fit_workers=fit_workers)
        result = run_probe(model, data, task, options, run=run, progress=progress)
    if not _leave_job(job):
        return
    info = result.info
    title = f"{task} probe of {model} on {data}"
    for table in rows_tables(result.rows, title, group_key="split"):
        console.print(table)
    test_chance = (info.get("chance") or {}).get("test")
    if test_chance:
        console.print(f"chance on test: {test_chance['majority']:.3f} (majority class), "
                      f"{test_chance['uniform']:.3f} (uniform)", markup=False,
                      highlight=False)
    report_skips(info.get("skipped", []))
    write_json(json_path, result.to_json())


# ----------------------------------------------------------------------------- corpus

def _parse_snr(value: str) -> float | tuple[float, float] | None:
    """``clean``/``none``, a number, or ``LOW:HIGH`` in dB."""
    text = value.strip().lower()
    if text in {"clean", "none", ""}:
        return None
    try:
        if ":" in text:
            low, high = (float(part) for part in text.split(":", 1))
            return (low, high)
        return float(text)
    except ValueError as err:
        raise SpeechrankError(f"--snr-db: expected clean, a number or LOW:HIGH, got "
                              f"'{value}'") from err


@app.command()
def corpus(
    out: Annotated[Path, typer.Argument(help="Directory for the WAVs and JSONL manifests.")],
    minutes: Annotated[float, typer.Option(help="Target amount of audio.")] = 30.0,
    languages: Annotated[str, typer.Option(help="Comma list; the first is the main "
                                           "language, the others out-of-domain.")] = "en,de",
    snr_db: Annotated[str | None, typer.Option(help="Additive noise: clean, a number or "
                                               "LOW:HIGH dB (default: the corpus "
                                               "default).")] = None,
    pretrain_snr_db: Annotated[str, typer.Option(help="Noise of the pretraining clips: clean "
                                                 "(the default recipe adds its own), same "
                                                 "(as --snr-db), a number or LOW:HIGH "
                                                 "dB.")] = "clean",
    noise: Annotated[str, typer.Option(help="white or pink.")] = "white",
    probe_splits: Annotated[str, typer.Option(help="TRAIN:DEV:TEST weights of the probe "
                                              "clips (the demo uses 2:1:3).")] = "3:1:1",
    seed: Annotated[int, typer.Option(help="Same seed, same corpus.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier corpus in OUT.")] = False,
    json_path: JsonOpt = None,
) -> None:
    """Synthesise the built-in labelled speech corpus with eSpeak NG (offline)."""
    from speechrank.audio.synthetic import CorpusSpec, make_corpus

    options: dict[str, Any] = {"minutes": minutes, "languages": tuple(languages.split(",")),
                               "seed": seed, "noise": noise}
    if snr_db is not None:
        options["snr_db"] = _parse_snr(snr_db)
    options["pretrain_snr_db"] = ("same" if pretrain_snr_db.strip().lower() == "same"
                                  else _parse_snr(pretrain_snr_db))
    try:
        options["probe_splits"] = tuple(int(part) for part in probe_splits.split(":"))
    except ValueError as err:
        raise SpeechrankError(f"--probe-splits: expected TRAIN:DEV:TEST integers, got "
                              f"'{probe_splits}'") from err
    with RichProgress() as progress:
        summary = make_corpus(out, CorpusSpec(**options), overwrite=overwrite,
                              progress=progress)
    table = Table(title=f"synthetic corpus in {summary.out}")
    for column in ("manifest", "clips", "minutes", "speakers"):
        table.add_column(column, justify="left" if column == "manifest" else "right")
    for name in summary.manifests:
        table.add_row(summary.manifests[name], str(sum(summary.counts[name].values())),
                      f"{summary.seconds[name] / 60:.1f}", str(len(summary.speakers[name])))
    console.print(table)
    console.print(f"{summary.total_seconds / 60:.1f} min of audio, {summary.n_speakers} "
                  f"speakers, in {summary.wall_s:.1f} s ({summary.realtime_factor:.0f}x real "
                  f"time, {summary.workers} worker(s))")
    write_json(json_path, {"command": "corpus", **summary.to_dict()})


# ----------------------------------------------------------------------------- pretrain

@app.command()
def pretrain(
    data: Annotated[str, typer.Argument(help="Training audio: synthetic:DIR, a directory, a "
                                        "manifest or FORMAT:PATH.")],
    out: Annotated[Path, typer.Argument(help="Run directory for the checkpoints.")],
    minutes: Annotated[float | None, typer.Option(help="Wall-time budget.")] = None,
    steps: Annotated[int | None, typer.Option(help="Total steps to reach.")] = None,
    save_every: Annotated[int, typer.Option(help="Checkpoint interval in steps.")] = 100,
    size: Annotated[str | None, typer.Option(help="Model size (default tiny).")] = None,
    seed: Annotated[int | None, typer.Option(help="Same seed, same run (CPU).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the newest checkpoint.")] = False,
    batch_size: Annotated[int | None, typer.Option(help="Crops per step.")] = None,
    recipe: Annotated[Path | None, typer.Option(help="A TOML file of recipe fields "
                                                "(targets, learning_rate, mask_prob ...; "
                                                "see the README); the options above "
                                                "win.")] = None,
    monitor_data: Annotated[str, typer.Option(help="Held-out DATA whose RankMe-t per layer "
                                              "is logged at every checkpoint; 'auto' = the "
                                              "test manifest of a synthetic corpus, 'none' "
                                              "= off.")] = "auto",
    monitor_protocol: Annotated[str | None, typer.Option(help="The monitor follows a "
                                                         "published protocol: aldeneh2025 "
                                                         "or whetten2025.")] = None,
    stop_on_collapse: Annotated[bool, typer.Option(help="End the run at the checkpoint where "
                                                   "a layer has been collapsed (RankMe-t "
                                                   "below 2 or half its best) at two "
                                                   "checks in a row.")] = False,
    json_path: JsonOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Pretrain the built-in small encoder on CPU, saving checkpoints.

    The default recipe: HuBERT-style targets (k-means, K = 50, on the audio's own log-mel
    frames), denoising (noise at 0-20 dB SNR on the input, clean targets), 200 ms masks,
    AdamW to a peak learning rate of 2e-3 with linear decay; --recipe FILE changes any of it
    (BEST-RQ targets: targets = "bestrq").
    """
    _threads()
    from speechrank.monitor.pretrain import pretrain_with_monitor
    from speechrank.pretrain import TrainRun
    from speechrank.pretrain.recipe import load_recipe

    if minutes is None and steps is None:
        raise SpeechrankError("give --minutes or --steps (or both)")
    config = load_recipe(recipe) if recipe is not None else None
    plan = TrainRun(minutes=minutes, steps=steps, save_every=save_every, resume=resume)
    overrides = {k: v for k, v in {"size": size, "seed": seed, "batch_size": batch_size}.items()
                 if v is not None}
    with RichProgress(enabled=not quiet) as progress:
        summary, monitor = pretrain_with_monitor(
            data, out, monitor_data=monitor_data, monitor_protocol=monitor_protocol,
            stop_on_collapse=stop_on_collapse, run=plan, config=config, overrides=overrides,
            progress=progress)
    console.print(f"steps {summary.start_step} -> {summary.final_step} "
                  f"({summary.stopped_by}), {summary.steps_per_second:.2f} steps/s, "
                  f"{summary.audio_seconds_per_second:.0f} s audio/s")
    if summary.stop_reason:
        console.print(summary.stop_reason, markup=False, highlight=False)
    if summary.final_loss is not None:
        console.print(f"final loss {summary.final_loss:.3f}, masked-prediction accuracy "
                      f"{summary.final_accuracy:.3f}")
    console.print(f"{len(summary.checkpoints)} checkpoint(s) in {summary.out_dir}")
    if monitor is not None and monitor.last:
        values = ", ".join(f"{key.split('/')[-1]} {value:.1f}"
                           for key, value in monitor.last.values.items()
                           if key.startswith("rankme_t"))
        console.print(f"RankMe-t at the last checkpoint: {values} (all checkpoints in "
                      f"{summary.out_dir}/train_log.jsonl)")
    write_json(json_path, {"command": "pretrain", **summary.to_dict()})


# ----------------------------------------------------------------------------- sweep

@app.command()
def sweep(
    runs: Annotated[list[str], typer.Argument(
        metavar="RUN...", help="One or more runs, each its own model in the store: a run "
        "directory (speechrank pretrain, Hugging Face Trainer, fairseq, ...), one checkpoint "
        "(directory or file), or a list file (PATH [STEP] per line).")],
    config: Annotated[Path, typer.Option("--config", help="The sweep's TOML file (see the "
                                         "README).")],
    store: Annotated[Path, typer.Option("--store", help="SQLite results store (created or "
                                        "resumed).")],
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    export_csv: Annotated[Path | None, typer.Option("--csv", help="Also export the store "
                                                    "as CSV.")] = None,
    export_parquet: Annotated[Path | None, typer.Option("--parquet", help="Also export the "
                                                        "store as Parquet.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    ray: Annotated[str | None, typer.Option("--ray", help="Run each checkpoint's units as one "
                                            "Ray task: local (a cluster on this machine), auto "
                                            "(the one `ray start` runs here) or a cluster "
                                            "ADDRESS.")] = None,
    cpus_per_unit: Annotated[float, typer.Option(help="With --ray: CPUs each task (one "
                                                 "checkpoint's units) declares (and its torch "
                                                 "threads).")] = 1.0,
    gpus_per_unit: Annotated[float, typer.Option(help="With --ray: GPUs each task "
                                                 "declares.")] = 0.0,
    workers: Annotated[str | None, typer.Option("--workers", help="Checkpoints swept side by "
                                                "side in worker processes: auto (one per core "
                                                "when there are several checkpoints) or N; 1 "
                                                "sweeps in this process. Default: the config's "
                                                "checkpoint_workers (auto).")] = None,
) -> None:
    """Rank and probes of every layer over the checkpoints of one or more runs (resumable)."""
    _threads()
    chosen_workers = _parse_workers(workers)
    if ray is not None and chosen_workers is not None:
        raise SpeechrankError("--workers does not apply with --ray (Ray places one task per "
                              "checkpoint; see --cpus-per-unit)")
    from speechrank.store import ResultStore
    from speechrank.sweep import sweep as run_sweep

    with RichProgress(enabled=not quiet) as progress:
        if ray is not None:
            from speechrank.sweep.ray_executor import RayExecutor, sweep_on_ray

            executor = RayExecutor(address=ray, device=device, cpus_per_unit=cpus_per_unit,
                                   gpus_per_unit=gpus_per_unit)
            summary = sweep_on_ray(runs, config, store, executor, progress=progress)
        else:
            summary = run_sweep(runs, config, store, device=device, workers=chosen_workers,
                                progress=progress)
    console.print(f"{summary.checkpoints} checkpoints of {len(summary.runs)} run(s) "
                  f"({', '.join(summary.runs)}): {summary.units_done} units computed, "
                  f"{summary.units_reused} reused, {summary.rows_written} rows written to "
                  f"{summary.store} in {summary.wall_seconds:.1f} s")
    if summary.skipped:
        console.print("skipped files by reason: " + ", ".join(
            f"{n} {reason}" for reason, n in sorted(summary.skipped.items())))
    if export_csv or export_parquet:
        with ResultStore(store, create=False) as opened:
            if export_csv:
                err_console.print(f"wrote {opened.to_csv(export_csv)}")
            if export_parquet:
                err_console.print(f"wrote {opened.to_parquet(export_parquet)}")


def _parse_workers(text: str | None) -> int | str | None:
    """``--workers``: ``auto``, a positive integer, or not given (``None``)."""
    if text is None or text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise SpeechrankError(f"--workers must be 'auto' or an integer >= 1, got {text!r}")
    return value


@app.command()
def correlate(
    store: Annotated[Path, typer.Argument(help="A results store written by sweep.")],
    metrics: Annotated[str | None, typer.Option(help="Label-free metrics to analyse (comma "
                                                "list; default all in the store).")] = None,
    probe_split: Annotated[str, typer.Option(help="Probe split whose scores are "
                                             "compared.")] = "test",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the confidence "
                                           "intervals.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seeds the bootstrap.")] = 0,
    detail: Annotated[bool, typer.Option(help="Also print per-layer and per-checkpoint "
                                         "tables.")] = True,
    across: Annotated[str, typer.Option(help="checkpoints: within each run, across its "
                                        "checkpoints and layers; runs: the store's runs "
                                        "compared at one step.")] = "checkpoints",
    step: Annotated[str | None, typer.Option(help="With --across runs: the training step to "
                                             "compare at (default: the last one every run "
                                             "has), or 'last' (each run's last).")] = None,
    json_path: JsonOpt = None,
) -> None:
    """Agreement between label-free metrics and probe scores, per layer and domain, beside the
    step and the loss; or, with --across runs, which run each signal would pick."""
    from speechrank.analysis import correlate as run_correlate
    from speechrank.analysis import render_tables
    from speechrank.analysis.options import AnalysisOptions
    from speechrank.store import ResultStore

    if across not in ("checkpoints", "runs"):
        raise SpeechrankError(f"--across must be checkpoints or runs, not {across!r}")
    if step is not None and across != "runs":
        raise SpeechrankError("--step needs --across runs")
    if not store.exists():
        raise SpeechrankError(f"store not found: {store}")
    options = AnalysisOptions(metrics=metrics.split(",") if metrics else None,
                              probe_split=probe_split, n_bootstrap=bootstrap, seed=seed)
    if across == "runs":
        from speechrank.analysis.across_runs import compare_runs
        from speechrank.analysis.tables import render_across_runs

        at: int | str | None = None
        if step is not None:
            if step != "last" and not step.lstrip("-").isdigit():
                raise SpeechrankError(f"--step must be a training step or 'last', not {step!r}")
            at = step if step == "last" else int(step)
        with ResultStore(store, create=False) as opened:
            result = compare_runs(opened, step=at, options=options)  # type: ignore[arg-type]
        for table in render_across_runs(result, detail=detail):
            console.print(to_rich(table))
        for note in result.notes:
            console.print(f"note: {note}", markup=False, highlight=False)
        write_json(json_path, {"command": "correlate", "across": "runs", "store": str(store),
                               **result.to_dict()})
        return
    with ResultStore(store, create=False) as opened:
        report = run_correlate(opened, options)
    for table in render_tables(report, detail=detail, width=console.width):
        console.print(to_rich(table))
    for note in report.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    write_json(json_path, {"command": "correlate", "across": "checkpoints",
                           "store": str(store), **report.to_dict()})


@app.command()
def report(
    store: Annotated[Path, typer.Argument(help="A results store written by sweep.")],
    out: Annotated[Path, typer.Argument(help="Directory for index.html and its images.")],
    title: Annotated[str, typer.Option(help="Page title.")] = "speechrank report",
    probe_split: Annotated[str, typer.Option(help="Probe split shown.")] = "test",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seeds the bootstrap.")] = 0,
) -> None:
    """A static HTML report with plots: rank and probes per layer and checkpoint.

    Reused as it is when OUT holds a report drawn from the same store content with the same
    options (see speechrank.report.inputs)."""
    from speechrank.report import write_report
    from speechrank.report.inputs import forget, is_current, remember, report_inputs
    from speechrank.store import ResultStore

    if not store.exists():
        raise SpeechrankError(f"store not found: {store}")
    options = {"title": title, "probe_split": probe_split, "n_bootstrap": bootstrap,
               "seed": seed}
    with ResultStore(store, create=False) as opened:
        inputs = report_inputs(opened, options)
    if is_current(out, inputs):
        console.print(f"report: {out / 'index.html'} (unchanged: drawn from this store's "
                      "content with these options)")
        return
    forget(out)
    page = write_report(store, out, title=title, probe_split=probe_split,
                        n_bootstrap=bootstrap, seed=seed)
    remember(out, inputs)
    console.print(f"report: {page}")


# ----------------------------------------------------------------------------- demo

@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output directory (reused when run "
                                      "again).")] = Path("speechrank-demo"),
    minutes: Annotated[float | None, typer.Option(help="Pretraining wall-time budget in "
                                                  "minutes (default: the recipe's).")] = None,
    corpus_minutes: Annotated[float | None, typer.Option(help="Synthetic audio to "
                                                         "make.")] = None,
    steps: Annotated[int | None, typer.Option(help="Pretraining steps (default: the "
                                              "recipe's).")] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same numbers.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Everything end to end on the built-in default: corpus, pretraining, sweep, report."""
    import dataclasses as dc

    from speechrank.demo import DemoSettings, headline_table, run_demo

    _threads()
    settings = DemoSettings(out=out, seed=seed)
    overrides = {"pretrain_minutes": minutes, "corpus_minutes": corpus_minutes,
                 "pretrain_steps": steps}
    settings = dc.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    with RichProgress(enabled=not quiet) as progress:
        summary = run_demo(settings, progress=progress)
    console.print(to_rich(headline_table(summary)))
    for sentence in summary.verdicts:
        console.print(sentence, markup=False, highlight=False)
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in summary.stages.items())
    console.print(f"time: {stages}" + (f" (reused: {', '.join(summary.reused)})"
                                       if summary.reused else ""))
    console.print(f"report: {summary.report}")


# ----------------------------------------------------------------------------- entry point

def _fail(message: str) -> None:
    """One line on stderr, never wrapped (rich would wrap long paths)."""
    sys.stderr.write(f"speechrank: {message}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (also used by the console script)."""
    try:
        app(args=list(argv) if argv is not None else None, standalone_mode=False)
    except SpeechrankError as err:
        _fail(f"error: {' '.join(str(err).split())}")
        return 2
    except typer.Exit as done:
        return int(getattr(done, "exit_code", 0) or 0)
    except typer.Abort:
        _fail("aborted")
        return 130
    except typer.TyperException as err:  # usage errors: unknown option, missing argument
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        _fail(f"error: {' '.join(message.split())}")
        return int(getattr(err, "exit_code", 2) or 2)
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
