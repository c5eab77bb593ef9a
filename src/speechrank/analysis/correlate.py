"""Agreement between label-free metrics and downstream probe scores.

The question of Aldeneh et al. ("Towards Automatic Assessment of Self-Supervised Speech Models
using Rank", ICASSP 2025, arXiv 2409.10787), asked of a results store:

* **within a layer, across checkpoints** -- does the metric rise and fall with the probe
  score? Spearman's rho and Kendall's tau-b with p-values and bootstrap intervals
  (the paper's main claim: yes, in-domain and out-of-domain);
* **across layers, at one checkpoint** -- the same statistics over layers, and whether the
  layer with the highest metric is the layer with the best score, with the *regret* (best
  layer's score minus the picked layer's score) when it is not (the paper: often not);
* **checkpoint selection, per layer** -- does the checkpoint with the highest metric have the
  best score, and the regret otherwise;
* **per phase of training** -- much of the agreement over a run can be the shared early
  collapse and recovery of metric and score (as in early runs of the built-in encoder), so
  within every layer the checkpoints are also split at the step where the metric is lowest,
  and the statistics computed on each side;
* **against the free baselines** -- the step and the pretraining loss of each checkpoint
  (:mod:`.training`, from the store's checkpoint records) beside every metric: their own
  within-layer rho, the metric's partial rho given the step, the regret of choosing the
  checkpoint by the last step or the lowest loss, and a verdict per pair (:mod:`.baselines`);
* **layers chosen without labels** -- the last layer, each metric's highest layer and
  IsoScore's, with the regret as a fraction of the score range (:mod:`.layers`).

A *pair* is one label-free metric series (model, metric, pooling, dataset) against one probe
score series (model, task, score metric, domain, dataset, probe pooling, split); the points
are the (checkpoint, layer) cells both have. Rows with the same cell but different
conventions (two ``eps`` values, say) become distinct *variants* named by the convention keys
that differ, never silently mixed.

**Orientation.** Every statistic is computed on oriented values, so that a positive rho
always means "the metric says better when the probe says better" and "the metric picks" means
"the highest oriented metric": scores where lower is better (``per``, ``wer``, ``cer``,
``eer``, ``loss``, ...) are negated, and so is ``alpha_req`` (a larger power-law exponent is a
faster-decaying spectrum, i.e. fewer effective dimensions, the opposite of a larger rank), and
so are ``kmeans_inertia`` and ``davies_bouldin`` (lower is tighter, better separated clusters).
Each record carries ``metric_orientation`` and ``score_orientation`` (+1 or -1). Regrets are
in the score's own units and never negative (for PER: picked PER minus best PER);
``regret_fraction`` divides them by the score's range over the candidates (best minus worst),
so that 0 is the best choice and 1 the worst whatever the score's scale.

**Ties.** When several candidates share the highest metric, the first in order is the pick
(lowest layer; earliest checkpoint) and ``picked_ties`` counts them; every candidate sharing
the best score counts as best.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechrank.analysis.baselines import BaselineLayer, Verdict, analyse_baselines
from speechrank.analysis.flags import series_flags
from speechrank.analysis.layers import LayerChoice, LayerChoiceSummary, layer_choices
from speechrank.analysis.options import AnalysisOptions
from speechrank.analysis.pairs import PairKey, Record, Regret
from speechrank.analysis.series import (
    Point,
    Series,
    SeriesSet,
    checkpoint_order,
    collect_series,
    layer_order,
)
from speechrank.analysis.stats import RankCorrelation, rank_correlation
from speechrank.analysis.training import checkpoint_signals
from speechrank.errors import SpeechrankError
from speechrank.metrics.registry import METRICS
from speechrank.results import ResultRow

__all__ = [
    "LOWER_IS_BETTER",
    "MAIN_SCORES",
    "METRIC_ORIENTATION",
    "Correlation",
    "CorrelationReport",
    "PairKey",
    "Selection",
    "Summary",
    "correlate",
    "focus_metric",
    "headline_verdicts",
    "load_source",
    "main_score",
    "main_score_verdicts",
    "orientation",
]

#: The score a task is summed up by, in order of preference (the first one a task has).
MAIN_SCORES: tuple[str, ...] = ("frame_accuracy", "accuracy", "per")

#: Probe score names where lower is better; their values are negated before any statistic.
LOWER_IS_BETTER: frozenset[str] = frozenset({
    "per", "wer", "cer", "eer", "loss", "error", "error_rate", "nll", "mse", "mae", "rmse",
})

#: Below this many points a percentile bootstrap interval is flagged as rough in the notes.
_FEW_POINTS = 8

#: Label-free metrics whose direction is not "higher = richer representation": read from the
#: metric registry, where each metric declares its direction (speechrank.metrics.METRICS).
METRIC_ORIENTATION: dict[str, int] = {
    name: spec.orientation for name, spec in METRICS.items() if spec.orientation < 0}

def orientation(name: str, *, kind: str, overrides: Mapping[str, int] | None = None) -> int:
    """+1 if a larger ``name`` is better, -1 if smaller is better (``kind``: metric or score)."""
    if overrides and name in overrides:
        value = int(overrides[name])
        if value not in (1, -1):
            raise SpeechrankError(f"orientation of {name!r} must be +1 or -1, not {value}")
        return value
    if kind == "metric":
        spec = METRICS.get(name)
        return spec.orientation if spec is not None else 1
    return -1 if name.lower() in LOWER_IS_BETTER else 1


# ---------------------------------------------------------------------------------- records
@dataclasses.dataclass(frozen=True)
class _Slice(Record):
    scope: str
    layer: str
    checkpoint: str
    step: int | None
    phase: str


@dataclasses.dataclass(frozen=True)
class Correlation(RankCorrelation, _Slice, PairKey):
    """Rank correlation of one pair on one slice.

    ``scope="layer"``: across the checkpoints of ``layer`` (``phase`` ``all``, or ``collapse``
    / ``recovery`` split at ``checkpoint``/``step``, the checkpoint where the layer's metric
    is lowest, which belongs to both phases). ``scope="checkpoint"``: across the layers of
    ``checkpoint`` (``layer`` empty).
    """


@dataclasses.dataclass(frozen=True)
class _Candidates(Record):
    scope: str
    layer: str
    checkpoint: str
    step: int | None
    n_candidates: int
    picked: str
    picked_step: int | None
    picked_ties: int
    best: tuple[str, ...]
    agree: bool | None


@dataclasses.dataclass(frozen=True)
class Selection(Regret, _Candidates, PairKey):
    """Does the metric's pick have the best score?

    ``scope="layer"``: the metric picks a layer at ``checkpoint``. ``scope="checkpoint"``: it
    picks a checkpoint within ``layer``. ``best`` lists every candidate with the best score;
    ``regret`` is the best score minus the pick's score, in score units (>= 0), and
    ``regret_fraction`` that over the best minus the worst candidate's score (NaN when every
    candidate scores the same).
    """


@dataclasses.dataclass(frozen=True)
class Summary(PairKey):
    """The headline numbers of one pair (medians ignore undefined correlations)."""

    n_checkpoints: int
    n_layers: int
    n_points: int
    within_rho_median: float
    within_rho_min: float
    within_rho_max: float
    within_tau_median: float
    within_n: int
    across_rho_median: float
    across_n: int
    best_layer_agreement: float
    best_layer_n: int
    best_layer_regret_mean: float
    best_layer_regret_fraction_mean: float
    checkpoint_agreement: float
    checkpoint_n: int
    checkpoint_regret_mean: float
    checkpoint_regret_fraction_mean: float
    collapse_rho_median: float
    collapse_n: int
    recovery_rho_median: float
    recovery_n: int


@dataclasses.dataclass
class CorrelationReport:
    """Everything :func:`correlate` found, as tidy lists of flat records."""

    summary: list[Summary]
    within_layer: list[Correlation]
    across_layers: list[Correlation]
    phases: list[Correlation]
    best_layer: list[Selection]
    best_checkpoint: list[Selection]
    settings: dict[str, Any]
    notes: list[str]
    #: the free baselines per pair and layer, and the verdict per pair (:mod:`.baselines`)
    baselines: list[BaselineLayer] = dataclasses.field(default_factory=list)
    verdicts: list[Verdict] = dataclasses.field(default_factory=list)
    #: layers chosen without labels (:mod:`.layers`)
    layer_choice: list[LayerChoice] = dataclasses.field(default_factory=list)
    layer_choice_summary: list[LayerChoiceSummary] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN stays float; :func:`speechrank.results.dumps_json` maps it
        to ``null``). ``verdict`` holds the headline verdicts (:func:`headline_verdicts`)."""
        return {
            "settings": self.settings,
            "notes": list(self.notes),
            "verdict": [v.to_dict() for v in headline_verdicts(self)],
            "verdicts": [v.to_dict() for v in self.verdicts],
            "baselines": [r.to_dict() for r in self.baselines],
            "layer_choice_summary": [r.to_dict() for r in self.layer_choice_summary],
            "layer_choice": [r.to_dict() for r in self.layer_choice],
            "summary": [r.to_dict() for r in self.summary],
            "within_layer": [r.to_dict() for r in self.within_layer],
            "across_layers": [r.to_dict() for r in self.across_layers],
            "phases": [r.to_dict() for r in self.phases],
            "best_layer": [r.to_dict() for r in self.best_layer],
            "best_checkpoint": [r.to_dict() for r in self.best_checkpoint],
        }

    @property
    def pairs(self) -> list[PairKey]:
        """Every pair, in report order."""
        return [s.pair for s in self.summary]


