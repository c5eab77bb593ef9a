"""Console tables of a :class:`~speechrank.analysis.correlate.CorrelationReport`, as data
(:class:`~speechrank.tabular.TextTable`; the command line draws them).

Every table names a pair with two compact columns, ``metric`` (``rankme/sum``) and ``probe``
(``ks:accuracy (in)``), extended with the model, datasets or variants only where those differ
between pairs (:func:`pair_columns` makes the same choice for the HTML report). The detail
tables are pivoted, layers or checkpoints as columns; given the console ``width`` they are
split into several tables of columns that fit, so a 13-layer model stays readable in an
80-column terminal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from speechrank.analysis.baselines import Verdict, metric_name
from speechrank.analysis.correlate import (
    Correlation,
    CorrelationReport,
    PairKey,
    Selection,
    focus_metric,
    headline_verdicts,
    main_score,
    main_score_verdicts,
)
from speechrank.analysis.layers import FEATURED, LayerChoiceSummary
from speechrank.results import layer_sort_key
from speechrank.tabular import Cell, TextTable

__all__ = ["fmt", "layer_choice_rows", "metric_label", "pair_columns", "probe_label",
           "render_across_runs", "render_tables"]

_ALWAYS = ("metric", "pooling", "task", "score", "domain")
_WHEN_VARYING = ("model", "metric_dataset", "metric_variant", "probe_dataset", "probe_pooling",
                 "score_variant")
_CELL = 8  # width of a pivot cell with its padding and rule


def fmt(value: float | None, digits: int = 2, *, signed: bool = False) -> str:
    """A number for a table cell; ``–`` for NaN or None."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def pair_columns(pairs: Sequence[PairKey]) -> list[str]:
    """Key fields worth a column: the five that name a pair, plus any that vary."""
    cols = list(_ALWAYS)
    for name in _WHEN_VARYING:
        if len({getattr(p, name) for p in pairs}) > 1:
            cols.append(name)
    return cols


def metric_label(key: PairKey, varying: Sequence[str] = ()) -> str:
    """``rankme/sum``, ``alpha_req/sum (−)`` for a negated metric, plus varying fields."""
    text = f"{key.metric}/{key.pooling}" + (" (−)" if key.metric_orientation < 0 else "")
    if "model" in varying:
        text = f"{key.model}: {text}"
    if "metric_dataset" in varying:
        text += f" on {key.metric_dataset}"
    if "metric_variant" in varying and key.metric_variant:
        text += f" [{key.metric_variant}]"
    return text


def probe_label(key: PairKey, varying: Sequence[str] = ()) -> str:
    """``ks:accuracy (in)``, ``pr:per (−) (in)`` for a negated score, plus varying fields."""
    text = f"{key.task}:{key.score}" + (" (−)" if key.score_orientation < 0 else "")
    text += f" ({key.domain or '-'})"
    if "probe_dataset" in varying:
        text += f" on {key.probe_dataset}"
    if "probe_pooling" in varying:
        text += f" {key.probe_pooling}"
    if "score_variant" in varying and key.score_variant:
        text += f" [{key.score_variant}]"
    return text


def _key_cells(key: PairKey, varying: Sequence[str]) -> list[Cell]:
    # cells are data: names from the store are never read as markup
    return [Cell.of(metric_label(key, varying)), Cell.of(probe_label(key, varying))]


def _rho_text(value: float, p: float | None = None) -> Cell:
    if not math.isfinite(value):
        return Cell.of("–", "dim")
    style = "green" if value >= 0.5 else ("red" if value <= -0.5 else "")
    if p is not None and math.isfinite(p) and p < 0.05:
        style = (style + " bold").strip()
    return Cell.of(f"{value:+.2f}", style)


def _agreement(rate: float, n: int) -> str:
    if n == 0 or not math.isfinite(rate):
        return "–"
    return f"{round(rate * n)}/{n}"


def _table(title: str, caption: str = "") -> TextTable:
    table = TextTable(title=title, caption=caption)
    table.add_column("metric", overflow="fold", min_width=8)
    table.add_column("probe", overflow="fold", min_width=8)
    return table


