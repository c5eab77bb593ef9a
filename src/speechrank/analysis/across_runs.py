"""Several training runs in one analysis: does a label-free metric pick the better run?

Within one run, the step and the loss already track the probes (:mod:`.baselines`). Across
runs whose losses are not comparable (other targets, another codebook size, other masking,
another learning rate) the loss cannot rank them, and a representation metric might. Each run
is a ``model`` of the store (a sweep names rows by their run); this module compares the runs
at one checkpoint each:

* ``step=None`` (default): the last training step that every run has measured (metrics and
  probes);
* ``step=N``: step N (runs without it are left out, with a note);
* ``step="last"``: each run's own last measured checkpoint (runs of different lengths, or an
  untrained initialisation beside trained runs).

Per layer and probe score series it gives, for every label-free metric series and for the
free training signals of the runs' checkpoints (minus the loss, the masked-prediction
accuracy, and the step where the runs' steps differ), the Spearman rho across runs of the
signal with the score (oriented values, with a percentile bootstrap interval that resamples
runs) and the regret of choosing the run with the highest signal: the best run's score minus
the chosen run's, in score units and as a fraction of the score range over the runs.

Series are matched across runs by metric, pooling and conventions variant (probe series by
task, score, domain, probe pooling and variant); the dataset too, unless each run has one
dataset for the key (runs swept on corpora of their own, such as demos of several seeds).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from speechrank.analysis.correlate import bootstrap_rng, load_source, orientation
from speechrank.analysis.options import AnalysisOptions
from speechrank.analysis.pairs import Choice, MetricSide, Record, ScoreSide, mean_and_se
from speechrank.analysis.series import Series, SeriesSet, collect_series, layer_order
from speechrank.analysis.stats import SpearmanFields, rank_correlation
from speechrank.analysis.training import SIGNALS, checkpoint_signals
from speechrank.errors import SpeechrankError

__all__ = ["AcrossRuns", "AcrossRunsRecord", "AcrossRunsSummary", "RunPoint", "compare_runs"]

#: Below this many runs the bootstrap interval over runs is flagged as rough in the notes.
_FEW_RUNS = 8


@dataclasses.dataclass(frozen=True)
class RunPoint(Record):
    """The checkpoint a run is compared at, with its free training signals."""

    run: str
    checkpoint: str
    step: int | None
    loss: float | None
    train_accuracy: float | None


@dataclasses.dataclass(frozen=True)
class _Signal(Record):
    signal: str  # "rankme/sum", ..., or a training signal: "loss", "train_accuracy", "step"
    kind: str  # "metric" or "training"


@dataclasses.dataclass(frozen=True)
class _Key(ScoreSide, MetricSide, _Signal):
    """A signal against a probe score series (fields: signal, metric side, score side)."""


@dataclasses.dataclass(frozen=True)
class _Runs(Record):
    layer: str
    n_runs: int
    runs: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _RunsCorrelation(SpearmanFields, _Runs):
    n_boot: int


@dataclasses.dataclass(frozen=True)
class AcrossRunsRecord(Choice, _RunsCorrelation, _Key):
    """One signal against one probe score in one layer, across runs."""


@dataclasses.dataclass(frozen=True)
class AcrossRunsSummary(_Key):
    """One signal against one probe score over the layers (medians and means over layers)."""

    n_layers: int
    rho_median: float
    rho_min: float
    rho_max: float
    n_significant: int  # layers whose interval excludes 0 on the signal's side
    regret_fraction_mean: float
    regret_fraction_se: float
    n_best: int  # layers where the chosen run had the best score


@dataclasses.dataclass
class AcrossRuns:
    """Everything :func:`compare_runs` found."""

    step: int | str | None
    runs: list[RunPoint]
    left_out: dict[str, str]
    records: list[AcrossRunsRecord]
    summary: list[AcrossRunsSummary]
    settings: dict[str, Any]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN as float; :func:`speechrank.results.dumps_json` maps it to
        ``null``)."""
        return {"step": self.step, "runs": [r.to_dict() for r in self.runs],
                "left_out": dict(self.left_out), "settings": self.settings,
                "notes": list(self.notes), "summary": [s.to_dict() for s in self.summary],
                "records": [r.to_dict() for r in self.records]}


