"""Does a label-free metric say more than the step and the loss? The free baselines of a pair.

Within a layer, across checkpoints, a metric that rises with the probe score is only useful
if it says something that the training run did not already say for free: how far training
has gone (the step) and how low the pretraining loss is (see :mod:`.training`). For every
pair (label-free metric series x probe score series) and layer this module reports

* the within-layer Spearman rho, across checkpoints, of the metric, of the step and of minus
  the loss (and of the masked-prediction accuracy) with the score, on oriented values;
* the **partial Spearman** of the metric with the score given the step: the ranks of both are
  residualised on the step's ranks by least squares and the residuals correlated, i.e.
  ``(r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2))`` on the ranks' correlations
  (Yule 1907; for ranks, Kendall & Stuart, *The Advanced Theory of Statistics*, vol. 2). It is
  near 0 when the metric tracks the score only as far as both follow training time, and taken
  as 0 when the step's ranks determine the metric's or the score's (the formula's 0/0: given
  the step there is nothing left to tell), in the sample and in every resample alike, so
  that a resample where a layer is step-determined counts as "nothing beyond the step"
  instead of dropping out of the median;
* the **regret as a fraction of the score range** over the layer's checkpoints of choosing the
  checkpoint by the metric (its highest value), by the last checkpoint, by the first and by
  the lowest loss (checkpoints without a loss are not candidates for that choice):
  ``(best - chosen) / (best - worst)``, 0 when the choice is the best checkpoint, 1 when it is
  the worst. The step can be read both ways: the last checkpoint is what a user takes, the
  first is what a metric that cannot tell the checkpoints apart picks (by the tie rule), and
  it is the best choice for a probe that training makes worse (speaker identity, here).

**Bootstrap.** Checkpoints are the units that are resampled (with replacement), once per
model: every series of the model is read on the same resamples, so a resample's median over
layers of the partial rho is one draw of the pair's headline statistic and its percentile
interval covers the whole pair. The resamples are drawn from a stream seeded by the seed and
the model's steps alone, so an interval depends neither on names nor on what else is analysed.
All statistics of all resamples come from rank matrices computed once per series
(:func:`speechrank.analysis.stats.centred_ranks`), so the bootstrap costs a few array
operations per layer.

**Verdict per pair.** The metric *told more than the baselines* when the percentile interval of
its median partial rho lies above 0 (it is oriented, so above 0 means "higher metric, better
score, beyond what the step says"), or when its checkpoint choice beats every baseline's (the
last checkpoint, the first, the lowest loss) by more than the standard error over layers of the
paired difference of regrets. Beating the last checkpoint alone is no evidence: on a probe that
is best at initialisation, any rule that picks early does, including a metric that is the same
at every checkpoint. An interval below 0 says the metric carries something beyond the step, but
against the score: a user following it would be misled, so that is not "told more" (outcome
``against``). Without a loss in the store the regret comparison is against the first and the
last checkpoint only, and the sentence says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from speechrank.analysis.pairs import PairKey
from speechrank.analysis.series import Point, checkpoint_order, layer_order
from speechrank.analysis.stats import (
    MIN_POINTS,
    centred_ranks,
    correlation_of_ranks,
    partial_from_correlations,
    resample_counts,
)
from speechrank.analysis.training import SIGNALS, CheckpointSignals

__all__ = ["BaselineLayer", "Verdict", "analyse_baselines", "metric_name", "verdict_sentence"]

#: Outcomes of a verdict.
OUTCOMES = ("told_more", "nothing_more", "against", "undefined")


@dataclasses.dataclass(frozen=True)
class BaselineLayer(PairKey):
    """The free baselines of one pair in one layer (see the module docstring).

    Correlations are on oriented values; ``partial_low``/``partial_high`` the percentile
    bootstrap interval of this layer's partial rho; regrets are fractions of ``score_range``
    (the best minus the worst score over the layer's checkpoints).
    """

    layer: str
    n: int
    metric_rho: float
    step_rho: float
    loss_rho: float
    loss_n: int
    train_accuracy_rho: float
    partial: float
    partial_low: float
    partial_high: float
    regret_metric: float
    regret_last: float
    regret_first: float
    regret_loss: float
    picked: str
    last: str
    lowest_loss: str
    score_range: float
    reason: str


@dataclasses.dataclass(frozen=True)
class Verdict(PairKey):
    """Did the metric tell more than the step and the loss, over the layers of one pair?

    ``*_rho`` are medians over layers of the within-layer Spearman rho, each with the
    percentile interval of that median over resampled checkpoints; ``partial`` is the median
    partial rho given the step. ``regret_*`` are means over layers of the regret fraction;
    ``regret_metric_se`` the standard error of the metric's; ``margin_last``,
    ``margin_first`` and ``margin_loss`` the mean paired difference (baseline's regret minus
    the metric's; positive: the metric chose better) and ``*_se`` its standard error over
    layers.
    """

    n_checkpoints: int
    n_layers: int
    loss_available: bool
    metric_rho: float
    metric_rho_low: float
    metric_rho_high: float
    step_rho: float
    step_rho_low: float
    step_rho_high: float
    loss_rho: float
    loss_rho_low: float
    loss_rho_high: float
    train_accuracy_rho: float
    partial: float
    partial_low: float
    partial_high: float
    regret_metric: float
    regret_metric_se: float
    regret_last: float
    regret_first: float
    regret_loss: float
    margin_last: float
    margin_last_se: float
    margin_first: float
    margin_first_se: float
    margin_loss: float
    margin_loss_se: float
    outcome: str
    told_more: bool | None
    grounds: str
    sentence: str


# ------------------------------------------------------------------------------- resampling
class _Resamples:
    """One model's checkpoints, one set of bootstrap resamples of them, and the centred rank
    matrices of every series read on them (cached by series and checkpoint subset)."""

    def __init__(self, checkpoints: Sequence[str], steps: Sequence[int | None],
                 n_bootstrap: int, seed: int) -> None:
        self.index = {c: i for i, c in enumerate(checkpoints)}
        n = len(checkpoints)
        self.counts: np.ndarray | None = None
        if n_bootstrap > 0 and n > 0:
            known = np.asarray([-1.0 if s is None else float(s) for s in steps])
            digest = hashlib.sha256(n.to_bytes(8, "big") + known.tobytes()).digest()
            rng = np.random.default_rng(np.random.SeedSequence(
                [seed, int.from_bytes(digest[:8], "big")]))
            self.counts = resample_counts(rng, n, n_bootstrap)
        self._cache: dict[Any, tuple[np.ndarray, np.ndarray | None]] = {}
        self._corr: dict[Any, tuple[float, np.ndarray | None]] = {}

    def ranks(self, tag: Any, idx: tuple[int, ...], values: Sequence[float]
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """Centred ranks of ``values`` (the series ``tag`` at checkpoints ``idx``) in the
        sample itself (shape (1, k)) and in every resample (shape (B, k), or None)."""
        key = (tag, idx)
        hit = self._cache.get(key)
        if hit is None:
            v = np.asarray(values, dtype=np.float64)
            point = centred_ranks(v, np.ones((1, v.size)))
            boot = None if self.counts is None else centred_ranks(v, self.counts[:, list(idx)])
            hit = self._cache[key] = (point, boot)
        return hit

    def weights(self, idx: tuple[int, ...]) -> np.ndarray | None:
        return None if self.counts is None else self.counts[:, list(idx)]

    def corr(self, a: tuple[Any, Sequence[float]], b: tuple[Any, Sequence[float]],
             idx: tuple[int, ...]) -> tuple[float, np.ndarray | None]:
        """Spearman's rho of series ``a`` and ``b`` ((tag, values) at checkpoints ``idx``)
        in the sample and in every resample, computed once per pair of series."""
        key = (a[0], b[0], idx)
        hit = self._corr.get(key)
        if hit is None:
            hit = self._corr[key] = _corr(self.ranks(a[0], idx, a[1]),
                                          self.ranks(b[0], idx, b[1]), self.weights(idx))
        return hit


def _corr(a: tuple[np.ndarray, np.ndarray | None], b: tuple[np.ndarray, np.ndarray | None],
          weights: np.ndarray | None) -> tuple[float, np.ndarray | None]:
    point = float(correlation_of_ranks(a[0], b[0], np.ones_like(a[0]))[0])
    boot = None
    if weights is not None and a[1] is not None and b[1] is not None:
        boot = correlation_of_ranks(a[1], b[1], weights)
    return point, boot


def _interval(draws: np.ndarray | None, confidence: float) -> tuple[float, float]:
    if draws is None:
        return math.nan, math.nan
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(finite, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(low), float(high)


def _median_draws(per_layer: list[np.ndarray | None]) -> np.ndarray | None:
    """Median over layers of each resample (NaN-ignoring; NaN where no layer is defined)."""
    arrays = [a for a in per_layer if a is not None]
    if not arrays:
        return None
    stack = np.vstack(arrays)
    out = np.full(stack.shape[1], np.nan)
    ok = np.isfinite(stack).any(axis=0)
    if ok.any():
        out[ok] = np.nanmedian(stack[:, ok], axis=0)
    return out


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.median(finite)) if finite else math.nan


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    finite = np.asarray([v for v in values if math.isfinite(v)])
    if finite.size == 0:
        return math.nan, math.nan
    mean = float(finite.mean())
    se = float(finite.std(ddof=1) / math.sqrt(finite.size)) if finite.size > 1 else math.nan
    return mean, se


def _beyond_step(r_xy: Any, r_xz: Any, r_yz: Any) -> np.ndarray:
    """The partial rho given the step, 0 where the step determines the metric's or the
    score's ranks (|rho| = 1 with the step): nothing is left for the metric to tell, which is
    the question asked, where the partial correlation itself is 0/0. NaN stays NaN (a series
    constant in a resample)."""
    partial = partial_from_correlations(r_xy, r_xz, r_yz)
    r_xy, r_xz, r_yz = (np.asarray(v, dtype=np.float64) for v in (r_xy, r_xz, r_yz))
    determined = (np.isfinite(r_xy) & np.isfinite(r_xz) & np.isfinite(r_yz)
                  & ((1.0 - r_xz ** 2) * (1.0 - r_yz ** 2) <= 1e-12))
    return np.where(determined, 0.0, partial)


# ------------------------------------------------------------------------------- choices
def _regret(scores: Sequence[float], chosen: int | None) -> float:
    """(best - chosen) / (best - worst) of oriented ``scores``; NaN when undefined."""
    if chosen is None or len(scores) < 2:
        return math.nan
    best, worst = max(scores), min(scores)
    if best == worst:
        return math.nan
    return float((best - scores[chosen]) / (best - worst))


def _argmax_first(values: Sequence[float]) -> int | None:
    best = None
    for i, v in enumerate(values):
        if math.isfinite(v) and (best is None or v > values[best]):
            best = i
    return best


# ------------------------------------------------------------------------------- analysis
def analyse_baselines(pairs: Sequence[tuple[PairKey, Mapping[Point, tuple[float, float, float]]]],
                      signals: Mapping[tuple[str, str], CheckpointSignals], *,
                      n_bootstrap: int, seed: int, confidence: float
                      ) -> tuple[list[BaselineLayer], list[Verdict], list[str]]:
    """The free baselines of every pair, per layer, and the verdict of every pair.

    ``pairs`` are (key, cells) with cells ``{(checkpoint, layer): (oriented metric, oriented
    score, raw score)}`` as :func:`speechrank.analysis.correlate.correlate` builds them;
    ``signals`` the free signals by (model, checkpoint).
    """
    notes: list[str] = []
    resamplers: dict[str, _Resamples] = {}
    orders: dict[str, list[str]] = {}
    steps = {k: s.step for k, s in signals.items()}
    for key, cells in pairs:
        orders.setdefault(key.model, [])
        orders[key.model].extend(c for c, _ in cells)
    for model, names in orders.items():
        ordered = sorted(set(names), key=checkpoint_order(steps, model))
        orders[model] = ordered
        resamplers[model] = _Resamples(
            ordered, [steps.get((model, c)) for c in ordered], n_bootstrap, seed)
        sig = [signals.get((model, c)) for c in ordered]
        if any(s is None or s.step is None for s in sig):
            notes.append(f"{model}: checkpoints without a training step; the step baseline "
                         "and the partial rho given the step are undefined")
        if not any(s is not None and s.loss is not None for s in sig):
            recorded = any(s is not None and s.recorded for s in sig)
            notes.append(f"{model}: no pretraining loss " + (
                "in the checkpoint records" if recorded else
                "(the store has no checkpoint records: rerun the sweep on the checkpoints "
                "to record them)") + "; the loss baseline is unavailable")

    layers_out: list[BaselineLayer] = []
    verdicts: list[Verdict] = []
    for key, cells in pairs:
        res = resamplers[key.model]
        order = orders[key.model]
        per_layer: list[tuple[BaselineLayer, dict[str, np.ndarray | None]]] = []
        for layer in sorted({lay for _, lay in cells}, key=layer_order):
            per_layer.append(_layer(key, layer, cells, order, signals, res, confidence))
        layers_out.extend(rec for rec, _ in per_layer)
        verdicts.append(_verdict(key, per_layer, confidence))
    return layers_out, verdicts, notes


def _layer(key: PairKey, layer: str, cells: Mapping[Point, tuple[float, float, float]],
           order: Sequence[str], signals: Mapping[tuple[str, str], CheckpointSignals],
           res: _Resamples, confidence: float
           ) -> tuple[BaselineLayer, dict[str, np.ndarray | None]]:
    nan = math.nan
    names = [c for c in order if (c, layer) in cells]
    idx = tuple(res.index[c] for c in names)
    x = [cells[(c, layer)][0] for c in names]
    y = [cells[(c, layer)][1] for c in names]
    sig = [signals.get((key.model, c)) for c in names]
    metric_tag = ("m", key.model, key.metric, key.pooling, key.metric_dataset,
                  key.metric_variant, key.metric_orientation, layer)
    score_tag = ("s", key.model, key.task, key.score, key.domain, key.probe_dataset,
                 key.probe_pooling, key.score_variant, key.score_orientation, layer)
    draws: dict[str, np.ndarray | None] = {}
    reason = ""
    metric_rho = step_rho = loss_rho = acc_rho = partial = nan
    p_low = p_high = nan
    loss_n = 0
    if len(names) >= MIN_POINTS:
        metric_rho, draws["metric"] = res.corr((metric_tag, x), (score_tag, y), idx)
        if all(s is not None and s.step is not None for s in sig):
            z = ("step",), [float(s.step) for s in sig]  # type: ignore[union-attr]
            step_rho, draws["step"] = res.corr((score_tag, y), z, idx)
            r_xz, b_xz = res.corr((metric_tag, x), z, idx)
            partial = float(_beyond_step(metric_rho, r_xz, step_rho))
            if draws["metric"] is not None and b_xz is not None:
                draws["partial"] = _beyond_step(draws["metric"], b_xz, draws["step"])
                p_low, p_high = _interval(draws["partial"], confidence)
        else:
            reason = "checkpoints without a training step"
        for signal, target in (("loss", "loss"), ("train_accuracy", "train_accuracy")):
            keep = [i for i, s in enumerate(sig) if s is not None and s.value(signal) is not None]
            if signal == "loss":
                loss_n = len(keep)
            if len(keep) < MIN_POINTS:
                continue
            sub = tuple(idx[i] for i in keep)
            value, draws[target] = res.corr(
                (score_tag, [y[i] for i in keep]),
                ((signal,), [SIGNALS[signal] * sig[i].value(signal)  # type: ignore[union-attr,operator]
                             for i in keep]), sub)
            if signal == "loss":
                loss_rho = value
            else:
                acc_rho = value
    else:
        reason = f"fewer than {MIN_POINTS} checkpoints ({len(names)})"

    picked = _argmax_first(x)
    last = len(names) - 1 if names else None
    losses = [sig[i].loss if sig[i] is not None else None for i in range(len(names))]
    with_loss = [i for i, v in enumerate(losses) if v is not None]
    lowest = min(with_loss, key=lambda i: (losses[i], i)) if with_loss else None
    score_range = (max(y) - min(y)) if len(y) >= 2 else nan
    record = BaselineLayer(
        **dataclasses.asdict(key), layer=layer, n=len(names), metric_rho=metric_rho,
        step_rho=step_rho, loss_rho=loss_rho, loss_n=loss_n, train_accuracy_rho=acc_rho,
        partial=partial, partial_low=p_low, partial_high=p_high,
        regret_metric=_regret(y, picked), regret_last=_regret(y, last),
        regret_first=_regret(y, 0 if names else None),
        regret_loss=_regret(y, lowest),
        picked=names[picked] if picked is not None else "",
        last=names[last] if last is not None else "",
        lowest_loss=names[lowest] if lowest is not None else "",
        score_range=float(abs(score_range)) if math.isfinite(score_range) else nan,
        reason=reason)
    return record, draws


def _verdict(key: PairKey, per_layer: Sequence[tuple[BaselineLayer, dict[str, Any]]],
             confidence: float) -> Verdict:
    records = [r for r, _ in per_layer]
    med: dict[str, tuple[float, float, float]] = {}
    for name, attr in (("metric", "metric_rho"), ("step", "step_rho"), ("loss", "loss_rho"),
                       ("partial", "partial")):
        draws = _median_draws([d.get(name) for _, d in per_layer])
        med[name] = (_median([getattr(r, attr) for r in records]), *_interval(draws, confidence))
    loss_available = any(r.loss_n > 0 for r in records)
    regret_metric, regret_metric_se = _mean_se([r.regret_metric for r in records])
    regret_last = _mean_se([r.regret_last for r in records])[0]
    regret_first = _mean_se([r.regret_first for r in records])[0]
    regret_loss = _mean_se([r.regret_loss for r in records])[0]
    margin_last, margin_last_se = _mean_se([r.regret_last - r.regret_metric for r in records])
    margin_first, margin_first_se = _mean_se([r.regret_first - r.regret_metric
                                              for r in records])
    margin_loss, margin_loss_se = _mean_se([r.regret_loss - r.regret_metric for r in records])
    n_checkpoints = max((r.n for r in records), default=0)

    partial, p_low, p_high = med["partial"]
    by_partial = math.isfinite(p_low) and p_low > 0
    against = math.isfinite(p_high) and p_high < 0

    def beats(margin: float, se: float) -> bool:
        return math.isfinite(margin) and math.isfinite(se) and margin > se

    by_regret = beats(margin_last, margin_last_se) and beats(
        margin_first, margin_first_se) and (
        not loss_available or beats(margin_loss, margin_loss_se))
    decidable = math.isfinite(partial) or math.isfinite(margin_last)
    if not decidable:
        outcome, told = "undefined", None
    elif by_partial or by_regret:
        outcome, told = "told_more", True
    elif against:
        outcome, told = "against", False
    else:
        outcome, told = "nothing_more", False
    grounds = " and ".join(g for g, on in (("partial", by_partial), ("regret", by_regret)) if on)
    verdict = Verdict(
        **dataclasses.asdict(key), n_checkpoints=n_checkpoints, n_layers=len(records),
        loss_available=loss_available,
        metric_rho=med["metric"][0], metric_rho_low=med["metric"][1],
        metric_rho_high=med["metric"][2],
        step_rho=med["step"][0], step_rho_low=med["step"][1], step_rho_high=med["step"][2],
        loss_rho=med["loss"][0], loss_rho_low=med["loss"][1], loss_rho_high=med["loss"][2],
        train_accuracy_rho=_median([r.train_accuracy_rho for r in records]),
        partial=partial, partial_low=p_low, partial_high=p_high,
        regret_metric=regret_metric, regret_metric_se=regret_metric_se,
        regret_last=regret_last, regret_first=regret_first, regret_loss=regret_loss,
        margin_last=margin_last, margin_last_se=margin_last_se,
        margin_first=margin_first, margin_first_se=margin_first_se,
        margin_loss=margin_loss, margin_loss_se=margin_loss_se,
        outcome=outcome, told_more=told, grounds=grounds, sentence="")
    reason = next((r.reason for r in records if r.reason), "no layer with 3 checkpoints")
    return dataclasses.replace(verdict, sentence=verdict_sentence(verdict, reason=reason))


# ------------------------------------------------------------------------------- wording
def metric_name(metric: str, pooling: str) -> str:
    """``RankMe-t`` for RankMe of summed frames (Aldeneh et al.'s name), else ``metric/pooling``."""
    return "RankMe-t" if (metric, pooling) == ("rankme", "sum") else f"{metric}/{pooling}"


def _f(value: float, digits: int = 2, signed: bool = True) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def verdict_sentence(v: Verdict, *, reason: str = "") -> str:
    """One sentence that says what the verdict is and the numbers it rests on."""
    task = f"{v.task} ({v.domain or '-'}, {v.score})"
    name = metric_name(v.metric, v.pooling)
    free = "the step and the loss" if v.loss_available else "the step"
    if v.outcome == "undefined":
        return f"{task}: {name} could not be judged against {free} ({reason})."
    loss = (f" and {_f(v.loss_rho)} for minus the loss" if v.loss_available
            else " (no loss recorded)")
    interval = (f" [{_f(v.partial_low)}, {_f(v.partial_high)}]"
                if math.isfinite(v.partial_low) else "")
    choice = (f"choosing each layer's checkpoint by it loses {_f(v.regret_metric, signed=False)}"
              f" of the score range, the last checkpoint {_f(v.regret_last, signed=False)}, "
              f"the first {_f(v.regret_first, signed=False)}")
    choice += (f" and the lowest loss {_f(v.regret_loss, signed=False)}" if v.loss_available
               else "")
    if v.outcome == "told_more":
        why = {"partial": "beyond the step it still rises with the score",
               "regret": "its checkpoint choice beats the baselines' by more than the "
                         "standard error",
               "partial and regret": "beyond the step it still rises with the score, and its "
                                     "checkpoint choice beats the baselines'"}[v.grounds]
        head = f"{name} told more than {free} ({why})"
    elif v.outcome == "against":
        head = (f"{name} told nothing {free} did not; beyond the step it moves against the "
                "score")
    else:
        head = f"{name} told nothing {free} did not"
    return (f"{task}: {head}: median within-layer rho {_f(v.metric_rho)} against "
            f"{_f(v.step_rho)} for the step{loss}; given the step, {_f(v.partial)}"
            f"{interval}; {choice}.")
