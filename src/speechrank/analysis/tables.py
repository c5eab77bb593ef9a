"""Rich tables of a :class:`~speechrank.analysis.correlate.CorrelationReport` for the terminal.

Pairs are rows; layers or checkpoints are columns (pivoted, so a 13-layer model fits on one
screen). Key columns that are the same for every pair (one model, one dataset, ...) are left
out; :func:`pair_columns` decides which, and the HTML report uses it too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from speechrank.analysis.correlate import (
    Correlation,
    CorrelationReport,
    PairKey,
    Selection,
)
from speechrank.results import layer_sort_key

__all__ = ["fmt", "pair_columns", "render_tables"]

_ALWAYS = ("metric", "pooling", "task", "score", "domain")
_WHEN_VARYING = ("model", "metric_dataset", "metric_variant", "probe_dataset", "probe_pooling",
                 "score_variant")
_HEADERS = {
    "model": "model", "metric": "metric", "pooling": "pooling", "task": "task",
    "score": "score", "domain": "domain", "metric_dataset": "metric data",
    "metric_variant": "metric variant", "probe_dataset": "probe data",
    "probe_pooling": "probe pooling", "score_variant": "score variant",
}


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


def _orientation_mark(key: PairKey, name: str) -> str:
    value = getattr(key, name)
    return value + (" (−)" if (name == "metric" and key.metric_orientation < 0)
                    or (name == "score" and key.score_orientation < 0) else "")


def _key_cells(key: PairKey, cols: Sequence[str]) -> list[Text]:
    # Text, not str: names come from the data and must never be read as rich markup
    return [Text(_orientation_mark(key, c) if c in ("metric", "score") else str(getattr(key, c)))
            for c in cols]


def _rho_text(value: float, p: float | None = None) -> Text:
    if not math.isfinite(value):
        return Text("–", style="dim")
    style = "green" if value >= 0.5 else ("red" if value <= -0.5 else "")
    if p is not None and math.isfinite(p) and p < 0.05:
        style = (style + " bold").strip()
    return Text(f"{value:+.2f}", style=style)


def _agreement(rate: float, n: int) -> str:
    if n == 0 or not math.isfinite(rate):
        return "–"
    return f"{round(rate * n)}/{n}"


def _table(title: str, cols: Sequence[str], caption: str = "") -> Table:
    table = Table(title=title, caption=caption or None, title_justify="left",
                  caption_justify="left", show_lines=False)
    for c in cols:
        table.add_column(_HEADERS[c], no_wrap=True)
    return table


def _summary_table(report: CorrelationReport, cols: Sequence[str]) -> Table:
    table = _table("Rank vs probes: headline", cols,
                   caption="ρ: Spearman on oriented values, higher is better for both "
                           "((−) marks a negated series); medians over the layers or "
                           "checkpoints where ρ is defined. best layer / best ckpt: how often "
                           "the metric's pick had the best score; regret: mean best score "
                           "minus the pick's score.")
    for name in ("median ρ in layer", "ρ range", "best layer", "regret",
                 "best ckpt", "regret ", "ρ collapse", "ρ recovery", "median ρ across layers"):
        table.add_column(name, justify="right", no_wrap=True)
    for s in report.summary:
        table.add_row(
            *_key_cells(s, cols), _rho_text(s.within_rho_median),
            f"{fmt(s.within_rho_min, signed=True)}..{fmt(s.within_rho_max, signed=True)}"
            f" ({s.within_n})" if s.within_n else "–",
            _agreement(s.best_layer_agreement, s.best_layer_n), fmt(s.best_layer_regret_mean, 3),
            _agreement(s.checkpoint_agreement, s.checkpoint_n), fmt(s.checkpoint_regret_mean, 3),
            _rho_text(s.collapse_rho_median), _rho_text(s.recovery_rho_median),
            _rho_text(s.across_rho_median))
    return table


def _pivot(title: str, caption: str, cols: Sequence[str], pairs: Sequence[PairKey],
           records: Iterable[Any], column_of: Callable[[Any], str],
           column_order: Callable[[str], Any], cell: Callable[[Any], Any]) -> Table:
    by_pair: dict[PairKey, dict[str, Any]] = {p: {} for p in pairs}
    columns: set[str] = set()
    for r in records:
        by_pair.setdefault(r.pair, {})[column_of(r)] = r
        columns.add(column_of(r))
    ordered = sorted(columns, key=column_order)
    table = _table(title, cols, caption)
    for c in ordered:
        table.add_column(Text(c), justify="right", no_wrap=True)
    for p in pairs:
        row = by_pair.get(p, {})
        table.add_row(*_key_cells(p, cols),
                      *[cell(row[c]) if c in row else Text("·", style="dim") for c in ordered])
    return table


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


def _selection_cell(s: Selection, show_pick: bool) -> Text:
    if s.agree is None:
        return Text("–", style="dim")
    if s.agree:
        return Text("✓" + (f" {s.picked}" if show_pick else ""), style="green")
    detail = f" {s.picked}→{s.best[0]}" if show_pick else f" {s.regret:.3g}"
    return Text("✗" + detail, style="red")


def render_tables(report: CorrelationReport, *, detail: bool = True) -> list[Table]:
    """The headline table and, with ``detail``, the per-layer and per-checkpoint pivots:
    within-layer ρ by layer, the metric's layer pick by checkpoint, its checkpoint pick by
    layer and ρ per training phase by layer."""
    pairs = report.pairs
    cols = pair_columns(pairs)
    tables = [_summary_table(report, cols)]
    if not detail or not pairs:
        return tables
    tables.append(_pivot(
        "Within-layer Spearman ρ across checkpoints", "bold: p < 0.05; – undefined "
        "(fewer than 3 checkpoints or a constant series)", cols, pairs,
        report.within_layer, _layer_column, _layer_order,
        lambda c: _rho_text(c.spearman, c.spearman_p)))
    ck_col, ck_order = _checkpoint_columns(report)
    tables.append(_pivot(
        "Best layer by checkpoint (step)", "✓ L: the metric's highest layer L has the best "
        "score; ✗ a→b: it picks a, the best is b", cols, pairs, report.best_layer,
        ck_col, ck_order, lambda s: _selection_cell(s, show_pick=True)))
    tables.append(_pivot(
        "Checkpoint selection by layer", "✓: the checkpoint with the highest metric has the "
        "best score; ✗ r: it does not, regret r in score units", cols, pairs,
        report.best_checkpoint, _layer_column, _layer_order,
        lambda s: _selection_cell(s, show_pick=False)))
    phase_rows: dict[tuple[PairKey, str], dict[str, Correlation]] = {}
    for c in report.phases:
        phase_rows.setdefault((c.pair, c.layer), {})[c.phase] = c
    combined = [_PhaseCell(pair=k[0], layer=k[1], collapse=v.get("collapse"),
                           recovery=v.get("recovery")) for k, v in phase_rows.items()]
    tables.append(_pivot(
        "Spearman ρ per phase: collapse / recovery", "split at the checkpoint where the "
        "layer's metric is lowest", cols, pairs, combined, _layer_column, _layer_order,
        _phase_text))
    return tables


class _PhaseCell:
    def __init__(self, pair: PairKey, layer: str, collapse: Correlation | None,
                 recovery: Correlation | None) -> None:
        self.pair, self.layer, self.collapse, self.recovery = pair, layer, collapse, recovery


def _phase_text(cell: _PhaseCell) -> Text:
    text = Text()
    text.append_text(_rho_text(cell.collapse.spearman if cell.collapse else math.nan))
    text.append(" / ")
    text.append_text(_rho_text(cell.recovery.spearman if cell.recovery else math.nan))
    return text