def _measured_steps(series: Sequence[Series], steps: Mapping[tuple[str, str], int | None]
                    ) -> dict[str, dict[int, set[str]]]:
    """run -> step -> checkpoints measured by some series of the run."""
    out: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for s in series:
        for checkpoint, _ in s.points:
            step = steps.get((s.key[0], checkpoint))
            if step is not None:
                out[s.key[0]][step].add(checkpoint)
    return out


def _match(series: Sequence[Series], runs: Sequence[str], dataset_at: int
           ) -> dict[tuple[Any, ...], dict[str, Series]]:
    """Series of every run grouped by their key without the model (and without the dataset
    where each run has at most one series for the key)."""
    loose: dict[tuple[Any, ...], dict[str, list[Series]]] = defaultdict(lambda: defaultdict(list))
    for s in series:
        if s.key[0] in runs and not s.is_monitor:
            rest = tuple(v for i, v in enumerate(s.key[1:], 1) if i != dataset_at)
            loose[(*rest, s.variant)][s.key[0]].append(s)
    out: dict[tuple[Any, ...], dict[str, Series]] = {}
    for key, by_run in loose.items():
        if all(len(v) == 1 for v in by_run.values()):
            datasets = {v[0].key[dataset_at] for v in by_run.values()}
            out[(*key, datasets.pop() if len(datasets) == 1 else "(per run)")] = {
                run: v[0] for run, v in by_run.items()}
            continue
        for run, found in by_run.items():
            for s in found:
                out.setdefault((*key, s.key[dataset_at]), {})[run] = s
    return out


def compare_runs(source: Any, checkpoints: Sequence[Any] | None = None, *,
                 step: int | Literal["last"] | None = None,
                 options: AnalysisOptions | None = None) -> AcrossRuns:
    """Compare the runs (models) of a store at one checkpoint each (see the module docstring).

    Args:
        source: a :class:`~speechrank.store.ResultStore`, the path of one, or result rows.
        checkpoints: checkpoint records (default: the store's; none for rows); they give each
            checkpoint's step (else the rows' step) and its loss.
        step: ``None`` (the last step every run measured), a step, or ``"last"``.
        options: which series, the probe split, the orientations and the bootstrap over runs
            (:class:`~speechrank.analysis.options.AnalysisOptions`; 0 resamples: no
            intervals).

    Raises:
        SpeechrankError: fewer than two runs to compare, or no step that they share.
    """
    options = options or AnalysisOptions()
    if not (step is None or step == "last" or (isinstance(step, int)
                                               and not isinstance(step, bool))):
        raise SpeechrankError(f"step must be a training step, 'last' or None, not {step!r}")
    rows, records = load_source(source, checkpoints)
    found = collect_series(rows, **options.selection())
    signals = checkpoint_signals(rows, records)
    notes = list(found.notes)
    both = _runs_measured(found, {k: s.step for k, s in signals.items()})
    step, chosen, left_out = _choose_checkpoints(both, step, notes)
    points = []
    for r in sorted(chosen):
        sig = signals.get((r, chosen[r]))
        points.append(RunPoint(r, chosen[r], sig.step if sig else None,
                               sig.loss if sig else None, sig.train_accuracy if sig else None))
    training = [name for name in ("loss", "train_accuracy")
                if sum(getattr(p, name) is not None for p in points) >= 2]
    if "loss" not in training:
        notes.append("fewer than 2 runs have a pretraining loss at the compared checkpoint: "
                     "no loss baseline (stores without checkpoint records have none)")
    if len({p.step for p in points}) > 1:
        training.append("step")
    out = _records(found, points, training, options)
    if options.n_bootstrap and len(points) < _FEW_RUNS:
        notes.append(f"{len(points)} runs: a bootstrap interval over fewer than {_FEW_RUNS} runs "
                     "is rough, and a perfectly monotone series gets the interval [1, 1]; read "
                     "the rho and the regret, not the interval")
    settings = {
        "step": step, "n_bootstrap": options.n_bootstrap, "seed": options.seed,
        "confidence": options.confidence, "probe_split": options.probe_split,
        "bootstrap": "percentile, resampling runs with replacement",
        "regret_fraction": "(best - chosen) / (best - worst) score over the runs",
        "orientation": "statistics use orientation * value, so higher is better; loss is "
                       "negated",
        "matching": "series matched across runs by name, pooling and conventions variant; "
                    "by dataset too unless each run has one",
    }
    return AcrossRuns(step=step, runs=points, left_out=left_out, records=out,
                      summary=_summaries(out), settings=settings, notes=notes)


