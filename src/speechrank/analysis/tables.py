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

from speechrank.analysis.correlate import (
    Correlation,
    CorrelationReport,
    PairKey,
    Selection,
)
from speechrank.results import layer_sort_key
from speechrank.tabular import Cell, TextTable

__all__ = ["fmt", "metric_label", "pair_columns", "probe_label", "render_tables"]

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
    """The headline table and, with ``detail``, the pivots: within-layer ρ by layer, the
    metric's layer pick by checkpoint, its checkpoint pick by layer and ρ per training phase
    by layer. ``width`` (the console width) splits the headline in two below 150 columns
    (without the ρ range) and the pivots into tables of columns that fit."""
    pairs = report.pairs
    varying = [c for c in pair_columns(pairs) if c not in _ALWAYS]
    tables = _summary_tables(report, varying, width)
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
