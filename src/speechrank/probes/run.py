"""``speechrank probe``: per-layer downstream probes on frozen features.

:func:`run_probe` is the whole command as a function: load the model and data, resolve the
task's label (:mod:`speechrank.probes.tasks`), give every utterance a train/dev/test split
(:func:`speechrank.audio.splits.assign_splits`: the corpus split where there is one), extract
every requested layer in one encoder pass through the feature cache
(:mod:`speechrank.probes.features`), fit one linear probe per layer
(:mod:`speechrank.probes.linear` or :mod:`speechrank.probes.ctc`) and return tidy rows (one per
layer, split and metric) plus everything the JSON output records.

The probes validate the label-free metrics of the speech-rank paper (Aldeneh et al.,
"Towards Automatic Assessment of Self-Supervised Speech Models using Rank", ICASSP 2025, arXiv
2409.10787), which probes phoneme recognition, keyword spotting and speaker identification.
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from speechrank import __version__, distributed
from speechrank.audio.datasets import load_dataset
from speechrank.audio.io import AUDIO_CONVENTIONS
from speechrank.audio.splits import assign_splits
from speechrank.audio.utterance import Dataset
from speechrank.encoders import load_encoder
from speechrank.encoders.base import SpeechEncoder
from speechrank.errors import SpeechrankError
from speechrank.extract import FrameMemo, SkipLog
from speechrank.options import RunOptions, resolve_options
from speechrank.probes.config import SPLITS, ProbeConfig, config_dict
from speechrank.probes.drivers import (
    DRIVERS,
    Fitting,
    LogisticDriver,
    LogisticProblem,
    ProbeContext,
    ProbeDriver,
    TaskSpec,
    check_splits,
    default_config,
    driver_for_config,
)
from speechrank.probes.features import resolve_cache_dir
from speechrank.probes.linear import FitCache, fit_logistic_probes, layers_per_batch
from speechrank.probes.recipes import recipe_with
from speechrank.probes.tasks import resolve_task
from speechrank.progress import ProgressArg, as_progress
from speechrank.results import ResultRow
from speechrank.selection import parse_layers

__all__ = ["ProbeResult", "ProbeRun", "logistic_problems", "run_probe"]

@dataclasses.dataclass
class ProbeResult:
    """What ``probe`` measured: tidy rows plus everything the JSON output records.

    ``rows`` hold one :class:`ResultRow` per (layer, split, metric); ``info`` holds the task,
    label, counts per split, classes, chance levels, skipped files, cache use and timings.
    """

    rows: list[ResultRow]
    info: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {**self.info, "results": [row.to_dict() for row in self.rows]}

    def scores(self, split: str = "test", metric: str | None = None) -> dict[str, float]:
        """``layer -> value`` for one split and metric (default: the task's main metric)."""
        metric = metric or self.info["metrics"][0]
        return {r.layer: r.value for r in self.rows if r.split == split and r.metric == metric}


def _versions() -> dict[str, str]:
    import scipy
    import sklearn

    return {"speechrank": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__}


def _fit_each(driver: ProbeDriver, ctx: ProbeContext, entry: Any, layers: Sequence[str],
              workers: int) -> Iterator[tuple[str, tuple[list[ResultRow], dict[str, Any]]]]:
    """``(layer, (rows, fit info))`` for every layer in order, one fit at a time."""
    for layer in layers:
        yield layer, driver.fit_layer(ctx, entry, layer)


def _fit_logistic(driver: LogisticDriver, ctx: ProbeContext, entry: Any, layers: Sequence[str],
                  workers: int) -> Iterator[tuple[str, tuple[list[ResultRow], dict[str, Any]]]]:
    """``(layer, (rows, fit info))`` for every layer in order.

    Logistic drivers with the ``torch`` solver fit as many layers at once as
    :func:`~speechrank.probes.linear.layers_per_batch` allows (every layer of a small encoder)
    in one batched fit on the encoder's device (on the process's torch threads); with the
    ``sklearn`` solver, ``workers`` layers at a time in worker processes. The arrays are built
    here, so the first one fills the driver's summary and checks the splits as in a serial
    run. With a :class:`~speechrank.probes.linear.FitCache` (``ctx.fits``, one per checkpoint
    in a sweep), a layer whose train and dev arrays and recipe another probe of the checkpoint
    already fitted reuses that fit, scored on its own splits.
    """
    config = driver.config.logistic
    first = driver.layer_problem(ctx, entry, layers[0]) if layers else None
    step = max(1, workers)
    if config.solver == "torch" and first is not None:  # as many layers as fit the budget
        step = layers_per_batch(first.splits, config)
    fit_all = ctx.fits.fit if ctx.fits is not None else fit_logistic_probes
    for start in range(0, len(layers), step):  # at most `step` layers' arrays in memory
        problems = [first if start == 0 and index == 0 and first is not None
                    else driver.layer_problem(ctx, entry, layer)
                    for index, layer in enumerate(layers[start:start + step])]
        fits = fit_all([p.splits for p in problems], config, workers=workers,
                       device=ctx.fit_device)
        for problem, fit in zip(problems, fits, strict=True):
            yield problem.layer, driver.layer_rows(ctx, problem, fit)


#: How the layers of each :data:`~speechrank.probes.drivers.Fitting` are fitted (a driver
#: declares its own).
_FITTERS: dict[Fitting, Any] = {"per_layer": _fit_each, "logistic": _fit_logistic}


@dataclasses.dataclass(frozen=True)
class ProbeRun:
    """How a probe run goes, apart from what it probes (model, data, task) and the options
    every command shares (:class:`~speechrank.options.RunOptions`: crop, batch, seed).

    Attributes:
        layers: layer names or a spec such as ``"0,3-6"`` (default: every numbered layer).
        config: the recipe (default: :func:`speechrank.probes.drivers.default_config` of the
            task's kind); its type must match the kind. For ``pr`` it also picks the kind: a
            :class:`~speechrank.probes.config.CTCProbeConfig` runs the CTC probe on
            transcripts even where time-aligned phones exist (the synthetic corpus has both).
            A mapping is a table of recipe keys (:mod:`speechrank.probes.recipes`, e.g.
            ``{"solver": "sklearn"}``) applied to the kind's default recipe.
        cache_dir: feature cache root (default ``$SPEECHRANK_CACHE`` or
            ``~/.cache/speechrank/features``).
        use_cache: ``False`` extracts into a temporary directory removed afterwards.
        strict: fail on the first unusable file instead of skipping it.
        device: ``cpu`` or ``cuda`` for the encoder (a model given by name) and the batched
            logistic solver.
        fit_workers: with the ``sklearn`` solver, logistic probes (utterance and frame tasks)
            fit this many layers at once in worker processes
            (:func:`speechrank.probes.linear.fit_logistic_probes`); the scores do not depend
            on it. The ``torch`` solver fits the layers as one batch on the encoder's device,
            on the process's torch threads, and does not use it; CTC probes always fit one
            layer at a time.
        checkpoint, step: recorded in every row (defaults: the model name, no step).
        memo: a :class:`~speechrank.extract.FrameMemo` of this encoder, shared with other
            passes over the same audio (a sweep's rank data and other probes).
        fits: a :class:`~speechrank.probes.linear.FitCache` shared with other probes of this
            encoder (logistic fits on equal train and dev arrays are made once).
    """

    layers: str | Sequence[str] | None = None
    config: ProbeConfig | Mapping[str, Any] | None = None
    cache_dir: str | Path | None = None
    use_cache: bool = True
    strict: bool = False
    device: str = "cpu"
    fit_workers: int = 1
    checkpoint: str | None = None
    step: int | None = None
    memo: FrameMemo | None = None
    fits: FitCache | None = None


@dataclasses.dataclass
class _Setup:
    """What a probe run resolves before it reads any audio."""

    encoder: SpeechEncoder
    dataset: Dataset
    spec: TaskSpec
    layers: list[str]
    recipe: ProbeConfig
    driver: ProbeDriver
    split_ds: Dataset

    def context(self, opts: RunOptions, run: ProbeRun, root: Path, *, skips: SkipLog,
                progress: Any) -> ProbeContext:
        return ProbeContext(
            encoder=self.encoder, dataset=self.split_ds, task=self.spec, options=opts,
            strict=run.strict, cache_dir=root, skips=skips, progress=progress, memo=run.memo,
            fits=run.fits,
            base_row={"model": self.encoder.name,
                      "checkpoint": run.checkpoint or self.encoder.name, "step": run.step,
                      "dataset": self.dataset.spec, "domain": ""},
            common={"seed": opts.seed, "label": self.spec.label,
                    "split_source": self.split_ds.info.get("split_source", "unknown"),
                    "max_seconds": opts.crop_seconds})


def _setup(model: str | SpeechEncoder, data: str | Dataset, task: str, opts: RunOptions,
           run: ProbeRun) -> _Setup:
    encoder = load_encoder(model, device=run.device) if isinstance(model, str) else model
    dataset = load_dataset(data) if isinstance(data, str) else data
    config = run.config
    chosen_driver = driver_for_config(config)
    pr_kind = chosen_driver.kind if chosen_driver is not None and chosen_driver.reads else None
    spec = resolve_task(task, dataset, pr_kind=pr_kind)
    chosen_layers = parse_layers(run.layers, encoder.layer_names)
    recipe = config if config is not None else default_config(spec.kind)
    if isinstance(recipe, Mapping):
        recipe = recipe_with(default_config(spec.kind), recipe, kind=spec.kind)
    driver_type = DRIVERS[spec.kind]
    if not isinstance(recipe, driver_type.config_type):
        raise SpeechrankError(f"task {spec.name} needs a {driver_type.config_type.__name__}, "
                              f"got {type(recipe).__name__}")
    split_ds = assign_splits(dataset, spec.label, seed=opts.seed)
    check_splits(Counter(str(u.split) for u in split_ds.utterances), spec, dataset)
    return _Setup(encoder, dataset, spec, chosen_layers, recipe, driver_type(recipe), split_ds)


def logistic_problems(model: str | SpeechEncoder, data: str | Dataset, task: str,
                      options: RunOptions | None = None, *, run: ProbeRun | None = None,
                      **option_fields: Any) -> tuple[ProbeConfig, list[LogisticProblem]]:
    """The recipe and the arrays :func:`run_probe` would fit for a logistic probe (one
    :class:`~speechrank.probes.drivers.LogisticProblem` per layer), without fitting them:
    for comparing solvers on real features. Features come from the cache
    (``run.cache_dir``), extracted first if missing."""
    opts = resolve_options(options, **option_fields)
    run = run or ProbeRun()
    setup = _setup(model, data, task, opts, run)
    if setup.driver.fitting != "logistic":
        raise SpeechrankError(f"task {task} on {setup.dataset.spec} is not a logistic probe")
    driver = cast(LogisticDriver, setup.driver)
    ctx = setup.context(opts, run, resolve_cache_dir(run.cache_dir), skips=SkipLog(),
                        progress=as_progress(None))
    entry = driver.prepare(ctx, setup.layers)
    return setup.recipe, [driver.layer_problem(ctx, entry, layer) for layer in setup.layers]


def _info(setup: _Setup, run: ProbeRun, opts: RunOptions, *, entry: Any, summary: dict,
          skipped: list[dict[str, str]], root: Path) -> dict[str, Any]:
    """Everything the JSON output records about a finished run but its rows and times."""
    encoder, dataset, spec, split_ds = setup.encoder, setup.dataset, setup.spec, setup.split_ds
    split_counts = Counter(str(u.split) for u in split_ds.utterances)
    extra = dict(summary)
    return {
        "command": "probe",
        "task": spec.name,
        "label": spec.label,
        "probe": spec.kind,
        "metrics": list(spec.metrics),
        "model": encoder.name,
        "encoder": encoder.describe(),
        "data": {"spec": dataset.spec, "format": dataset.format, "root": dataset.root,
                 "files_found": len(dataset), "info": dataset.info},
        "splits": {"source": split_ds.info.get("split_source", "unknown"),
                   "utterances": {name: split_counts.get(name, 0) for name in SPLITS},
                   "assign_splits": split_ds.info.get("assign_splits", {})},
        "counts": {**extra.pop("counts"), "skipped": len(skipped),
                   "skipped_by_reason": dict(sorted(Counter(
                       item["reason"] for item in skipped).items()))},
        "classes": extra.pop("classes"),
        "chance": extra.pop("chance", {}),
        **extra,
        "skipped": skipped,
        "layers": setup.layers,
        "cache": {"dir": str(root) if run.use_cache else None, "enabled": run.use_cache,
                  "entry": entry.directory.name, "hit": not entry.computed_layers,
                  "hit_layers": entry.cache_hit_layers,
                  "computed_layers": entry.computed_layers},
        "conventions": {"recipe": config_dict(setup.recipe), "audio": dict(AUDIO_CONVENTIONS),
                        "seed": opts.seed, "max_seconds": opts.crop_seconds,
                        "batch_seconds": opts.batch_seconds,
                        "layer_numbering": "0 = input of the first transformer layer "
                                           "(Hugging Face hidden_states[0])",
                        "test_split": "never used for a choice"},
        "versions": _versions(),
        "device": str(encoder.device),
        # the torchrun job that extracted the features (world_size 1 if none)
        "distributed": (distributed.current().describe() if distributed.current() is not None
                        else dict(distributed.SINGLE_PROCESS)),
    }


# ----------------------------------------------------------------------------- entry point

def run_probe(model: str | SpeechEncoder, data: str | Dataset, task: str,
              options: RunOptions | None = None, *, run: ProbeRun | None = None,
              progress: ProgressArg = None, **option_fields: Any) -> ProbeResult:
    """Probe every requested layer of ``model`` on ``data`` for ``task``.

    Args:
        model: an encoder, or a MODEL spec for :func:`speechrank.encoders.load_encoder`.
        data: a dataset, or a DATA spec for :func:`speechrank.audio.load_dataset`.
        task: ``ks``, ``sid``, ``er``, ``pr`` or ``label:COLUMN`` (see
            :mod:`speechrank.probes.tasks`).
        options: crop (``crop_seconds``, the CLI's ``--max-seconds``), batch seconds and seed
            (seeds a drawn split, the frame and utterance caps and the CTC probe) as a
            :class:`~speechrank.options.RunOptions`, or its fields as keywords
            (``seed=0, max_seconds=1.0``); a probe uses every utterance, so
            ``num_utterances`` and ``max_frames`` do not apply (the recipe caps frames).
        run: the layers, recipe, feature cache, device, fit processes, the checkpoint and
            step the rows record, and what the run may share with other passes over the same
            model (a :class:`ProbeRun`; default: all layers, the kind's default recipe, the
            default cache, the CPU).
        progress: a :class:`~speechrank.progress.Progress`: stage ``encode`` (seconds of
            audio, only when the encoder runs) and stage ``probe`` (layers).

    Returns:
        A :class:`ProbeResult`; rows for train, dev and test of every layer. Test is never
        used for a choice.
    """
    started = time.perf_counter()
    opts = resolve_options(options, **option_fields)
    run = run or ProbeRun()
    report = as_progress(progress)
    setup = _setup(model, data, task, opts, run)
    driver = setup.driver
    skips = SkipLog()
    rows: list[ResultRow] = []
    fits: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if run.use_cache:
            root = resolve_cache_dir(run.cache_dir)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="speechrank-")))
        ctx = setup.context(opts, run, root, skips=skips, progress=report)
        entry = driver.prepare(ctx, setup.layers)
        report.end("encode")
        report.start("probe", len(setup.layers), "layers")
        for layer, (layer_rows, fit_info) in _FITTERS[driver.fitting](
                driver, ctx, entry, setup.layers, run.fit_workers):
            rows.extend(layer_rows)
            fits[layer] = fit_info
            report.advance("probe", 1)
        report.end("probe")
    skipped = list(skips.items)
    seen = {item["path"] for item in skipped}
    skipped += [item for item in entry.skipped if item["path"] not in seen]
    info = _info(setup, run, opts, entry=entry, summary={**driver.summary, "fits": fits},
                 skipped=skipped, root=root)
    info["wall_seconds"] = round(time.perf_counter() - started, 3)
    info["encode_seconds"] = round(entry.encode_seconds, 3)
    return ProbeResult(rows=rows, info=info)
