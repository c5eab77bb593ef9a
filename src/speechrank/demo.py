"""``speechrank demo``: the paper's experiment end to end on the built-in default.

Synthetic corpus -> pretrain the small BEST-RQ encoder with checkpoints -> sweep (label-free
metrics of every layer plus keyword, speaker and phone probes, in-domain and out-of-domain)
-> correlate -> HTML report. Everything lands in one output directory, and a rerun with the
same directory reuses every finished stage (the corpus, the training run, the store's units).

The in-domain probes use the corpus's closed set of probe speakers (train/dev/test of the main
language). Two out-of-domain views:

- ``ks-unseen``: keyword probes trained on the probe speakers and tested on held-out voices
  (``test_unseen``): voices the probe never heard, where clean in-domain keywords are
  too easy to show what training adds;
- ``*-de``: speaker and phone probes on German, a language the encoder never heard.

The label-free metrics are measured on the probe speakers' utterances (they are unlabelled
for rank; the encoder never trained on them).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speechrank import jsonsafe
from speechrank.errors import SpeechrankError
from speechrank.options import DEFAULT_MAX_FRAMES
from speechrank.progress import ProgressArg, as_progress
from speechrank.tabular import TextTable

#: The demo report's title and bootstrap resamples.
DEMO_TITLE = "speechrank demo: does rank track the probes?"
DEMO_BOOTSTRAP = 1000

#: The demo's checkpoints: 12, dense early, where rank and the probes move fastest.
DEMO_SAVE_STEPS: tuple[int, ...] = (0, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500, 600)


def default_fit_workers() -> int:
    """Probe layers fitted at once: one per CPU core, at most the tiny encoder's 5 layers."""
    return max(1, min(5, os.cpu_count() or 1))


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """The demo's recipe: the default pretraining recipe (:class:`TrainConfig`, HuBERT-style
    denoising masked prediction) for 600 steps, checkpointed at :data:`DEMO_SAVE_STEPS`, on a
    60-minute corpus whose closed-set clips are split 2:1:3 (train:dev:test), so that the test
    scores rest on about 500 keyword clips and 600 phone-probe utterances."""

    out: Path = Path("speechrank-demo")
    corpus_minutes: float = 60.0
    probe_splits: tuple[int, int, int] = (2, 1, 3)
    pretrain_steps: int = 600
    pretrain_minutes: float | None = None
    save_steps: tuple[int, ...] = DEMO_SAVE_STEPS
    seed: int = 0
    rank_utterances: int = 1000
    max_frames: int = DEFAULT_MAX_FRAMES
    fit_workers: int = dataclasses.field(default_factory=default_fit_workers)
    #: checkpoints swept side by side in worker processes ("auto": one per core; each worker
    #: fits its probe layers in min(fit_workers, its threads) processes)
    checkpoint_workers: int | str = "auto"


@dataclasses.dataclass
class DemoSummary:
    out: str
    report: str
    store: str
    headline: list[dict[str, Any]]
    stages: dict[str, float]
    reused: list[str]
    #: did the probes improve over training? (:func:`speechrank.analysis.progress`)
    progress: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: per task, does RankMe-t tell more than the step and the loss? (one sentence each)
    verdicts: list[str] = dataclasses.field(default_factory=list)


#: The demo's frame phone probe: 2,500 training frames, a 2-point C grid and lbfgs capped at
#: 100 iterations, so that every layer of every checkpoint is probed within the demo's time
#: budget (the default recipe takes 20,000 frames, 5 values of C and up to 1,000 iterations),
#: and up to 10,000 test frames (scoring is cheap; the test score's standard error is what
#: limits the demo's claims). Measured on a demo checkpoint (4,000 frames): test frame
#: accuracy within 0.005 of the 1,000-iteration fit on every layer, at less than half the
#: time. C = 0.01 was chosen on dev by none of the 120 pr and pr-de fits of the previous
#: recipe's seed-0 demo run (C = 1 by 96), so the grid starts at 0.1.
FAST_FRAME_PROBE: dict[str, Any] = {
    "max_frames": {"train": 2500, "dev": 1250, "test": 10_000}, "c_grid": [0.1, 1.0],
    "max_iter": 100, "fit_dtype": "float32"}

#: Every demo probe's lbfgs works in float32 (the probe option ``fit_dtype``, recorded in
#: each row's conventions). Measured on three checkpoints of a demo run
#: (benchmarks/results/probe_dtype.json, fits in one process, load ~1.3): the probe units took
#: 95 s against 117 s in float64, and the 90 test scores moved by a median 0.02 and at most
#: 0.58 of their standard errors.
FAST_UTTERANCE_PROBE: dict[str, Any] = {"fit_dtype": "float32"}


