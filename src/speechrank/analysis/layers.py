"""Choosing a layer without labels, checkpoint by checkpoint, and what each choice costs.

A user who wants one layer of an encoder and has no labels can take the last layer (what most
do by default), the layer where a label-free metric is highest, or the layer an isotropy
measure prefers. For every probe score series and checkpoint this module scores each such
choice by its **regret as a fraction of the score range over layers**: ``(best - chosen) /
(best - worst)`` of the probe score across the checkpoint's layers, 0 when the choice is the
best layer and 1 when it is the worst (NaN when every layer scores the same).

Selectors:

* ``last layer``: the deepest layer the probe measured (and ``first layer``, the shallowest,
  as the other label-free default: a selector that is constant across layers picks it too,
  by the tie rule);
* every label-free metric series of the same model (``rankme/sum`` is RankMe-t, whose highest
  layer Aldeneh et al., ICASSP 2025, found does not reliably pick the best one): its highest
  layer on oriented values;
* ``isoscore/POOLING``: the layer with the highest IsoScore (Rudman et al., "IsoScore:
  Measuring the Uniformity of Embedding Space Utilization", Findings of ACL 2022), an
  isotropy measure of how evenly the layer uses its dimensions. It is a function of the
  covariance spectrum alone, ``(PR - 1) / (D - 1)`` with PR the participation ratio
  (:func:`speechrank.metrics.formulas.isoscore` derives this), so it is read off each
  ``participation_ratio`` row and its width ``dim``; the store needs no new rows.

Ties: the first (shallowest) of the layers sharing the highest selector value is chosen.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from speechrank.analysis.pairs import Choice, ModelSide, Record, ScoreSide, mean_and_se
from speechrank.analysis.series import Series, SeriesSet, layer_order
from speechrank.metrics.formulas import isoscore_from_ratio

__all__ = ["FEATURED", "LayerChoice", "LayerChoiceSummary", "layer_choices"]

#: The selectors every report shows: the paper's negative result, the default, and the
#: published isotropy alternative (frames pooling first, the frame representations that
#: isotropy studies of speech models measure).
FEATURED = ("rankme/sum", "isoscore/frames", "isoscore/mean", "isoscore/sum", "last layer",
            "first layer")


@dataclasses.dataclass(frozen=True)
class _ScoreKey(ScoreSide, ModelSide):
    """A probe score series of one model."""


@dataclasses.dataclass(frozen=True)
class _Selector(Record):
    selector: str
    metric_dataset: str
    metric_variant: str


@dataclasses.dataclass(frozen=True)
class _AtCheckpoint(Record):
    checkpoint: str
    step: int | None
    n_layers: int


@dataclasses.dataclass(frozen=True)
class LayerChoice(Choice, _AtCheckpoint, _Selector, _ScoreKey):
    """One selector's layer at one checkpoint, against one probe score series."""


@dataclasses.dataclass(frozen=True)
class LayerChoiceSummary(_Selector, _ScoreKey):
    """A selector's regret fractions over the checkpoints of one probe score series."""

    n_checkpoints: int
    n_best: int
    regret_fraction_median: float
    regret_fraction_mean: float
    regret_fraction_se: float


def _selector_series(found: SeriesSet, model: str, orient: Callable[[str], int]
                     ) -> list[tuple[str, Series, Callable[[Any], float]]]:
    """(selector name, series, value of a row) for every label-free series of ``model``."""
    out = []
    for s in found.metric:
        if s.key[0] != model or s.is_monitor:
            continue
        metric, pooling = s.key[1], s.key[2]
        sign = orient(metric)
        out.append((f"{metric}/{pooling}", s, lambda r, sign=sign: sign * r.value))
        if metric == "participation_ratio":
            out.append((f"isoscore/{pooling}", s,
                        lambda r: isoscore_from_ratio(r.value, r.dim)))
    return out


def _choose(values: dict[str, float]) -> str | None:
    best = None
    for layer in sorted(values, key=layer_order):
        v = values[layer]
        if math.isfinite(v) and (best is None or v > values[best]):
            best = layer
    return best


def layer_choices(found: SeriesSet, *, metric_orientation: Callable[[str], int],
                  score_orientation: Callable[[str], int], probe_split: str,
                  detail: Sequence[str] = FEATURED
                  ) -> tuple[list[LayerChoice], list[LayerChoiceSummary]]:
    """Every selector's layer choice per checkpoint (records only for the ``detail``
    selectors) and every selector's summary, for every probe score series of ``found``."""
    choices: list[LayerChoice] = []
    summaries: list[LayerChoiceSummary] = []
    nan = math.nan
    for ss in found.score:
        if ss.is_monitor:
            continue
        model, task, score, domain, pdata, ppool = ss.key
        sign = score_orientation(score)
        key = _ScoreKey(model, task, score, domain, pdata, ppool, probe_split, ss.variant, sign)
        checkpoints = ss.checkpoints(found.steps)
        by_checkpoint: dict[str, dict[str, float]] = {c: {} for c in checkpoints}
        for (c, layer), row in ss.points.items():
            if math.isfinite(row.value):
                by_checkpoint[c][layer] = sign * row.value
        selectors: list[tuple[str, Series | None, Callable[[Any], float] | None]] = [
            ("last layer", None, None), ("first layer", None, None),
            *_selector_series(found, model, metric_orientation)]
        for name, series, value_of in selectors:
            fractions: list[float] = []
            n_best = 0
            for checkpoint in checkpoints:
                scores = by_checkpoint[checkpoint]
                if series is None:
                    depth = 1.0 if name == "last layer" else -1.0
                    values = {layer: depth * i for i, layer in
                              enumerate(sorted(scores, key=layer_order))}
                else:
                    values = {layer: value_of(series.points[(checkpoint, layer)])
                              for layer in scores if (checkpoint, layer) in series.points}
                picked = _choose(values)
                reason = ""
                top = max(scores.values()) if scores else nan
                low = min(scores.values()) if scores else nan
                best = tuple(lay for lay in sorted(scores, key=layer_order) if scores[lay] == top)
                if len(scores) < 2:
                    reason = f"fewer than 2 layers ({len(scores)})"
                elif picked is None:
                    reason = "no selector value on the probe's layers"
                elif top == low:
                    reason = "every layer has the same score"
                regret = top - scores[picked] if picked is not None else nan
                fraction = regret / (top - low) if not reason else nan
                if not reason:
                    fractions.append(fraction)
                    n_best += picked in best
                if name in detail:
                    choices.append(LayerChoice(
                        **dataclasses.asdict(key), selector=name,
                        metric_dataset=series.key[3] if series else "",
                        metric_variant=series.variant if series else "",
                        checkpoint=checkpoint, step=found.steps.get((model, checkpoint)),
                        n_layers=len(scores), picked=picked or "", best=best,
                        picked_score=sign * scores[picked] if picked is not None else nan,
                        best_score=sign * top, regret=float(regret) if picked else nan,
                        regret_fraction=float(fraction), reason=reason))
            if series is not None and not fractions and not any(
                    (c, lay) in series.points for c, lay in ss.points):
                continue  # a metric of other checkpoints or layers: nothing to compare
            fraction_mean, fraction_se = mean_and_se(fractions)
            summaries.append(LayerChoiceSummary(
                **dataclasses.asdict(key), selector=name,
                metric_dataset=series.key[3] if series else "",
                metric_variant=series.variant if series else "",
                n_checkpoints=len(fractions), n_best=n_best,
                regret_fraction_median=statistics.median(fractions) if fractions else nan,
                regret_fraction_mean=fraction_mean, regret_fraction_se=fraction_se))
    return choices, summaries