def main_score(scores: Iterable[str]) -> str:
    """The score a task is summed up by: the first of :data:`MAIN_SCORES` among ``scores``,
    else the first in alphabetical order."""
    names = sorted(set(scores))
    rank = {s: i for i, s in enumerate(MAIN_SCORES)}
    return min(names, key=lambda s: (rank.get(s, len(rank)), s))


def main_score_verdicts(report: CorrelationReport) -> list[Verdict]:
    """The verdicts of every metric against each task's main score (:func:`main_score`)."""
    scores: dict[tuple[Any, ...], set[str]] = {}
    for v in report.verdicts:
        scores.setdefault(_task_key(v), set()).add(v.score)
    main = {k: main_score(v) for k, v in scores.items()}
    return [v for v in report.verdicts if v.score == main[_task_key(v)]]


def focus_metric(report: CorrelationReport) -> tuple[str, str] | None:
    """RankMe-t (``rankme``, ``sum``) when the report has it, else the first metric."""
    present = [(s.metric, s.pooling) for s in report.summary]
    if not present:
        return None
    return ("rankme", "sum") if ("rankme", "sum") in present else present[0]


def headline_verdicts(report: CorrelationReport, metric: str | None = None,
                      pooling: str | None = None) -> list[Verdict]:
    """One verdict per probe task (and domain, data, probe pooling, variant): the focus
    metric's (:func:`focus_metric` unless given) against the task's main score."""
    focus = (metric, pooling) if metric and pooling else focus_metric(report)
    return [v for v in main_score_verdicts(report) if (v.metric, v.pooling) == focus]