def _runs_measured(found: SeriesSet, steps: Mapping[tuple[str, str], int | None]
                   ) -> dict[str, dict[int, set[str]]]:
    """run -> step -> checkpoints with both label-free metrics and probes, for every run
    with both at some step (at least 2 runs, else one error line)."""
    scored = _measured_steps([s for s in found.score if not s.is_monitor], steps)
    measured = _measured_steps([s for s in found.metric if not s.is_monitor], steps)
    runs = sorted(r for r in scored if r in measured)
    if len(runs) < 2:
        raise SpeechrankError(
            f"comparing runs needs label-free metrics and probes of at least 2 runs (models) "
            f"with training steps; the store has {len(runs)}"
            + (f" ({', '.join(runs)})" if runs else ""))
    both = {r: {s: scored[r][s] & measured[r][s] for s in set(scored[r]) & set(measured[r])}
            for r in runs}
    return {r: {s: c for s, c in v.items() if c} for r, v in both.items()}


def _choose_checkpoints(both: Mapping[str, Mapping[int, set[str]]],
                        step: int | Literal["last"] | None, notes: list[str]
                        ) -> tuple[int | str | None, dict[str, str], dict[str, str]]:
    """The step compared at, each compared run's checkpoint, and why the others are out."""
    runs = sorted(both)
    left_out: dict[str, str] = {}
    chosen: dict[str, str] = {}
    if step == "last":
        for r in runs:
            if both[r]:
                last = max(both[r])
                chosen[r] = sorted(both[r][last])[-1]
            else:
                left_out[r] = "no checkpoint with both label-free metrics and probes"
    else:
        if step is None:
            shared = set.intersection(*(set(both[r]) for r in runs))
            if not shared:
                spans = "; ".join(f"{r}: {_span(both[r])}" for r in runs)
                raise SpeechrankError(f"the runs share no measured training step ({spans}); "
                                      "choose one with step=N, or step='last'")
            step = max(shared)
        for r in runs:
            if step in both[r]:
                names = sorted(both[r][step])
                chosen[r] = names[-1]
                if len(names) > 1:
                    notes.append(f"{r}: {len(names)} checkpoints at step {step}; compared "
                                 f"{names[-1]}")
            else:
                left_out[r] = f"not measured at step {step}"
    for r, why in left_out.items():
        notes.append(f"run {r} left out: {why}")
    if len(chosen) < 2:
        raise SpeechrankError(f"fewer than 2 runs measured at step {step} "
                              f"({', '.join(sorted(chosen)) or 'none'})")
    return step, chosen, left_out