def sweep_config(corpus: Path, settings: DemoSettings) -> dict[str, Any]:
    """The demo's sweep (see :class:`speechrank.sweep.SweepConfig`)."""
    main = f"synthetic:{corpus}#manifest=train,dev,test"
    return {
        "rank": {"data": main, "num_utterances": settings.rank_utterances,
                 "poolings": ["sum", "mean", "frames"], "max_frames": settings.max_frames},
        "probe": [
            {"name": "ks", "task": "ks", "data": main, "domain": "in",
             **FAST_UTTERANCE_PROBE},
            {"name": "sid", "task": "sid", "data": main, "domain": "in",
             **FAST_UTTERANCE_PROBE},
            {"name": "pr", "task": "pr", "data": main, "domain": "in", **FAST_FRAME_PROBE},
            {"name": "ks-unseen", "task": "ks",
             "data": f"synthetic:{corpus}#manifest=train,dev,test_unseen", "domain": "out",
             **FAST_UTTERANCE_PROBE},
            {"name": "sid-de", "task": "sid", "data": f"synthetic:{corpus}#manifest=ood_de",
             "domain": "out", **FAST_UTTERANCE_PROBE},
            {"name": "pr-de", "task": "pr", "data": f"synthetic:{corpus}#manifest=ood_de",
             "domain": "out", **FAST_FRAME_PROBE},
        ],
        "options": {"seed": settings.seed, "cache_dir": str(settings.out / "feature-cache"),
                    "fit_workers": settings.fit_workers,
                    "checkpoint_workers": settings.checkpoint_workers},
    }


def run_demo(settings: DemoSettings = DemoSettings(), *, progress: ProgressArg = None,
             log: Callable[[str], Any] | None = None) -> DemoSummary:
    """Run (or finish) the demo in ``settings.out``; see the module docstring.

    As the ``demo`` command: an output directory holding anything the demo did not write is
    refused (:func:`check_output_dir`). ``progress`` (a :class:`~speechrank.progress.Progress`)
    receives every stage's progress and, unless ``log`` is given, one line per finished step.
    """
    from speechrank.analysis import AnalysisOptions, correlate
    from speechrank.analysis.correlate import headline_verdicts
    from speechrank.analysis.progress import training_progress
    from speechrank.audio.synthetic import CorpusSpec, make_corpus
    from speechrank.pretrain import TrainRun, pretrain
    from speechrank.report import write_report
    from speechrank.report.inputs import forget, is_current, remember, report_inputs
    from speechrank.store import ResultStore
    from speechrank.sweep import SweepConfig, sweep

    out = Path(settings.out)
    check_output_dir(out)
    report_to = as_progress(progress)
    log = log or report_to.log
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}
    reused: list[str] = []

    # 1. corpus
    started = time.perf_counter()
    corpus = out / "corpus"
    if (corpus / "corpus.json").is_file():
        reused.append("corpus")
        log(f"corpus: reusing {corpus}")
    else:
        spec = CorpusSpec(minutes=settings.corpus_minutes, seed=settings.seed,
                          probe_splits=settings.probe_splits)
        summary = make_corpus(corpus, spec, progress=report_to)
        log(f"corpus: {summary.total_seconds / 60:.1f} min of audio, {summary.n_speakers} "
            f"speakers in {summary.wall_s:.1f} s ({summary.realtime_factor:.0f}x real time)")
    stages["corpus"] = time.perf_counter() - started

    # 2. pretraining
    started = time.perf_counter()
    run = out / "run"
    done_marker = run / "demo-pretrain-done.json"
    if done_marker.is_file():
        reused.append("pretrain")
        log(f"pretrain: reusing {run}")
    else:
        result = pretrain(f"synthetic:{corpus}#split=pretrain", run,
                          TrainRun(steps=settings.pretrain_steps,
                                   minutes=settings.pretrain_minutes,
                                   save_steps=settings.save_steps, resume=run.exists()),
                          overrides={"seed": settings.seed}, progress=report_to)
        log(f"pretrain: steps {result.start_step} -> {result.final_step} "
            f"({result.steps_per_second:.2f} steps/s), final masked-prediction accuracy "
            f"{result.final_accuracy:.3f}")
        done_marker.write_text(jsonsafe.dumps(result.to_dict(), indent=2))
    stages["pretrain"] = time.perf_counter() - started

    # 3. sweep
    started = time.perf_counter()
    store_path = out / "results.sqlite"
    config = SweepConfig.from_dict(sweep_config(corpus, settings))
    swept = sweep(run, config, store_path, progress=report_to, log=log)
    if swept.units_reused:
        reused.append(f"sweep ({swept.units_reused} units)")
    stages["sweep"] = time.perf_counter() - started

    # 4. correlate and report (reused when the store and the options are as they were)
    started = time.perf_counter()
    page_dir = out / "report"
    analysis = {"seed": settings.seed, "n_bootstrap": DEMO_BOOTSTRAP, "probe_split": "test",
                "title": DEMO_TITLE}
    with ResultStore(store_path, create=False) as store:
        inputs = report_inputs(store, analysis)
        if is_current(page_dir, inputs, [out / name for name in ANALYSIS_FILES]):
            reused.append("report")
            log(f"report: the store holds what it held when {page_dir} was drawn; reusing it")
            headline, moved, verdicts = _stored_analysis(out)
            page = page_dir / "index.html"
        else:
            forget(page_dir)
            report = correlate(store,
                               AnalysisOptions(seed=settings.seed, n_bootstrap=DEMO_BOOTSTRAP))
            moved = [p.to_dict() for p in training_progress(store.rows(split="test"))]
            page = write_report(store, page_dir, correlation=report, title=DEMO_TITLE)
            (out / "correlation.json").write_text(jsonsafe.dumps(report.to_dict(), indent=2))
            (out / "progress.json").write_text(jsonsafe.dumps(moved, indent=2))
            verdicts = [v.sentence for v in headline_verdicts(report)]
            (out / "verdicts.json").write_text(jsonsafe.dumps(verdicts, indent=2))
            remember(page_dir, inputs)
            headline = [dict(s.to_dict()) for s in report.summary]
    stages["report"] = time.perf_counter() - started
    return DemoSummary(out=str(out), report=str(page), store=str(store_path),
                       headline=headline, stages=stages, reused=reused, progress=moved,
                       verdicts=verdicts)