def _task_key(v: Any) -> tuple[Any, ...]:
    return (v.model, v.task, v.domain, v.probe_dataset, v.probe_pooling, v.score_variant)


# ---------------------------------------------------------------------------------- loading
def load_source(source: Any, checkpoints: Sequence[Any] | None = None
                ) -> tuple[list[ResultRow], list[Any]]:
    """Rows and checkpoint records from a :class:`~speechrank.store.ResultStore`, a store path
    or an iterable of rows (whose records, if any, are ``checkpoints``)."""
    from speechrank.store import ResultStore

    if isinstance(source, ResultStore):
        return source.rows(), list(checkpoints) if checkpoints is not None else \
            source.checkpoints()
    if isinstance(source, (str, Path)):
        with ResultStore(source, create=False) as store:
            return store.rows(), list(checkpoints) if checkpoints is not None else \
                store.checkpoints()
    return load_rows(source), list(checkpoints or [])


def load_rows(source: Any) -> list[ResultRow]:
    """Rows from a :class:`~speechrank.store.ResultStore`, a store path or an iterable of rows."""
    from speechrank.store import ResultStore

    if isinstance(source, ResultStore):
        return source.rows()
    if isinstance(source, (str, Path)):
        with ResultStore(source, create=False) as store:
            return store.rows()
    rows = list(source)
    for row in rows:
        if not isinstance(row, ResultRow):
            raise SpeechrankError(f"expected ResultRow objects, got {type(row).__name__}")
    return rows