def _signal_sources(found: SeriesSet, runs: Sequence[str], skey: tuple[Any, ...],
                    training: Sequence[str], options: AnalysisOptions
                    ) -> list[tuple[_Key, dict[str, Series] | None]]:
    """Every signal to compare with one score series: the metric series matched across the
    runs, then the training signals (``None``: read off the run's point)."""
    task, score, domain, ppool, svariant, pdata = skey
    s_sign = orientation(score, kind="score", overrides=options.orientations)
    split = options.probe_split
    sources: list[tuple[_Key, dict[str, Series] | None]] = []
    metric_groups = _match(found.metric, runs, dataset_at=3)
    for mkey, m_by_run in sorted(metric_groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        metric, pooling, mvariant, mdata = mkey
        sources.append((_Key(
            f"{metric}/{pooling}", "metric", metric, pooling, mdata, mvariant,
            orientation(metric, kind="metric", overrides=options.orientations), task, score,
            domain, pdata, ppool, split, svariant, s_sign), m_by_run))
    for name in training:
        sources.append((_Key(name, "training", name, "", "", "", SIGNALS[name], task, score,
                             domain, pdata, ppool, split, svariant, s_sign), None))
    return sources


def _records(found: SeriesSet, points: Sequence[RunPoint], training: Sequence[str],
             options: AnalysisOptions) -> list[AcrossRunsRecord]:
    runs = [p.run for p in points]
    out: list[AcrossRunsRecord] = []
    score_groups = _match(found.score, runs, dataset_at=4)
    for skey, by_run in sorted(score_groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        layers = sorted({lay for s in by_run.values() for _, lay in s.points}, key=layer_order)
        for key, m_by_run in _signal_sources(found, runs, skey, training, options):
            for layer in layers:
                cells = _cells(key, points, by_run, m_by_run, layer)
                if cells:
                    out.append(_record(key, layer, cells, n_bootstrap=options.n_bootstrap,
                                       seed=options.seed, confidence=options.confidence))
    return out


def _cells(key: _Key, points: Sequence[RunPoint], by_run: Mapping[str, Series],
           m_by_run: Mapping[str, Series] | None, layer: str
           ) -> list[tuple[str, float, float, float]]:
    """(run, oriented signal, oriented score, raw score) of every run with both in ``layer``."""
    cells = []
    for p in points:
        ss = by_run.get(p.run)
        row = ss.points.get((p.checkpoint, layer)) if ss else None
        if row is None or not math.isfinite(row.value):
            continue
        if m_by_run is None:
            value = getattr(p, key.signal)
        else:
            ms = m_by_run.get(p.run)
            mrow = ms.points.get((p.checkpoint, layer)) if ms else None
            value = mrow.value if mrow is not None else None
        if value is None or not math.isfinite(value):
            continue
        cells.append((p.run, key.metric_orientation * float(value),
                      key.score_orientation * row.value, row.value))
    return cells


def _span(by_step: Mapping[int, Any]) -> str:
    return f"steps {min(by_step)}..{max(by_step)}" if by_step else "no step"


def _record(key: _Key, layer: str, cells: list[tuple[str, float, float, float]], *,
            n_bootstrap: int, seed: int, confidence: float) -> AcrossRunsRecord:
    """cells: (run, oriented signal, oriented score, raw score)."""
    nan = math.nan
    x = [c[1] for c in cells]
    y = [c[2] for c in cells]
    stat = rank_correlation(np.asarray(x), np.asarray(y), n_bootstrap=n_bootstrap,
                            rng=bootstrap_rng(seed, x, y), confidence=confidence)
    reason = stat.reason
    picked, best, regret, fraction = "", (), nan, nan
    picked_score = best_score = nan
    if len(cells) >= 2:
        top = max(x)
        pick = next(c for c in cells if c[1] == top)  # ties: the first run by name
        top_score, low_score = max(y), min(y)
        best = tuple(c[0] for c in cells if c[2] == top_score)
        picked, picked_score = pick[0], pick[3]
        best_score = next(c[3] for c in cells if c[2] == top_score)
        regret = top_score - pick[2]
        fraction = regret / (top_score - low_score) if top_score > low_score else nan
    elif not reason:
        reason = "fewer than 2 runs"
    return AcrossRunsRecord(
        **dataclasses.asdict(key), layer=layer, n_runs=len(cells),
        runs=tuple(c[0] for c in cells), spearman=stat.spearman, spearman_p=stat.spearman_p,
        spearman_low=stat.spearman_low, spearman_high=stat.spearman_high, n_boot=stat.n_boot,
        picked=picked, best=best, picked_score=picked_score, best_score=best_score,
        regret=float(regret), regret_fraction=float(fraction), reason=reason)


def _summaries(records: Sequence[AcrossRunsRecord]) -> list[AcrossRunsSummary]:
    groups: dict[_Key, list[AcrossRunsRecord]] = defaultdict(list)
    fields = [f.name for f in dataclasses.fields(_Key)]
    for r in records:
        groups[_Key(**{f: getattr(r, f) for f in fields})].append(r)
    out = []
    for key, recs in groups.items():
        rho = [r.spearman for r in recs if math.isfinite(r.spearman)]
        frac = [r.regret_fraction for r in recs if math.isfinite(r.regret_fraction)]
        frac_mean, frac_se = mean_and_se(frac)
        out.append(AcrossRunsSummary(
            **dataclasses.asdict(key), n_layers=len(recs),
            rho_median=statistics.median(rho) if rho else math.nan,
            rho_min=min(rho) if rho else math.nan, rho_max=max(rho) if rho else math.nan,
            n_significant=sum(1 for r in recs if r.spearman_low > 0 or r.spearman_high < 0),
            regret_fraction_mean=frac_mean, regret_fraction_se=frac_se,
            n_best=sum(1 for r in recs if r.picked and r.picked in r.best)))
    return out
