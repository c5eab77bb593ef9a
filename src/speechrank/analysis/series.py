"""Result rows grouped into series: one label-free metric or one probe score, by cell.

A *metric series* is every label-free row of one (model, metric, pooling, dataset); a *score
series* every probe row of one (model, task, score metric, domain, dataset, probe pooling) on
the chosen split. Its points are the (checkpoint, layer) cells. When one cell holds several
rows whose conventions differ (two ``eps`` values, two seeds), the series is split into
*variants* named by the convention keys that differ (``"eps=1e-05"``), so that different
measurements are never mixed; identical duplicates keep the last row, with a note.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from speechrank.metrics.registry import METRICS
from speechrank.results import ResultRow, layer_sort_key
from speechrank.store import VOLATILE_CONVENTION_KEYS

__all__ = ["Point", "Series", "SeriesSet", "checkpoint_order", "collect_series",
           "is_monitor_row", "layer_order"]

Point = tuple[str, str]  # (checkpoint, layer)

#: Display order of the label-free metrics: the registry's (docs/design.md, "The metrics");
#: names it does not know follow.
METRIC_ORDER: tuple[str, ...] = tuple(METRICS)
POOLING_ORDER = ("sum", "mean", "frames")
DOMAIN_ORDER = ("in", "out")

METRIC_KEY = ("model", "metric", "pooling", "dataset")
SCORE_KEY = ("model", "task", "score", "domain", "dataset", "pooling")


@dataclasses.dataclass
class Series:
    """One metric or score series: ``key`` follows :data:`METRIC_KEY` or :data:`SCORE_KEY`."""

    kind: str
    key: tuple[str, ...]
    variant: str
    points: dict[Point, ResultRow]

    @property
    def fields(self) -> dict[str, str]:
        names = METRIC_KEY if self.kind == "metric" else SCORE_KEY
        return dict(zip(names, self.key, strict=True))

    @property
    def label(self) -> str:
        f = self.fields
        if self.kind == "metric":
            text = f"{f['metric']}/{f['pooling']} on {f['dataset']}"
        else:
            text = f"{f['task']}:{f['score']} ({f['domain'] or '-'}) on {f['dataset']}"
        return f"{f['model']}: {text}" + (f" [{self.variant}]" if self.variant else "")

    @property
    def rows(self) -> list[ResultRow]:
        return list(self.points.values())

    @property
    def is_monitor(self) -> bool:
        """Whether every row came from the training monitor."""
        return bool(self.points) and all(is_monitor_row(r) for r in self.points.values())

    def checkpoints(self, steps: Mapping[tuple[str, str], int | None]) -> list[str]:
        return sorted({c for c, _ in self.points}, key=checkpoint_order(steps, self.key[0]))

    def layers(self) -> list[str]:
        return sorted({layer for _, layer in self.points}, key=layer_order)


@dataclasses.dataclass
class SeriesSet:
    """The metric and score series of a set of rows, with the step of every checkpoint."""

    metric: list[Series]
    score: list[Series]
    steps: dict[tuple[str, str], int | None]
    n_rows: int
    n_metric_rows: int
    n_probe_rows: int
    other_splits: set[str]
    notes: list[str]


def is_monitor_row(row: ResultRow) -> bool:
    """Rows written by the training monitor (``conventions["source"] == "monitor"``)."""
    return row.conventions.get("source") == "monitor"


def layer_order(layer: str) -> tuple[Any, ...]:
    """Sort key: ``cnn, 0, 1, ..., 10, ...`` then any other name."""
    return (*layer_sort_key(layer), layer)


def checkpoint_order(steps: Mapping[tuple[str, str], int | None], model: str):
    """Sort key for the checkpoints of ``model``: those without a step first, then by step."""
    def key(checkpoint: str) -> tuple[Any, ...]:
        step = steps.get((model, checkpoint))
        return (step is not None, step if step is not None else 0, checkpoint)
    return key


def _rank(value: str, order: Sequence[str]) -> tuple[int, str]:
    return (order.index(value) if value in order else len(order), value)


def _metric_sort(key: tuple[str, ...]) -> tuple[Any, ...]:
    model, metric, pooling, dataset = key
    return (model, _rank(metric, METRIC_ORDER), _rank(pooling, POOLING_ORDER), dataset)


def _score_sort(key: tuple[str, ...]) -> tuple[Any, ...]:
    model, task, score, domain, dataset, pooling = key
    return (model, task, score, _rank(domain, DOMAIN_ORDER), dataset, pooling)


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _build(kind: str, groups: Mapping[tuple[str, ...], Mapping[Point, list[ResultRow]]],
           notes: list[str]) -> list[Series]:
    out: list[Series] = []
    for key in sorted(groups, key=_metric_sort if kind == "metric" else _score_sort):
        points = groups[key]
        duplicates = [rs for rs in points.values() if len(rs) > 1]
        differing: set[str] = set()
        for rs in duplicates:
            names = set().union(*(r.conventions.keys() for r in rs)) - VOLATILE_CONVENTION_KEYS
            differing.update(k for k in names
                             if len({_canon(r.conventions.get(k)) for r in rs}) > 1)
        if not differing:
            if duplicates:
                notes.append(f"{kind} {'/'.join(key)}: {len(duplicates)} cell(s) measured more "
                             "than once with the same conventions; the last row is used")
            out.append(Series(kind, key, "", {p: rs[-1] for p, rs in points.items()}))
            continue
        by_variant: dict[str, dict[Point, ResultRow]] = defaultdict(dict)
        for p, rs in points.items():
            for r in rs:
                label = ", ".join(f"{k}={_canon(r.conventions.get(k))}" for k in sorted(differing))
                by_variant[label][p] = r
        notes.append(f"{kind} {'/'.join(key)}: conventions differ between rows of the same cell "
                     f"({', '.join(sorted(differing))}); analysed as {len(by_variant)} variants")
        out.extend(Series(kind, key, v, by_variant[v]) for v in sorted(by_variant))
    return out


def collect_series(rows: Iterable[ResultRow], *, probe_split: str = "test",
                   metrics: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
                   poolings: Sequence[str] | None = None) -> SeriesSet:
    """Group rows into metric and score series (label-free rows have an empty ``task``).

    ``metrics``/``poolings`` filter the label-free rows, ``tasks`` the probe rows; probe rows
    of other splits than ``probe_split`` are left out (``other_splits`` lists them).
    """
    rows = list(rows)
    notes: list[str] = []
    steps: dict[tuple[str, str], int | None] = {}
    for r in rows:
        if steps.get((r.model, r.checkpoint)) is None:
            steps[(r.model, r.checkpoint)] = r.step
    metric_groups: dict[tuple[str, ...], dict[Point, list[ResultRow]]] = defaultdict(
        lambda: defaultdict(list))
    score_groups: dict[tuple[str, ...], dict[Point, list[ResultRow]]] = defaultdict(
        lambda: defaultdict(list))
    other_splits: set[str] = set()
    n_metric = n_probe = 0
    for r in rows:
        if not r.task:
            if (metrics is not None and r.metric not in metrics) or (
                    poolings is not None and r.pooling not in poolings):
                continue
            metric_groups[(r.model, r.metric, r.pooling, r.dataset)][(r.checkpoint, r.layer)] \
                .append(r)
            n_metric += 1
        else:
            if tasks is not None and r.task not in tasks:
                continue
            if r.split != probe_split:
                other_splits.add(r.split)
                continue
            score_groups[(r.model, r.task, r.metric, r.domain, r.dataset, r.pooling)][
                (r.checkpoint, r.layer)].append(r)
            n_probe += 1
    if not metric_groups:
        notes.append("no label-free metric rows" + (" matching the filters" if
                                                     metrics or poolings else ""))
    if not score_groups:
        extra = f" (splits present: {', '.join(sorted(other_splits))})" if other_splits else ""
        notes.append(f"no probe rows with split {probe_split!r}{extra}")
    return SeriesSet(metric=_build("metric", metric_groups, notes),
                     score=_build("score", score_groups, notes), steps=steps, n_rows=len(rows),
                     n_metric_rows=n_metric, n_probe_rows=n_probe, other_splits=other_splits,
                     notes=notes)