#: What the demo's analysis writes beside the report (read back when the report is reused).
ANALYSIS_FILES = ("correlation.json", "progress.json", "verdicts.json")


def _stored_analysis(out: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """The headline, the progress and the verdicts of a finished demo, read back from its JSON
    files (JSON has no NaN: an undefined value, written as null, reads back as NaN in the
    headline)."""
    def read(name: str) -> Any:
        return json.loads((out / name).read_text(encoding="utf-8"))

    headline = [{key: math.nan if value is None else value for key, value in entry.items()}
                for entry in read("correlation.json")["summary"]]
    return headline, read("progress.json"), read("verdicts.json")


def check_output_dir(out: Path) -> None:
    """Refuse an output directory that holds something other than a demo."""
    if out.exists() and not out.is_dir():
        raise SpeechrankError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        known = {"corpus", "run", "results.sqlite", "results.sqlite-wal", "results.sqlite-shm",
                 "report", "feature-cache", *ANALYSIS_FILES}
        strangers = sorted(p.name for p in out.iterdir() if p.name not in known)
        if strangers:
            raise SpeechrankError(f"--out {out} holds files the demo did not write "
                                  f"({', '.join(strangers[:3])}); choose an empty directory")


#: The probe score the headline reads for each kind of task.
HEADLINE_SCORES = ("accuracy", "frame_accuracy", "per")


def headline_rows(headline: list[dict[str, Any]], metric: str = "rankme",
                  pooling: str = "sum") -> list[dict[str, Any]]:
    """The demo's headline: per task and domain, RankMe-t's median within-layer Spearman rho
    with the probe score and its best-layer agreement (one main score per task)."""
    chosen = [h for h in headline if h["metric"] == metric and h["pooling"] == pooling
              and h["score"] in HEADLINE_SCORES]
    return sorted(chosen, key=lambda h: (h["domain"] != "in", h["task"]))


#: The console headline's columns: short names that fit 80 columns, explained by
#: :data:`HEADLINE_LEGEND`.
HEADLINE_COLUMNS = ("task", "dom", "score", "rho", "n", "best layer", "best ckpt")
HEADLINE_LEGEND = (
    "dom: in or out of domain; rho: median over layers of the Spearman correlation, across "
    "checkpoints, of RankMe-t (rankme, sum pooling) with the score; n: how many layers that "
    "median rests on; "
    "best layer: checkpoints where RankMe-t's highest layer scored best (of how many); "
    "best ckpt: layers where RankMe-t's highest checkpoint scored best (of how many)")


def headline_table(summary: DemoSummary) -> TextTable:
    """The console headline of :func:`headline_rows` (drawn by the command line): short
    columns, a legend, and the number of points behind every value."""
    table = TextTable(title="Does RankMe-t track the probes?", caption=HEADLINE_LEGEND)
    for column in HEADLINE_COLUMNS:
        table.add_column(column, justify="left" if column in {"task", "dom", "score"}
                         else "right", no_wrap=True)
    for h in headline_rows(summary.headline):
        rho = h["within_rho_median"]
        table.add_row(h["task"], h["domain"], h["score"],
                      "n/a" if rho != rho else f"{rho:+.2f}",
                      str(h["within_n"]),
                      _rate(h["best_layer_agreement"], h["best_layer_n"]),
                      _rate(h["checkpoint_agreement"], h["checkpoint_n"]))
    return table


def _rate(rate: float, n: int) -> str:
    if n == 0 or rate != rate:
        return "n/a"
    return f"{round(rate * n)}/{n}"