_SUMMARY_CAPTION = (
    "ρ layer: median over layers of the Spearman ρ across checkpoints (range: min..max); "
    "collapse / recovery: the same per phase of training; across: median over checkpoints of "
    "ρ across layers; best layer: checkpoints where the metric's highest layer had the best "
    "score; best ckpt: layers where the metric's highest checkpoint had the best score; "
    "regret: mean best score minus the pick's. Values are oriented, higher is better "
    "((−): negated).")


def _summary_cells(s: Any) -> dict[str, Any]:
    return {
        "ρ layer": _rho_text(s.within_rho_median),
        "range": (f"{fmt(s.within_rho_min, signed=True)}..{fmt(s.within_rho_max, signed=True)}"
                  if s.within_n else "–"),
        "collapse": _rho_text(s.collapse_rho_median),
        "recovery": _rho_text(s.recovery_rho_median),
        "across": _rho_text(s.across_rho_median),
        "best layer": _agreement(s.best_layer_agreement, s.best_layer_n),
        "regret": fmt(s.best_layer_regret_mean, 3),
        "best ckpt": _agreement(s.checkpoint_agreement, s.checkpoint_n),
        "regret ": fmt(s.checkpoint_regret_mean, 3),
    }


def _summary_tables(report: CorrelationReport, varying: Sequence[str],
                    width: int | None) -> list[TextTable]:
    names = list(_summary_cells(report.summary[0]) if report.summary else [])
    groups = [names]
    if width is not None and width < 150 and names:
        # two narrower tables; the range of ρ is left to the within-layer pivot
        groups = [["ρ layer", "collapse", "recovery", "across"],
                  ["best layer", "regret", "best ckpt", "regret "]]
    tables = []
    for i, group in enumerate(groups):
        title = "Rank vs probes: headline" + (f" ({i + 1}/{len(groups)})"
                                              if len(groups) > 1 else "")
        table = _table(title, _SUMMARY_CAPTION if i == len(groups) - 1 else "")
        for name in group:
            table.add_column(name.strip(), justify="right", no_wrap=True)
        for s in report.summary:
            cells = _summary_cells(s)
            table.add_row(*_key_cells(s, varying), *[cells[n] for n in group])
        tables.append(table)
    if not tables:
        tables.append(_table("Rank vs probes: headline", "no metric-score pairs"))
    return tables