def bootstrap_rng(seed: int, x: Sequence[float], y: Sequence[float]) -> np.random.Generator:
    """The bootstrap stream of one correlation: a function of the seed and its own data only,
    so neither what else is analysed nor names and paths (a dataset spec holds its directory)
    change an interval."""
    data = np.concatenate([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
    digest = hashlib.sha256(len(x).to_bytes(8, "big") + data.tobytes()).digest()
    return np.random.default_rng(np.random.SeedSequence([seed, int.from_bytes(digest[:8], "big")]))


def _median(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def _mean(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


# ---------------------------------------------------------------------------------- analysis
def correlate(source: Any, options: AnalysisOptions | None = None, *,
              checkpoints: Sequence[Any] | None = None) -> CorrelationReport:
    """Measure how well label-free metrics agree with probe scores (see the module docstring).

    Args:
        source: a :class:`~speechrank.store.ResultStore`, the path of one, or result rows.
        options: which series, the probe split, the bootstrap and the orientations
            (:class:`~speechrank.analysis.options.AnalysisOptions`; default: its defaults).
        checkpoints: the checkpoint records (:class:`~speechrank.store.CheckpointRecord`)
            giving each checkpoint's step and training record; default: the store's own
            (none for rows).

    Returns:
        A :class:`CorrelationReport`.
    """
    options = options or AnalysisOptions()
    rows, records = load_source(source, checkpoints)
    found = collect_series(rows, **options.selection())
    notes = found.notes
    report = CorrelationReport([], [], [], [], [], [], {}, notes)
    flag_counts = _flag_metrics(found.metric, notes)
    analysed = _analyse_pairs(report, found, options)
    _note_unpaired(report, found)

    signals = checkpoint_signals(rows, records)
    report.baselines, report.verdicts, baseline_notes = analyse_baselines(
        analysed, signals, **options.bootstrap())
    notes.extend(baseline_notes)
    report.layer_choice, report.layer_choice_summary = layer_choices(
        found, metric_orientation=lambda m: orientation(m, kind="metric",
                                                        overrides=options.orientations),
        score_orientation=lambda s: orientation(s, kind="score",
                                                overrides=options.orientations),
        probe_split=options.probe_split)

    small = [c.n for c in report.within_layer + report.across_layers
             if math.isfinite(c.spearman) and c.n < _FEW_POINTS]
    if small and options.n_bootstrap:
        notes.append(f"{len(small)} correlation(s) rest on fewer than {_FEW_POINTS} points "
                     f"(as few as {min(small)}): their bootstrap intervals are rough, and a "
                     "perfectly monotone series gets the interval [1, 1]")
    counts = {"rows": found.n_rows, "metric_rows": found.n_metric_rows,
              "probe_rows": found.n_probe_rows, "pairs": len(analysed)}
    report.settings = _settings(report, options, counts, flag_counts, len(records))
    return report


def _flag_metrics(metric_series: Sequence[Series], notes: list[str]) -> dict[str, Any]:
    """Note the values not converged in N, or dominated by one direction, per series; the
    counts of the flagged series by label."""
    flag_counts: dict[str, Any] = {}
    for ms in metric_series:
        flag_notes, counts = series_flags(ms.label, ms.points.values())
        notes.extend(flag_notes)
        if flag_notes:
            flag_counts[ms.label] = counts
    return flag_counts


def _pair_key(ms: Series, ss: Series, options: AnalysisOptions) -> PairKey:
    model, metric, pooling, mdata = ms.key
    _, task, score, domain, pdata, ppool = ss.key
    return PairKey(model=model, metric=metric, pooling=pooling, metric_dataset=mdata,
                   metric_variant=ms.variant,
                   metric_orientation=orientation(metric, kind="metric",
                                                  overrides=options.orientations),
                   task=task, score=score, domain=domain, probe_dataset=pdata,
                   probe_pooling=ppool, split=options.probe_split, score_variant=ss.variant,
                   score_orientation=orientation(score, kind="score",
                                                 overrides=options.orientations))


def _analyse_pairs(report: CorrelationReport, found: SeriesSet, options: AnalysisOptions
                   ) -> list[tuple[PairKey, dict[Point, tuple[float, float, float]]]]:
    """Every metric series against every score series of its model that shares points with
    it: the pair's oriented cells, analysed into ``report``."""
    analysed: list[tuple[PairKey, dict[Point, tuple[float, float, float]]]] = []
    for ms in found.metric:
        for ss in found.score:
            if ss.key[0] != ms.key[0]:
                continue
            common = sorted(set(ms.points) & set(ss.points))
            if not common:
                continue
            key = _pair_key(ms, ss, options)
            cells: dict[Point, tuple[float, float, float]] = {}
            dropped = 0
            for p in common:
                m, s = ms.points[p].value, ss.points[p].value
                if not (math.isfinite(m) and math.isfinite(s)):
                    dropped += 1
                    continue
                cells[p] = (key.metric_orientation * m, key.score_orientation * s, s)
            if dropped:
                report.notes.append(f"{_label(key)}: {dropped} cell(s) with a non-finite "
                                    "metric or score left out")
            analysed.append((key, cells))
            _analyse_pair(report, key, cells, found.steps, **options.bootstrap())
    return analysed


def _note_unpaired(report: CorrelationReport, found: SeriesSet) -> None:
    for ms in found.metric:
        if ms.is_monitor:  # the monitor's held-out rows have no probes by design
            continue
        if not any(s.model == ms.key[0] and s.metric == ms.key[1] and s.pooling == ms.key[2]
                   and s.metric_dataset == ms.key[3] and s.metric_variant == ms.variant
                   for s in report.summary) and found.score:
            report.notes.append(f"metric {'/'.join(ms.key)}: no probe score on the same "
                                "checkpoints and layers")


def _settings(report: CorrelationReport, options: AnalysisOptions, counts: dict[str, int],
              flag_counts: dict[str, Any], n_records: int) -> dict[str, Any]:
    """What the report records about how it was made."""
    names_m = sorted({s.metric for s in report.summary})
    names_s = sorted({s.score for s in report.summary})
    return {
        "n_bootstrap": options.n_bootstrap, "seed": options.seed,
        "confidence": options.confidence, "probe_split": options.probe_split,
        "bootstrap": "percentile, resampling points with replacement",
        "orientation": {
            "metrics": {m: orientation(m, kind="metric", overrides=options.orientations)
                        for m in names_m},
            "scores": {s: orientation(s, kind="score", overrides=options.orientations)
                       for s in names_s},
            "rule": "statistics use orientation * value, so higher is better for every series",
        },
        "ties": "the metric's pick is the first tied candidate (lowest layer, earliest "
                "checkpoint); every candidate with the best score counts as best",
        "phases": "within each layer, checkpoints up to and from the step where the oriented "
                  "metric is lowest (that checkpoint is in both phases)",
        "counts": counts,
        "flags": flag_counts,
        "baselines": {
            "signals": "step and training record (loss, masked-prediction accuracy) of each "
                       "checkpoint, from the store's checkpoint records; the step falls back "
                       "to the rows' step column",
            "checkpoint_records": n_records,
            "partial": "Spearman of metric and score given the step: ranks residualised on "
                       "the step's ranks, Pearson of the residuals",
            "bootstrap": "checkpoints resampled with replacement, the same resamples for "
                         "every series of a model; intervals of the median over layers",
            "regret_fraction": "(best - chosen) / (best - worst) score over the candidates",
            "verdict": "told more when the interval of the median partial rho lies above 0, "
                       "or the mean regret fraction beats the last checkpoint's, the first's "
                       "and the lowest loss's by more than the standard error over layers of "
                       "the paired difference",
        },
        "layer_choice": "regret fraction over layers per checkpoint; isoscore = "
                        "(participation_ratio - 1) / (dim - 1) (Rudman et al. 2022)",
    }


def _fields(record: Any) -> dict[str, Any]:
    """A dataclass's fields as a flat dict (no deep copy: the values are immutable)."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


def _label(key: PairKey) -> str:
    return f"{key.metric}/{key.pooling} vs {key.task}:{key.score} ({key.domain or '-'})"


def _correlation(key: PairKey, *, scope: str, layer: str, checkpoint: str, step: int | None,
                 phase: str, x: list[float], y: list[float], n_bootstrap: int, seed: int,
                 confidence: float, reason: str = "") -> Correlation:
    if reason:
        stat = RankCorrelation.undefined(len(x), reason)
    else:
        stat = rank_correlation(np.asarray(x), np.asarray(y), n_bootstrap=n_bootstrap,
                                rng=bootstrap_rng(seed, x, y), confidence=confidence)
    return Correlation(**_fields(key), scope=scope, layer=layer,
                       checkpoint=checkpoint, step=step, phase=phase, **_fields(stat))


def _selection(key: PairKey, *, scope: str, layer: str, checkpoint: str, step: int | None,
               candidates: list[tuple[str, int | None, float, float, float]]) -> Selection:
    """``candidates``: (name, step, oriented metric, oriented score, raw score), in order."""
    nan = math.nan
    if len(candidates) < 2:
        return Selection(**_fields(key), scope=scope, layer=layer,
                         checkpoint=checkpoint, step=step, n_candidates=len(candidates),
                         picked=candidates[0][0] if candidates else "",
                         picked_step=candidates[0][1] if candidates else None, picked_ties=0,
                         best=(), agree=None, picked_score=nan, best_score=nan, regret=nan,
                         regret_fraction=nan,
                         reason=f"fewer than 2 candidates ({len(candidates)})")
    top_metric = max(c[2] for c in candidates)
    tied = [c for c in candidates if c[2] == top_metric]
    pick = tied[0]
    top_score = max(c[3] for c in candidates)
    best = [c for c in candidates if c[3] == top_score]
    regret = top_score - pick[3]
    spread = top_score - min(c[3] for c in candidates)
    return Selection(**_fields(key), scope=scope, layer=layer, checkpoint=checkpoint,
                     step=step, n_candidates=len(candidates), picked=pick[0],
                     picked_step=pick[1], picked_ties=len(tied), best=tuple(c[0] for c in best),
                     agree=pick[0] in {c[0] for c in best}, picked_score=pick[4],
                     best_score=best[0][4], regret=float(regret),
                     regret_fraction=float(regret / spread) if spread > 0 else nan, reason="")


def _analyse_pair(report: CorrelationReport, key: PairKey,
                  cells: Mapping[Point, tuple[float, float, float]],
                  steps: Mapping[tuple[str, str], int | None], *, n_bootstrap: int, seed: int,
                  confidence: float) -> None:
    ckpt_key = checkpoint_order(steps, key.model)
    checkpoints = sorted({c for c, _ in cells}, key=ckpt_key)
    layers = sorted({layer for _, layer in cells}, key=layer_order)
    stats_kw = {"n_bootstrap": n_bootstrap, "seed": seed, "confidence": confidence}

    within: list[Correlation] = []
    phases: list[Correlation] = []
    ck_sel: list[Selection] = []
    for layer in layers:
        series = [(c, steps.get((key.model, c))) + cells[(c, layer)]
                  for c in checkpoints if (c, layer) in cells]
        x = [s[2] for s in series]
        y = [s[3] for s in series]
        within.append(_correlation(key, scope="layer", layer=layer, checkpoint="", step=None,
                                   phase="all", x=x, y=y, **stats_kw))
        ck_sel.append(_selection(key, scope="checkpoint", layer=layer, checkpoint="", step=None,
                                 candidates=[(s[0], s[1], s[2], s[3], s[4]) for s in series]))
        phases.extend(_phase_split(key, layer, series, stats_kw))

    across: list[Correlation] = []
    layer_sel: list[Selection] = []
    for checkpoint in checkpoints:
        step = steps.get((key.model, checkpoint))
        series = [(layer, *cells[(checkpoint, layer)]) for layer in layers
                  if (checkpoint, layer) in cells]
        across.append(_correlation(key, scope="checkpoint", layer="", checkpoint=checkpoint,
                                   step=step, phase="all", x=[s[1] for s in series],
                                   y=[s[2] for s in series], **stats_kw))
        layer_sel.append(_selection(key, scope="layer", layer="", checkpoint=checkpoint,
                                    step=step,
                                    candidates=[(s[0], None, s[1], s[2], s[3]) for s in series]))

    report.within_layer.extend(within)
    report.phases.extend(phases)
    report.across_layers.extend(across)
    report.best_layer.extend(layer_sel)
    report.best_checkpoint.extend(ck_sel)

    def rate(selections: list[Selection]) -> tuple[float, int, float, float]:
        decided = [s for s in selections if s.agree is not None]
        if not decided:
            return math.nan, 0, math.nan, math.nan
        return (sum(s.agree for s in decided) / len(decided), len(decided),
                _mean(s.regret for s in decided), _mean(s.regret_fraction for s in decided))

    bl_rate, bl_n, bl_regret, bl_fraction = rate(layer_sel)
    ck_rate, ck_n, ck_regret, ck_fraction = rate(ck_sel)
    within_rho = [c.spearman for c in within if math.isfinite(c.spearman)]
    collapse = [c.spearman for c in phases if c.phase == "collapse"]
    recovery = [c.spearman for c in phases if c.phase == "recovery"]
    report.summary.append(Summary(
        **_fields(key), n_checkpoints=len(checkpoints), n_layers=len(layers),
        n_points=len(cells), within_rho_median=_median(within_rho),
        within_rho_min=min(within_rho) if within_rho else math.nan,
        within_rho_max=max(within_rho) if within_rho else math.nan,
        within_tau_median=_median(c.kendall for c in within), within_n=len(within_rho),
        across_rho_median=_median(c.spearman for c in across),
        across_n=sum(math.isfinite(c.spearman) for c in across),
        best_layer_agreement=bl_rate, best_layer_n=bl_n, best_layer_regret_mean=bl_regret,
        best_layer_regret_fraction_mean=bl_fraction,
        checkpoint_agreement=ck_rate, checkpoint_n=ck_n, checkpoint_regret_mean=ck_regret,
        checkpoint_regret_fraction_mean=ck_fraction,
        collapse_rho_median=_median(collapse),
        collapse_n=sum(math.isfinite(v) for v in collapse),
        recovery_rho_median=_median(recovery),
        recovery_n=sum(math.isfinite(v) for v in recovery)))


def _phase_split(key: PairKey, layer: str, series: list[tuple[Any, ...]],
                 stats_kw: dict[str, Any]) -> list[Correlation]:
    """Collapse and recovery correlations of one layer's checkpoint series (sorted by step).

    The split is the checkpoint where the oriented metric is lowest (the first such): the
    collapse phase runs from the first checkpoint to it, the recovery phase from it to the
    last. Splitting at the metric's own minimum is a choice made from the data, so a phase's
    rho says "did the score follow the metric's fall (rise)?", not "is the fall significant".
    """
    if len(series) < 2:
        return []
    if any(s[1] is None for s in series):
        reason = "checkpoints without a training step cannot be split into phases"
        return [_correlation(key, scope="layer", layer=layer, checkpoint="", step=None,
                             phase=phase, x=[], y=[], reason=reason, **stats_kw)
                for phase in ("collapse", "recovery")]
    lowest = min(range(len(series)), key=lambda i: (series[i][2], i))
    split_name, split_step = series[lowest][0], series[lowest][1]
    out = []
    for phase, part in (("collapse", series[:lowest + 1]), ("recovery", series[lowest:])):
        reason = ""
        if len(part) < 3:
            where = "first" if lowest == 0 else ("last" if lowest == len(series) - 1 else "")
            reason = (f"{phase} phase has {len(part)} checkpoint(s): the metric is lowest at "
                      f"step {split_step}" + (f", the {where} checkpoint" if where else ""))
        out.append(_correlation(key, scope="layer", layer=layer, checkpoint=split_name,
                                step=split_step, phase=phase, x=[s[2] for s in part],
                                y=[s[3] for s in part], reason=reason, **stats_kw))
    return out
