"""The one probe protocol behind every kind of probe, and the registry of kinds.

A driver does three things, in order, for :func:`speechrank.probes.run.run_probe`:

1. :meth:`ProbeDriver.prepare`: choose the utterances (all of them, or a seeded audio budget
   per split via :func:`speechrank.extract.select_within_seconds`) and extract every requested
   layer in one encoder pass through the feature cache;
2. :meth:`ProbeDriver.fit_layer`: fit one probe on one layer and emit its tidy rows (one per
   split and metric) and how the fit went (``info["fits"][layer]``);
3. :attr:`ProbeDriver.summary`: the counts, classes and chance levels the JSON output records,
   set by the first :meth:`~ProbeDriver.fit_layer`.

Each driver class declares what its kind is, once, in its class statement
(``class FrameProbe(LogisticDriver, kind="frames", ...)``): ``kind`` (its :data:`TaskKind`),
``config_type`` (its recipe, whose defaults are the kind's defaults), ``metrics`` (the rows'
metric names), ``pooling`` (the rows' pooling) and ``reads`` (the label column it needs
whatever the task, if any); ``fitting`` (how :func:`~speechrank.probes.run.run_probe` fits its
layers) comes with its base class. :data:`DRIVERS` registers them; the task resolver
(:mod:`speechrank.probes.tasks`), the recipe tables (:mod:`speechrank.probes.recipes`) and
``run_probe`` read it.

The three kinds: :class:`UtteranceProbe` (``ks``, ``sid``, ``er``, ``label:COLUMN``; logistic
regression on mean-pooled features), :class:`FrameProbe` (``pr`` with time-aligned phones;
logistic regression on single frames) and :class:`CTCProbe` (``pr`` with transcripts; a linear
CTC read-out). A new kind is a new driver class here, its name in :data:`TaskKind` and its
entry in :data:`DRIVERS` (docs/design.md, "Adding a probe kind").
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import numpy as np

from speechrank.accumulate import frame_quotas
from speechrank.audio.synthetic_espeak import phonemize
from speechrank.audio.utterance import Dataset
from speechrank.encoders.base import SpeechEncoder
from speechrank.errors import SpeechrankError
from speechrank.extract import (
    FrameMemo,
    PlannedUtterance,
    SkipLog,
    plan_utterances,
    select_within_seconds,
)
from speechrank.options import RunOptions
from speechrank.probes.alignment import phone_frame_labels
from speechrank.probes.config import (
    SOLVER_NAMES,
    SPLITS,
    CTCProbeConfig,
    FrameProbeConfig,
    ProbeConfig,
    UtteranceProbeConfig,
)
from speechrank.probes.ctc import fit_ctc_probe
from speechrank.probes.features import (
    ExtractOptions,
    FeatureEntry,
    FrameFeatures,
    FramePlan,
    extract_features,
)
from speechrank.probes.linear import (
    FitCache,
    chance_levels,
    fit_logistic_probe,
    summarise_curve,
)
from speechrank.probes.stderr import SE_METHOD, clustered_accuracy_se
from speechrank.progress import Progress
from speechrank.results import ResultRow

__all__ = [
    "DRIVERS",
    "CTCProbe",
    "Fitting",
    "FrameProbe",
    "LogisticDriver",
    "LogisticProblem",
    "ProbeContext",
    "ProbeDriver",
    "TaskKind",
    "TaskSpec",
    "UtteranceProbe",
    "check_splits",
    "default_config",
    "driver_for_config",
]

#: How a probe reads a layer: one pooled vector per utterance, frame labels, or CTC. One name
#: per driver of :data:`DRIVERS` (checked when this module loads).
TaskKind = Literal["utterance", "frames", "ctc"]
#: How :func:`~speechrank.probes.run.run_probe` fits a driver's layers: ``per_layer`` calls
#: :meth:`ProbeDriver.fit_layer` for each; ``logistic`` builds each layer's arrays
#: (:meth:`LogisticDriver.layer_problem`) and fits several at once, sharing fits between
#: probes whose train and dev are equal.
Fitting = Literal["per_layer", "logistic"]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A resolved task (:func:`speechrank.probes.tasks.resolve_task`).

    Attributes:
        name: the task as the user wrote it (``ks``, ``label:accent`` ...).
        label: the label column it reads.
        kind: the probe kind that runs it (its driver in :data:`DRIVERS`).
    """

    name: str
    label: str
    kind: TaskKind

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric names of the rows (declared by the kind's driver)."""
        return DRIVERS[self.kind].metrics

    @property
    def pooling(self) -> str:
        """The pooling the rows record by default (declared by the kind's driver)."""
        return DRIVERS[self.kind].pooling


@dataclasses.dataclass
class ProbeContext:
    """Everything a driver needs, fixed before it runs."""

    encoder: SpeechEncoder
    dataset: Dataset  # with a split on every utterance
    task: TaskSpec
    options: RunOptions
    strict: bool
    cache_dir: Path
    skips: SkipLog
    progress: Progress
    base_row: dict[str, Any]  # model, checkpoint, step, dataset, domain
    common: dict[str, Any]  # conventions every row records
    memo: FrameMemo | None = None  # frames another pass of this encoder already computed
    fits: FitCache | None = None  # logistic fits another probe of this encoder already made

    @property
    def fit_device(self) -> str:
        """Where the batched logistic solver runs: the encoder's device."""
        return str(self.encoder.device)

    def split_of(self) -> dict[str, str]:
        return {u.uid: str(u.split) for u in self.dataset.utterances}

    def extract(self, utterances: Sequence[Any], layers: list[str], **kwargs: Any
                ) -> FeatureEntry:
        options = ExtractOptions(cache_dir=self.cache_dir,
                                 batch_seconds=self.options.batch_seconds,
                                 max_seconds=self.options.crop_seconds, strict=self.strict)
        return extract_features(self.encoder, utterances, layers, options, memo=self.memo,
                                progress=self.progress, **kwargs)


def check_splits(counts: dict[str, int], task: TaskSpec, dataset: Dataset,
                 when: str = "") -> None:
    """A one-line error unless train, dev and test all have utterances."""
    empty = [name for name in SPLITS if counts.get(name, 0) == 0]
    if empty:
        listed = ", ".join(f"{name} {counts.get(name, 0)}" for name in SPLITS)
        raise SpeechrankError(
            f"task {task.name} on {dataset.spec}: the {' and '.join(empty)} split"
            f"{'s have' if len(empty) > 1 else ' has'} no utterances with '{task.label}' "
            f"labels{when} ({listed}); a probe needs train, dev and test")


def _check_classes(train_labels: Sequence[Any], task: TaskSpec, dataset: Dataset) -> None:
    classes = sorted({str(v) for v in train_labels})
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise SpeechrankError(
            f"task {task.name} on {dataset.spec}: the train split has {found} as "
            f"'{task.label}' class; a classifier needs at least 2")


_AFTER_SKIPS = " after skipping unusable files"


class ProbeDriver:
    """The protocol (see the module docstring); subclasses implement the three steps.

    Attributes (declared by every driver class as keywords of its class statement, read by
    :meth:`__init_subclass__`; ``fitting`` comes with the base class):
        kind: the driver's :data:`TaskKind`.
        config_type: its recipe (:mod:`speechrank.probes.config`); ``config_type()`` is the
            kind's default recipe.
        metrics: the metric names of its rows, in order.
        pooling: the pooling its rows record (an utterance probe's recipe may choose ``sum``).
        reads: the label column the kind needs whatever the task (``None``: the task's own
            label); a task with several kinds (``pr``) takes the first whose column exists.
        fitting: how its layers are fitted (:data:`Fitting`).
    """

    kind: ClassVar[TaskKind]
    config_type: ClassVar[type]
    metrics: ClassVar[tuple[str, ...]]
    pooling: ClassVar[str]
    reads: ClassVar[str | None] = None
    fitting: ClassVar[Fitting] = "per_layer"

    def __init_subclass__(cls, *, kind: TaskKind | None = None, config_type: type | None = None,
                          metrics: tuple[str, ...] = (), pooling: str = "",
                          reads: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if kind is None:  # an abstract driver (LogisticDriver): no kind of its own
            return
        if config_type is None or not metrics or not pooling:
            raise TypeError(f"driver {cls.__name__} must declare config_type, metrics and "
                            "pooling with its kind")
        cls.kind, cls.config_type, cls.metrics = kind, config_type, metrics
        cls.pooling, cls.reads = pooling, reads

    def __init__(self, config: ProbeConfig) -> None:
        if not isinstance(config, self.config_type):
            raise TypeError(f"{type(self).__name__} needs a {self.config_type.__name__}")
        self.config: Any = config
        self.summary: dict[str, Any] = {}

    def prepare(self, ctx: ProbeContext, layers: list[str]) -> FeatureEntry:
        raise NotImplementedError

    def fit_layer(self, ctx: ProbeContext, entry: FeatureEntry, layer: str
                  ) -> tuple[list[ResultRow], dict[str, Any]]:
        raise NotImplementedError

    def _budgeted(self, ctx: ProbeContext) -> tuple[dict[str, str], list[PlannedUtterance]]:
        """Each utterance's split, and the usable utterances within each split's audio budget
        (in uid order)."""
        split_of = ctx.split_of()
        planned = plan_utterances(ctx.encoder, ctx.dataset.utterances,
                                  max_seconds=ctx.options.crop_seconds, strict=ctx.strict,
                                  skips=ctx.skips)
        chosen = select_within_seconds(planned, dict(self.config.max_audio_seconds),
                                       ctx.encoder.sample_rate, ctx.options.seed,
                                       group_of=lambda p: split_of[p.utterance.uid])
        return split_of, sorted(chosen, key=lambda p: p.utterance.uid)


def _logistic_row_conventions(fit: Any, config: Any, extra: dict[str, Any]) -> dict[str, Any]:
    grid = sorted(config.c_grid)
    return {
        "probe": "logistic_regression", "solver": SOLVER_NAMES[config.solver],
        "penalty": "l2", "C": fit.chosen_c, "c_grid": [float(c) for c in grid],
        "c_selection": f"best dev {config.selection_metric} (ties: smaller C)",
        "max_iter": config.max_iter, "tol": config.tol, "fit_dtype": config.fit_dtype,
        "class_weight": config.class_weight, "standardised": config.standardise, **extra,
    }


def _logistic_fit_info(fit: Any, config: Any) -> dict[str, Any]:
    """How one layer's fit went (``info["fits"]``; outcomes, so not row conventions)."""
    return {"C": fit.chosen_c,
            "dev_curve": summarise_curve(sorted(config.c_grid), fit.dev_curve),
            "converged": fit.chosen_converged,
            "converged_per_c": list(fit.converged),
            "n_iter_per_c": list(fit.n_iter)}


@dataclasses.dataclass
class LogisticProblem:
    """One layer's logistic probe, ready to fit: the split arrays plus what its rows need
    (``clusters[split]``: the utterance of every example, for clustered standard errors)."""

    layer: str
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    clusters: dict[str, np.ndarray | None]


class LogisticDriver(ProbeDriver):
    """A driver whose fit is :func:`fit_logistic_probe` on arrays: :meth:`layer_problem`
    builds them, :meth:`layer_rows` turns the fit into rows, so that
    :func:`speechrank.probes.run.run_probe` may fit several layers in worker processes."""

    fitting = "logistic"

    def layer_problem(self, ctx: ProbeContext, entry: FeatureEntry, layer: str
                      ) -> LogisticProblem:
        raise NotImplementedError

    def layer_rows(self, ctx: ProbeContext, problem: LogisticProblem, fit: Any
                   ) -> tuple[list[ResultRow], dict[str, Any]]:
        raise NotImplementedError

    def fit_layer(self, ctx: ProbeContext, entry: FeatureEntry, layer: str
                  ) -> tuple[list[ResultRow], dict[str, Any]]:
        problem = self.layer_problem(ctx, entry, layer)
        return self.layer_rows(ctx, problem, fit_logistic_probe(
            problem.splits, self.config.logistic, device=ctx.fit_device))


def _split_rows(ctx: ProbeContext, layer: str, pooling: str, metrics: dict[str, str],
                scores: dict[str, dict[str, float]], n_rows: dict[str, int], dim: int,
                conventions: dict[str, Any],
                accuracy_se: dict[str, float] | None = None) -> list[ResultRow]:
    """One row per split and metric; ``metrics`` maps a row's metric name to its score key.
    Accuracy rows carry ``accuracy_se`` (per split) as ``conventions["standard_error"]``."""
    def conventions_of(name: str, key: str) -> dict[str, Any]:
        if accuracy_se is None or key != "accuracy":
            return conventions
        return {**conventions, "standard_error": accuracy_se[name],
                "standard_error_method": SE_METHOD}

    return [ResultRow(**ctx.base_row, layer=layer, pooling=pooling, metric=metric,
                      value=scores[name][key], n_rows=n_rows[name], dim=dim,
                      task=ctx.task.name, split=name, conventions=conventions_of(name, key))
            for name in SPLITS for metric, key in metrics.items()]


class UtteranceProbe(LogisticDriver, kind="utterance", config_type=UtteranceProbeConfig,
                     metrics=("accuracy", "macro_f1"), pooling="mean"):
    """Logistic regression on one pooled vector per utterance."""

    def prepare(self, ctx: ProbeContext, layers: list[str]) -> FeatureEntry:
        self.split_of = ctx.split_of()
        self.label_of = {u.uid: str(u.labels[ctx.task.label]) for u in ctx.dataset.utterances}
        _check_classes([self.label_of[u.uid] for u in ctx.dataset.utterances
                        if self.split_of[u.uid] == "train"], ctx.task, ctx.dataset)
        return ctx.extract(ctx.dataset.utterances, layers)

    def layer_problem(self, ctx: ProbeContext, entry: FeatureEntry, layer: str
                      ) -> LogisticProblem:
        pooled = entry.load_pooled(layer)
        features = pooled.pooled(self.config.pooling)
        splits_idx = {name: np.array([i for i, uid in enumerate(pooled.uids)
                                      if self.split_of[uid] == name], dtype=np.int64)
                      for name in SPLITS}
        labels = np.array([self.label_of[uid] for uid in pooled.uids], dtype=object).astype(str)
        if not self.summary:
            counts = {name: len(idx) for name, idx in splits_idx.items()}
            check_splits(counts, ctx.task, ctx.dataset, _AFTER_SKIPS)
            train = labels[splits_idx["train"]]
            _check_classes(train.tolist(), ctx.task, ctx.dataset)
            train_classes = set(train.tolist())
            self.summary = {
                "counts": counts,
                "classes": sorted(set(labels.tolist())),
                "train_class_counts": dict(sorted(Counter(train.tolist()).items())),
                "unseen_in_train": {name: int(sum(v not in train_classes
                                                  for v in labels[idx].tolist()))
                                    for name, idx in splits_idx.items() if name != "train"},
                "chance": {name: chance_levels(train, labels[idx])
                           for name, idx in splits_idx.items()},
            }
        return LogisticProblem(
            layer, {name: (features[idx], labels[idx]) for name, idx in splits_idx.items()},
            {name: None for name in SPLITS})

    def layer_rows(self, ctx: ProbeContext, problem: LogisticProblem, fit: Any
                   ) -> tuple[list[ResultRow], dict[str, Any]]:
        logistic = self.config.logistic
        conventions = _logistic_row_conventions(
            fit, logistic, {**ctx.common, "pooling_over": "valid frames"})
        rows = _split_rows(ctx, problem.layer, self.config.pooling,
                           {metric: metric for metric in self.metrics}, fit.scores,
                           fit.n_rows, fit.dim, conventions,
                           {name: clustered_accuracy_se(fit.correct[name]) for name in SPLITS})
        return rows, _logistic_fit_info(fit, logistic)


def _frame_labels(frames: FrameFeatures, phones_of: dict[str, Any], frame_rate: float,
                  silence: str, dataset: Dataset) -> np.ndarray:
    """The phone label of every selected frame (rows are grouped by utterance)."""
    labels = np.empty(len(frames.utt), dtype=object)
    if len(frames.utt):
        cuts = np.flatnonzero(np.diff(frames.utt)) + 1
        for start, end in zip(np.r_[0, cuts], np.r_[cuts, len(frames.utt)], strict=True):
            uid = frames.uids[int(frames.utt[start])]
            try:
                labels[start:end] = phone_frame_labels(
                    phones_of[uid], 0, frame_rate, silence=silence,
                    frames=frames.frame[start:end])
            except ValueError as err:
                raise SpeechrankError(f"{dataset.spec}: utterance {uid}: {err}") from err
    return labels.astype(str)


class FrameProbe(LogisticDriver, kind="frames", config_type=FrameProbeConfig,
                 metrics=("frame_accuracy",), pooling="frames", reads="phones"):
    """Logistic regression on single frames labelled with the phone at their centre time."""

    def prepare(self, ctx: ProbeContext, layers: list[str]) -> FeatureEntry:
        self.split_of, chosen = self._budgeted(ctx)
        check_splits(Counter(self.split_of[p.utterance.uid] for p in chosen), ctx.task,
                     ctx.dataset, _AFTER_SKIPS)
        quotas: dict[str, int | None] = {}
        for name in SPLITS:
            members = [p for p in chosen if self.split_of[p.utterance.uid] == name]
            for item, quota in zip(members, frame_quotas([p.num_frames for p in members],
                                                         self.config.max_frames[name]),
                                   strict=True):
                quotas[item.utterance.uid] = int(quota)
        utterances = [p.utterance for p in chosen]
        self.phones_of = {u.uid: u.labels[ctx.task.label] for u in utterances}
        self._labels_for: dict[tuple[bytes, bytes], np.ndarray] = {}
        return ctx.extract(utterances, layers, frame_plan=FramePlan(quotas=quotas,
                                                                    seed=ctx.options.seed),
                           planned=chosen)

    def layer_problem(self, ctx: ProbeContext, entry: FeatureEntry, layer: str
                      ) -> LogisticProblem:
        frames = entry.load_frames(layer)
        key = (frames.utt.tobytes(), frames.frame.tobytes())
        if key not in self._labels_for:  # the same rows for every layer of one extraction
            self._labels_for.clear()
            self._labels_for[key] = _frame_labels(frames, self.phones_of,
                                                  ctx.encoder.frame_rate,
                                                  self.config.silence_label, ctx.dataset)
        labels = self._labels_for[key]
        utt_split = np.array([self.split_of[uid] for uid in frames.uids], dtype=object)
        row_split = utt_split[frames.utt] if len(frames.utt) else np.zeros(0, dtype=object)
        splits_idx = {name: np.flatnonzero(row_split == name) for name in SPLITS}
        if not self.summary:
            counts = {name: len(idx) for name, idx in splits_idx.items()}
            check_splits(counts, ctx.task, ctx.dataset, _AFTER_SKIPS)
            _check_classes(labels[splits_idx["train"]].tolist(), ctx.task, ctx.dataset)
            self.summary = {
                "counts": counts,
                "utterances": {name: len(np.unique(frames.utt[idx]))
                               for name, idx in splits_idx.items()},
                "classes": sorted(set(labels.tolist())),
                "chance": {name: chance_levels(labels[splits_idx["train"]], labels[idx])
                           for name, idx in splits_idx.items()},
            }
        return LogisticProblem(
            layer, {name: (frames.features[idx], labels[idx])
                    for name, idx in splits_idx.items()},
            {name: frames.utt[idx] for name, idx in splits_idx.items()})

    def layer_rows(self, ctx: ProbeContext, problem: LogisticProblem, fit: Any
                   ) -> tuple[list[ResultRow], dict[str, Any]]:
        logistic = self.config.logistic
        conventions = _logistic_row_conventions(fit, logistic, {
            **ctx.common, "max_frames": dict(self.config.max_frames),
            "max_audio_seconds": dict(self.config.max_audio_seconds),
            "frame_time": "centre (i + 0.5) / frame_rate", "silence_label":
                self.config.silence_label})
        se = {name: clustered_accuracy_se(fit.correct[name], problem.clusters[name])
              for name in SPLITS}  # frames of one utterance are not independent
        rows = _split_rows(ctx, problem.layer, self.pooling, {"frame_accuracy": "accuracy"},
                           fit.scores, fit.n_rows, fit.dim, conventions, se)
        return rows, _logistic_fit_info(fit, logistic)


class CTCProbe(ProbeDriver, kind="ctc", config_type=CTCProbeConfig, metrics=("per",),
               pooling="frames", reads="transcript"):
    """A linear CTC read-out of phone sequences from transcripts (scored by PER)."""

    def prepare(self, ctx: ProbeContext, layers: list[str]) -> FeatureEntry:
        self.split_of, chosen = self._budgeted(ctx)
        self.phones_of: dict[str, list[str]] = {}
        self.no_phones = 0
        for item in chosen:
            utt = item.utterance
            language = str(utt.labels.get("language") or self.config.language)
            phones = phonemize(str(utt.labels[ctx.task.label]), language)
            if phones:
                self.phones_of[utt.uid] = phones
            else:
                self.no_phones += 1
        chosen = [p for p in chosen if p.utterance.uid in self.phones_of]
        check_splits(Counter(self.split_of[p.utterance.uid] for p in chosen), ctx.task,
                     ctx.dataset, _AFTER_SKIPS)
        plan = FramePlan(quotas={p.utterance.uid: None for p in chosen}, seed=ctx.options.seed)
        return ctx.extract([p.utterance for p in chosen], layers, frame_plan=plan,
                           planned=chosen)

    def fit_layer(self, ctx: ProbeContext, entry: FeatureEntry, layer: str
                  ) -> tuple[list[ResultRow], dict[str, Any]]:
        sequences = entry.load_frames(layer).sequences()
        splits: dict[str, tuple[list[np.ndarray], list[list[str]]]] = {}
        for name in SPLITS:
            uids = [uid for uid in sequences if self.split_of[uid] == name]
            splits[name] = ([sequences[uid] for uid in uids],
                            [self.phones_of[uid] for uid in uids])
        if not self.summary:
            counts = {name: len(value[0]) for name, value in splits.items()}
            check_splits(counts, ctx.task, ctx.dataset, _AFTER_SKIPS)
            self.summary = {
                "counts": counts,
                "frames": {name: int(sum(len(f) for f in value[0]))
                           for name, value in splits.items()},
                "classes": sorted({p for seq in splits["train"][1] for p in seq}),
                "no_phones": self.no_phones,
                "phonemizer": "eSpeak NG espeak_TextToPhonemes (IPA, stress removed)",
            }
        config = self.config
        fit = fit_ctc_probe(splits, config, seed=ctx.options.seed)
        conventions = {
            "probe": "linear_ctc", "blank": 0, "decoding": "greedy (best path)",
            "optimizer": "adam", "steps": fit.steps, "eval_every": config.eval_every,
            "train_batch_size": config.batch_size, "lr": config.lr,
            "weight_decay": config.weight_decay, "grad_clip": config.grad_clip,
            "stopping": "weights of the evaluation step with the lowest dev PER",
            "best_step": fit.best_step, "standardised": True,
            "max_audio_seconds": dict(config.max_audio_seconds),
            "language": config.language, **ctx.common,
        }
        per = {name: {"per": value} for name, value in fit.per.items()}
        rows = _split_rows(ctx, layer, self.pooling, {"per": "per"}, per, fit.n_rows, fit.dim,
                           conventions)
        info = {"best_step": fit.best_step,
                "dev_curve": [{"step": st, "dev": v} for st, v in fit.dev_curve],
                "final_train_loss": fit.final_loss, "too_short": fit.too_short}
        return rows, info


#: The registry of probe kinds: the driver of each :data:`TaskKind`, in the order a task with
#: several kinds (``pr``) tries them.
DRIVERS: dict[TaskKind, type[ProbeDriver]] = {
    driver.kind: driver for driver in (UtteranceProbe, FrameProbe, CTCProbe)}
if set(DRIVERS) != set(get_args(TaskKind)):  # pragma: no cover - a kind added halfway
    raise ImportError(f"probe kinds {sorted(get_args(TaskKind))} and drivers "
                      f"{sorted(DRIVERS)} differ")


def default_config(kind: TaskKind) -> ProbeConfig:
    """The default recipe of a probe kind (its driver's ``config_type()``)."""
    try:
        return DRIVERS[kind].config_type()
    except KeyError:
        raise SpeechrankError(f"unknown probe kind '{kind}'; known: "
                              f"{', '.join(DRIVERS)}") from None


def driver_for_config(config: Any) -> type[ProbeDriver] | None:
    """The driver whose recipe type ``config`` is (``None`` for anything else)."""
    return next((d for d in DRIVERS.values() if type(config) is d.config_type), None)