def _pivot(title: str, caption: str, varying: Sequence[str], pairs: Sequence[PairKey],
           records: Iterable[Any], column_of: Callable[[Any], str],
           column_order: Callable[[str], Any], cell: Callable[[Any], Cell],
           width: int | None, cell_width: int = _CELL) -> list[TextTable]:
    by_pair: dict[PairKey, dict[str, Any]] = {p: {} for p in pairs}
    columns: set[str] = set()
    for r in records:
        by_pair.setdefault(r.pair, {})[column_of(r)] = r
        columns.add(column_of(r))
    ordered = sorted(columns, key=column_order)
    per_table = len(ordered) or 1
    if width is not None:
        label = max((len(metric_label(p, varying)) + len(probe_label(p, varying))
                     for p in pairs), default=20)
        room = width - min(label + 7, max(24, width // 2))
        per_table = max(2, room // cell_width)
    tables = []
    for start in range(0, max(1, len(ordered)), per_table):
        chunk = ordered[start:start + per_table]
        part = "" if len(chunk) == len(ordered) else \
            f" ({start // per_table + 1}/{math.ceil(len(ordered) / per_table)})"
        is_last = start + per_table >= len(ordered)
        table = _table(title + part, caption if is_last else "")
        for c in chunk:
            table.add_column(c, justify="right", no_wrap=True)
        for p in pairs:
            row = by_pair.get(p, {})
            table.add_row(*_key_cells(p, varying),
                          *[cell(row[c]) if c in row else Cell.of("·", "dim")
                            for c in chunk])
        tables.append(table)
    return tables


def _layer_column(r: Any) -> str:
    return r.layer


def _layer_order(layer: str) -> Any:
    return (*layer_sort_key(layer), layer)


def _checkpoint_columns(report: CorrelationReport) -> tuple[Callable[[Any], str],
                                                            Callable[[str], Any]]:
    steps: dict[str, int | None] = {}
    for s in report.best_layer:
        steps[s.checkpoint] = s.step
    labels = {c: (str(st) if st is not None else c) for c, st in steps.items()}
    if len(set(labels.values())) < len(labels):  # two checkpoints share a step: use names
        labels = {c: c for c in steps}
    order = {labels[c]: (st is not None, st or 0, c) for c, st in steps.items()}
    return (lambda r: labels[r.checkpoint]), (lambda label: order[label])


def _selection_cell(s: Selection, show_pick: bool) -> Cell:
    if s.agree is None:
        return Cell.of("–", "dim")
    if s.agree:
        return Cell.of("✓" + (f" {s.picked}" if show_pick else ""), "green")
    detail = f" {s.picked}→{s.best[0]}" if show_pick else f" {s.regret:.3f}"
    return Cell.of("✗" + detail, "red")


def render_tables(report: CorrelationReport, *, detail: bool = True,
                  width: int | None = None) -> list[TextTable]:
    """The verdict per task (does the focus metric, RankMe-t, tell more than the step and the
    loss?), the free baselines beside every metric (only the focus metric's without
    ``detail``), the layer choice without labels, the headline table and, with ``detail``,
    the pivots: within-layer ρ by layer, the metric's layer pick by checkpoint, its
    checkpoint pick by layer and ρ per training phase by layer. ``width`` (the console
    width) splits the baselines and the headline in two below 150 columns (the headline
    without the ρ range) and the pivots into tables of columns that fit."""
    pairs = report.pairs
    varying = [c for c in pair_columns(pairs) if c not in _ALWAYS]
    tables = _verdict_tables(report, varying, detail, width)
    tables += _summary_tables(report, varying, width)
    if not detail or not pairs:
        return tables
    tables += _pivot(
        "Within-layer Spearman ρ across checkpoints", "bold: p < 0.05; – undefined "
        "(fewer than 3 checkpoints or a constant series)", varying, pairs,
        report.within_layer, _layer_column, _layer_order,
        lambda c: _rho_text(c.spearman, c.spearman_p), width)
    ck_col, ck_order = _checkpoint_columns(report)
    tables += _pivot(
        "Best layer by checkpoint (step)", "✓ L: the metric's highest layer L has the best "
        "score; ✗ a→b: it picks a, the best is b", varying, pairs, report.best_layer,
        ck_col, ck_order, lambda s: _selection_cell(s, show_pick=True), width)
    tables += _pivot(
        "Checkpoint selection by layer", "✓: the checkpoint with the highest metric has the "
        "best score; ✗ r: it does not, regret r in score units", varying, pairs,
        report.best_checkpoint, _layer_column, _layer_order,
        lambda s: _selection_cell(s, show_pick=False), width, cell_width=10)
    phase_rows: dict[tuple[PairKey, str], dict[str, Correlation]] = {}
    for c in report.phases:
        phase_rows.setdefault((c.pair, c.layer), {})[c.phase] = c
    combined = [_PhaseCell(pair=k[0], layer=k[1], collapse=v.get("collapse"),
                           recovery=v.get("recovery")) for k, v in phase_rows.items()]
    tables += _pivot(
        "Spearman ρ per phase: collapse / recovery", "split at the checkpoint where the "
        "layer's metric is lowest", varying, pairs, combined, _layer_column, _layer_order,
        _phase_text, width, cell_width=16)
    return tables


class _PhaseCell:
    def __init__(self, pair: PairKey, layer: str, collapse: Correlation | None,
                 recovery: Correlation | None) -> None:
        self.pair, self.layer, self.collapse, self.recovery = pair, layer, collapse, recovery


def _phase_text(cell: _PhaseCell) -> Cell:
    return Cell.join(_rho_text(cell.collapse.spearman if cell.collapse else math.nan), " / ",
                     _rho_text(cell.recovery.spearman if cell.recovery else math.nan))


# ------------------------------------------------------------------ free baselines, layers
_BASELINE_CAPTION = (
    "ρ, ρ step, ρ −loss: median over layers of the Spearman ρ across checkpoints of the "
    "metric, the training step and minus the pretraining loss with the score (the task's "
    "main score); given step: the median partial ρ of the metric given the step, with its "
    "95 % interval over resampled checkpoints; regret, last, first, low loss: mean over "
    "layers of the score lost, as a fraction of the layer's score range over checkpoints, by "
    "choosing the checkpoint with the highest metric, the last checkpoint, the first and the "
    "one with the lowest loss (± the standard error of the metric's); verdict: more when the "
    "interval lies above 0 or the metric's regret beats every baseline's by more than the "
    "standard error of the difference, against when the interval lies below 0.")

_OUTCOME_CELLS = {"told_more": ("more", "green bold"), "nothing_more": ("nothing more", ""),
                  "against": ("against", "red"), "undefined": ("–", "dim")}


def _interval_text(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "–"
    return f"[{low:+.2f}, {high:+.2f}]"


def _regret_text(value: float, se: float | None = None) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:.2f}" + (f"±{se:.2f}" if se is not None and math.isfinite(se) else "")


def _verdict_tables(report: CorrelationReport, varying: Sequence[str], detail: bool,
                    width: int | None) -> list[TextTable]:
    headline = headline_verdicts(report)
    if not headline:
        return []
    focus = focus_metric(report)
    name = metric_name(*focus) if focus else "the metric"
    sentences = TextTable(title=f"Does {name} tell more than the step and the loss?")
    sentences.add_column("verdict per task", overflow="fold")
    several = len({v.model for v in headline}) > 1
    for v in headline:
        sentences.add_row(Cell.of((f"{v.model}: " if several else "") + v.sentence))
    compact = [c for c in varying if c in ("model", "metric_variant", "score_variant")]
    groups = [["ρ", "ρ step", "ρ −loss", "given step", "interval", "regret", "last",
               "first", "low loss", "verdict"]]
    if width is not None and width < 150:
        groups = [["ρ", "ρ step", "ρ −loss", "given step", "interval"],
                  ["regret", "last", "first", "low loss", "verdict"]]
    rows: list[Verdict] = main_score_verdicts(report) if detail else headline
    tables_b = []
    for i, group in enumerate(groups):
        title = "Beside every metric: the step and the loss" + (
            f" ({i + 1}/{len(groups)})" if len(groups) > 1 else "")
        table = _table(title, _BASELINE_CAPTION if i == len(groups) - 1 else "")
        for column in group:
            table.add_column(column, justify="right", no_wrap=True)
        for v in rows:
            text, style = _OUTCOME_CELLS[v.outcome]
            cells = {"ρ": _rho_text(v.metric_rho), "ρ step": _rho_text(v.step_rho),
                     "ρ −loss": _rho_text(v.loss_rho), "given step": _rho_text(v.partial),
                     "interval": Cell.of(_interval_text(v.partial_low, v.partial_high)),
                     "regret": Cell.of(_regret_text(v.regret_metric, v.regret_metric_se)),
                     "last": Cell.of(_regret_text(v.regret_last)),
                     "first": Cell.of(_regret_text(v.regret_first)),
                     "low loss": Cell.of(_regret_text(v.regret_loss)),
                     "verdict": Cell.of(text, style)}
            table.add_row(*_key_cells(v, compact), *[cells[c] for c in group])
        tables_b.append(table)
    tables = [sentences, *tables_b]
    layer_table = _layer_choice_table(report)
    if layer_table is not None:
        tables.append(layer_table)
    return tables


def layer_choice_rows(report: CorrelationReport
                      ) -> tuple[list[str], list[tuple[str, dict[str, LayerChoiceSummary]]]]:
    """The featured selectors present and, per task (its main score), their summaries:
    ``(selectors, [(task label, {selector: summary})])``."""
    groups: dict[tuple[str, ...], list[LayerChoiceSummary]] = {}
    for s in report.layer_choice_summary:
        groups.setdefault((s.model, s.task, s.domain, s.probe_dataset, s.probe_pooling,
                           s.score_variant), []).append(s)
    present = {s.selector for s in report.layer_choice_summary}
    selectors = [name for name in FEATURED if name in present]
    # one isoscore column: the first pooling present, in FEATURED's order
    iso = [name for name in selectors if name.startswith("isoscore/")]
    selectors = [name for name in selectors if not name.startswith("isoscore/") or
                 name == (iso[0] if iso else None)]
    models = {k[0] for k in groups}
    out = []
    for key, summaries in groups.items():
        score = main_score(s.score for s in summaries)
        label = (f"{key[0]}: " if len(models) > 1 else "") + f"{key[1]}:{score} ({key[2] or '-'})"
        out.append((label, {s.selector: s for s in summaries if s.score == score}))
    return selectors, out


def _layer_choice_table(report: CorrelationReport) -> TextTable | None:
    selectors, rows = layer_choice_rows(report)
    if not rows:
        return None
    table = TextTable(
        title="Choosing a layer without labels (regret as a fraction of the score range)",
        caption="median over checkpoints of (best − chosen) / (best − worst) probe score over "
                "the layers; in brackets, checkpoints where the choice was a best layer. "
                "rankme/sum: RankMe-t's highest layer; isoscore: IsoScore's (Rudman et al. "
                "2022, (PR − 1)/(D − 1) of the participation ratio PR); last layer, first "
                "layer: the deepest, the shallowest.")
    table.add_column("probe", overflow="fold", min_width=8)
    for name in selectors:
        table.add_column(name, justify="right", no_wrap=True)
    for label, by_selector in rows:
        cells = []
        for name in selectors:
            s = by_selector.get(name)
            if s is None or not s.n_checkpoints:
                cells.append(Cell.of("–", "dim"))
                continue
            cells.append(Cell.of(f"{s.regret_fraction_median:.2f} "
                                 f"({s.n_best}/{s.n_checkpoints})"))
        table.add_row(Cell.of(label), *cells)
    return table


# ------------------------------------------------------------------ across runs
def render_across_runs(result: Any, *, detail: bool = True) -> list[TextTable]:
    """Tables of a :class:`~speechrank.analysis.across_runs.AcrossRuns`: the runs compared,
    and per signal and task (main scores; every score with ``detail``) the median Spearman ρ
    across runs over layers and the regret of choosing the best run by the signal."""
    runs = TextTable(title=f"Runs compared (step: {result.step})")
    for column in ("run", "checkpoint", "step", "loss", "masked acc."):
        runs.add_column(column, justify="left" if column in ("run", "checkpoint") else "right")
    for p in result.runs:
        runs.add_row(Cell.of(p.run), Cell.of(p.checkpoint),
                     Cell.of("–" if p.step is None else str(p.step)),
                     Cell.of(fmt(p.loss if p.loss is not None else math.nan, 3)),
                     Cell.of(fmt(p.train_accuracy if p.train_accuracy is not None
                                 else math.nan, 3)))
    table = TextTable(
        title="Across runs: does the signal pick the better run?",
        caption="ρ: median over layers of the Spearman ρ across runs of the signal with the "
                "score (oriented: loss negated); range: over layers; sig.: layers whose 95 % "
                "interval over resampled runs excludes 0; regret: mean over layers of "
                "(best − chosen) / (best − worst) score over the runs when the run with the "
                "highest signal is chosen (± standard error); best: layers where it chose a "
                "best run.")
    for column, justify in (("signal", "left"), ("probe", "left"), ("ρ", "right"),
                            ("range", "right"), ("sig.", "right"), ("regret", "right"),
                            ("best", "right")):
        table.add_column(column, justify=justify, no_wrap=column not in ("signal", "probe"),
                         overflow="fold" if column in ("signal", "probe") else None)
    scores: dict[tuple[str, ...], set[str]] = {}
    for s in result.summary:
        scores.setdefault((s.task, s.domain, s.probe_dataset, s.probe_pooling,
                           s.score_variant), set()).add(s.score)
    main = {k: main_score(v) for k, v in scores.items()}
    chosen = [s for s in result.summary if detail or s.score == main[
        (s.task, s.domain, s.probe_dataset, s.probe_pooling, s.score_variant)]]
    chosen.sort(key=lambda s: (s.task, s.domain, s.score, s.kind != "training", s.signal))
    for s in chosen:
        signal = s.signal + (" (−)" if s.metric_orientation < 0 else "")
        table.add_row(Cell.of(signal), Cell.of(f"{s.task}:{s.score} ({s.domain or '-'})"),
                      _rho_text(s.rho_median),
                      Cell.of(f"{fmt(s.rho_min, signed=True)}..{fmt(s.rho_max, signed=True)}"
                              if math.isfinite(s.rho_median) else "–"),
                      Cell.of(f"{s.n_significant}/{s.n_layers}"),
                      Cell.of(_regret_text(s.regret_fraction_mean, s.regret_fraction_se)),
                      Cell.of(f"{s.n_best}/{s.n_layers}"))
    return [runs, table]
