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
import hashlib
import platform
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechrank import __version__, distributed
from speechrank.audio.datasets import load_dataset
from speechrank.audio.io import AUDIO_CONVENTIONS
from speechrank.audio.splits import assign_splits
from speechrank.audio.synthetic_espeak import phonemize
from speechrank.audio.utterance import Dataset
from speechrank.encoders import load_encoder
from speechrank.encoders.base import SpeechEncoder
from speechrank.errors import SpeechrankError
from speechrank.extract import DEFAULT_BATCH_SECONDS, PlannedUtterance, SkipLog, plan_utterances
from speechrank.probes.alignment import phone_frame_labels
from speechrank.probes.config import (
    SPLITS,
    CTCProbeConfig,
    FrameProbeConfig,
    ProbeConfig,
    UtteranceProbeConfig,
    config_dict,
    default_config,
)
from speechrank.probes.ctc import fit_ctc_probe
from speechrank.probes.features import (
    FeatureEntry,
    FrameFeatures,
    FramePlan,
    extract_features,
    resolve_cache_dir,
)
from speechrank.probes.linear import chance_levels, fit_logistic_probe, summarise_curve
from speechrank.probes.tasks import TaskSpec, resolve_task
from speechrank.rank import frame_quotas, parse_layers
from speechrank.results import ResultRow

__all__ = ["ProbeResult", "run_probe"]

ProgressArg = bool | Callable[[float], Any] | None


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


# ----------------------------------------------------------------------------- progress

class _Progress:
    """Encode (audio seconds) and probe (layers) progress: callbacks, a rich bar, or nothing."""

    def __init__(self, progress: ProgressArg, on_plan: Callable[[float], Any] | None,
                 on_layer: Callable[[str], Any] | None) -> None:
        self._bar: Any = None
        self._encode_task: Any = None
        self._layer_task: Any = None
        self._advance = progress if callable(progress) else None
        self._on_plan = on_plan
        self._on_layer = on_layer
        self._rich = progress is True

    @contextlib.contextmanager
    def active(self) -> Iterator[_Progress]:
        if not self._rich:
            yield self
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                             TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                             TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        with self._bar:
            yield self
        self._bar = None

    def plan(self, seconds: float) -> None:
        if self._on_plan is not None:
            self._on_plan(seconds)
        if self._bar is not None:
            self._encode_task = self._bar.add_task("encode (s audio)", total=seconds)

    def advance(self, seconds: float) -> None:
        if self._advance is not None:
            self._advance(seconds)
        if self._bar is not None and self._encode_task is not None:
            self._bar.advance(self._encode_task, seconds)

    def layers(self, total: int) -> None:
        if self._bar is not None:
            self._layer_task = self._bar.add_task("probe (layers)", total=total)

    def layer_done(self, layer: str) -> None:
        if self._on_layer is not None:
            self._on_layer(layer)
        if self._bar is not None and self._layer_task is not None:
            self._bar.advance(self._layer_task, 1)


# ----------------------------------------------------------------------------- helpers

def _versions() -> dict[str, str]:
    import scipy
    import sklearn

    return {"speechrank": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__}


def _split_of(dataset: Dataset) -> dict[str, str]:
    return {u.uid: str(u.split) for u in dataset.utterances}


def _check_splits(counts: dict[str, int], task: TaskSpec, dataset: Dataset,
                  when: str = "") -> None:
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


def _priority(seed: int, uid: str) -> tuple[int, str]:
    digest = hashlib.sha256(f"{seed}\0{uid}".encode()).digest()
    return int.from_bytes(digest[:8], "little"), uid


def _select_by_audio(planned: Sequence[PlannedUtterance], split_of: dict[str, str],
                     budgets: dict[str, float], sample_rate: int, seed: int
                     ) -> list[PlannedUtterance]:
    """Per split, utterances in a seeded random order until the split's audio budget.

    The order is by ``sha256(seed, uid)``, so the choice depends neither on the dataset's order
    nor on the other splits; the first utterance of a split is always taken.
    """
    chosen: list[PlannedUtterance] = []
    for name in SPLITS:
        members = sorted((p for p in planned if split_of[p.utterance.uid] == name),
                         key=lambda p: _priority(seed, p.utterance.uid))
        seconds = 0.0
        for item in members:
            length = item.num_samples / sample_rate
            if seconds and seconds + length > budgets[name]:
                break
            chosen.append(item)
            seconds += length
    return sorted(chosen, key=lambda p: p.utterance.uid)


def _logistic_row_conventions(fit: Any, config: Any, extra: dict[str, Any]) -> dict[str, Any]:
    grid = sorted(config.c_grid)
    return {
        "probe": "logistic_regression", "solver": "lbfgs", "penalty": "l2",
        "C": fit.chosen_c, "c_grid": [float(c) for c in grid],
        "c_selection": f"best dev {config.selection_metric} (ties: smaller C)",
        "max_iter": config.max_iter, "tol": config.tol,
        "standardised": config.standardise, **extra,
    }


def _logistic_fit_info(fit: Any, config: Any) -> dict[str, Any]:
    """How one layer's fit went (``info["fits"]``; outcomes, so not row conventions)."""
    return {"C": fit.chosen_c,
            "dev_curve": summarise_curve(sorted(config.c_grid), fit.dev_curve),
            "converged": fit.chosen_converged,
            "converged_per_c": list(fit.converged)}


# ----------------------------------------------------------------------------- the probes

def _utterance_probe(encoder: SpeechEncoder, dataset: Dataset, task: TaskSpec,
                     layers: list[str], config: UtteranceProbeConfig, *, seed: int,
                     cache_dir: Path, common: dict[str, Any], extract_kwargs: dict[str, Any],
                     bar: _Progress, base_row: dict[str, Any]
                     ) -> tuple[list[ResultRow], dict[str, Any], FeatureEntry]:
    split_of = _split_of(dataset)
    label_of = {u.uid: str(u.labels[task.label]) for u in dataset.utterances}
    _check_classes([label_of[u.uid] for u in dataset.utterances if split_of[u.uid] == "train"],
                   task, dataset)
    entry = extract_features(encoder, dataset.utterances, layers, cache_dir=cache_dir,
                             on_plan=bar.plan, progress=bar.advance, **extract_kwargs)
    rows: list[ResultRow] = []
    extra: dict[str, Any] = {}
    fits: dict[str, Any] = {}
    bar.layers(len(layers))
    for layer in layers:
        pooled = entry.load_pooled(layer)
        features = pooled.pooled(config.pooling)
        splits_idx = {name: np.array([i for i, uid in enumerate(pooled.uids)
                                      if split_of[uid] == name], dtype=np.int64)
                      for name in SPLITS}
        labels = np.array([label_of[uid] for uid in pooled.uids], dtype=object).astype(str)
        if not extra:
            counts = {name: len(idx) for name, idx in splits_idx.items()}
            _check_splits(counts, task, dataset, " after skipping unusable files")
            _check_classes(labels[splits_idx["train"]].tolist(), task, dataset)
            train_classes = set(labels[splits_idx["train"]].tolist())
            extra = {
                "counts": counts,
                "classes": sorted(set(labels.tolist())),
                "train_class_counts": dict(sorted(Counter(
                    labels[splits_idx["train"]].tolist()).items())),
                "unseen_in_train": {name: int(sum(v not in train_classes
                                                  for v in labels[idx].tolist()))
                                    for name, idx in splits_idx.items() if name != "train"},
                "chance": {name: chance_levels(labels[splits_idx["train"]], labels[idx])
                           for name, idx in splits_idx.items()},
            }
        fit = fit_logistic_probe(
            {name: (features[idx], labels[idx]) for name, idx in splits_idx.items()},
            config.logistic)
        fits[layer] = _logistic_fit_info(fit, config.logistic)
        conventions = _logistic_row_conventions(
            fit, config.logistic, {**common, "pooling_over": "valid frames"})
        for name in SPLITS:
            for metric in task.metrics:
                rows.append(ResultRow(
                    **base_row, layer=layer, pooling=config.pooling, metric=metric,
                    value=fit.scores[name][metric], n_rows=fit.n_rows[name], dim=fit.dim,
                    task=task.name, split=name, conventions=conventions))
        bar.layer_done(layer)
    extra["fits"] = fits
    return rows, extra, entry


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


def _frame_probe(encoder: SpeechEncoder, dataset: Dataset, task: TaskSpec,
                 layers: list[str], config: FrameProbeConfig, *, seed: int, cache_dir: Path,
                 common: dict[str, Any], extract_kwargs: dict[str, Any], skips: SkipLog,
                 bar: _Progress, base_row: dict[str, Any]
                 ) -> tuple[list[ResultRow], dict[str, Any], FeatureEntry]:
    split_of, chosen = _plan_within_budget(encoder, dataset, config.max_audio_seconds,
                                           seed=seed, extract_kwargs=extract_kwargs,
                                           skips=skips)
    _check_splits(Counter(split_of[p.utterance.uid] for p in chosen), task, dataset,
                  " after skipping unusable files")
    quotas: dict[str, int | None] = {}
    for name in SPLITS:
        members = [p for p in chosen if split_of[p.utterance.uid] == name]
        for item, quota in zip(members, frame_quotas([p.num_frames for p in members],
                                                     config.max_frames[name]), strict=True):
            quotas[item.utterance.uid] = int(quota)
    plan = FramePlan(quotas=quotas, seed=seed)
    utterances = [p.utterance for p in chosen]
    phones_of = {u.uid: u.labels[task.label] for u in utterances}
    entry = extract_features(encoder, utterances, layers, cache_dir=cache_dir, frame_plan=plan,
                             planned=chosen, on_plan=bar.plan, progress=bar.advance,
                             **extract_kwargs)
    rows: list[ResultRow] = []
    extra: dict[str, Any] = {}
    fits: dict[str, Any] = {}
    labels_for: dict[tuple[bytes, bytes], np.ndarray] = {}
    bar.layers(len(layers))
    for layer in layers:
        frames = entry.load_frames(layer)
        key = (frames.utt.tobytes(), frames.frame.tobytes())
        if key not in labels_for:  # the same rows for every layer of one extraction
            labels_for.clear()
            labels_for[key] = _frame_labels(frames, phones_of, encoder.frame_rate,
                                            config.silence_label, dataset)
        labels = labels_for[key]
        utt_split = np.array([split_of[uid] for uid in frames.uids], dtype=object)
        row_split = utt_split[frames.utt] if len(frames.utt) else np.zeros(0, dtype=object)
        splits_idx = {name: np.flatnonzero(row_split == name) for name in SPLITS}
        if not extra:
            counts = {name: len(idx) for name, idx in splits_idx.items()}
            _check_splits(counts, task, dataset, " after skipping unusable files")
            _check_classes(labels[splits_idx["train"]].tolist(), task, dataset)
            extra = {
                "counts": counts,
                "utterances": {name: len(np.unique(frames.utt[idx]))
                               for name, idx in splits_idx.items()},
                "classes": sorted(set(labels.tolist())),
                "chance": {name: chance_levels(labels[splits_idx["train"]], labels[idx])
                           for name, idx in splits_idx.items()},
            }
        fit = fit_logistic_probe(
            {name: (frames.features[idx], labels[idx]) for name, idx in splits_idx.items()},
            config.logistic)
        fits[layer] = _logistic_fit_info(fit, config.logistic)
        conventions = _logistic_row_conventions(fit, config.logistic, {
            **common, "max_frames": dict(config.max_frames),
            "max_audio_seconds": dict(config.max_audio_seconds),
            "frame_time": "centre (i + 0.5) / frame_rate", "silence_label":
                config.silence_label})
        for name in SPLITS:
            rows.append(ResultRow(
                **base_row, layer=layer, pooling="frames", metric="frame_accuracy",
                value=fit.scores[name]["accuracy"], n_rows=fit.n_rows[name], dim=fit.dim,
                task=task.name, split=name, conventions=conventions))
        bar.layer_done(layer)
    extra["fits"] = fits
    return rows, extra, entry


def _plan_within_budget(encoder: SpeechEncoder, dataset: Dataset,
                        max_audio_seconds: dict[str, float], *, seed: int,
                        extract_kwargs: dict[str, Any], skips: SkipLog
                        ) -> tuple[dict[str, str], list[PlannedUtterance]]:
    """Each utterance's split, and the usable utterances chosen within each split's audio
    budget (the shared start of the frame and CTC phone probes)."""
    split_of = _split_of(dataset)
    planned = plan_utterances(encoder, dataset.utterances,
                              max_seconds=extract_kwargs["max_seconds"],
                              strict=extract_kwargs["strict"], skips=skips)
    return split_of, _select_by_audio(planned, split_of, max_audio_seconds,
                                      encoder.sample_rate, seed)


def _ctc_probe(encoder: SpeechEncoder, dataset: Dataset, task: TaskSpec,
               layers: list[str], config: CTCProbeConfig, *, seed: int, cache_dir: Path,
               common: dict[str, Any], extract_kwargs: dict[str, Any], skips: SkipLog,
               bar: _Progress, base_row: dict[str, Any]
               ) -> tuple[list[ResultRow], dict[str, Any], FeatureEntry]:
    split_of, chosen = _plan_within_budget(encoder, dataset, config.max_audio_seconds,
                                           seed=seed, extract_kwargs=extract_kwargs,
                                           skips=skips)
    phones_of: dict[str, list[str]] = {}
    no_phones = 0
    for item in chosen:
        utt = item.utterance
        language = str(utt.labels.get("language") or config.language)
        phones = phonemize(str(utt.labels[task.label]), language)
        if phones:
            phones_of[utt.uid] = phones
        else:
            no_phones += 1
    chosen = [p for p in chosen if p.utterance.uid in phones_of]
    _check_splits(Counter(split_of[p.utterance.uid] for p in chosen), task, dataset,
                  " after skipping unusable files")
    plan = FramePlan(quotas={p.utterance.uid: None for p in chosen}, seed=seed)
    entry = extract_features(encoder, [p.utterance for p in chosen], layers,
                             cache_dir=cache_dir, frame_plan=plan, planned=chosen,
                             on_plan=bar.plan, progress=bar.advance, **extract_kwargs)
    rows: list[ResultRow] = []
    extra: dict[str, Any] = {}
    fits: dict[str, Any] = {}
    bar.layers(len(layers))
    for layer in layers:
        sequences = entry.load_frames(layer).sequences()
        splits: dict[str, tuple[list[np.ndarray], list[list[str]]]] = {}
        for name in SPLITS:
            uids = [uid for uid in sequences if split_of[uid] == name]
            splits[name] = ([sequences[uid] for uid in uids], [phones_of[uid] for uid in uids])
        if not extra:
            counts = {name: len(value[0]) for name, value in splits.items()}
            _check_splits(counts, task, dataset, " after skipping unusable files")
            extra = {
                "counts": counts,
                "frames": {name: int(sum(len(f) for f in value[0]))
                           for name, value in splits.items()},
                "classes": sorted({p for seq in splits["train"][1] for p in seq}),
                "no_phones": no_phones,
                "phonemizer": "eSpeak NG espeak_TextToPhonemes (IPA, stress removed)",
            }
        fit = fit_ctc_probe(splits, config, seed=seed)
        fits[layer] = {"best_step": fit.best_step,
                       "dev_curve": [{"step": st, "dev": v} for st, v in fit.dev_curve],
                       "final_train_loss": fit.final_loss, "too_short": fit.too_short}
        conventions = {
            "probe": "linear_ctc", "blank": 0, "decoding": "greedy (best path)",
            "optimizer": "adam", "steps": fit.steps, "eval_every": config.eval_every,
            "train_batch_size": config.batch_size, "lr": config.lr,
            "weight_decay": config.weight_decay, "grad_clip": config.grad_clip,
            "stopping": "weights of the evaluation step with the lowest dev PER",
            "best_step": fit.best_step, "standardised": True,
            "max_audio_seconds": dict(config.max_audio_seconds),
            "language": config.language, **common,
        }
        for name in SPLITS:
            rows.append(ResultRow(
                **base_row, layer=layer, pooling="frames", metric="per",
                value=fit.per[name], n_rows=fit.n_rows[name], dim=fit.dim,
                task=task.name, split=name, conventions=conventions))
        bar.layer_done(layer)
    extra["fits"] = fits
    return rows, extra, entry


# ----------------------------------------------------------------------------- entry point

def run_probe(model: str | SpeechEncoder, data: str | Dataset, task: str, *,
              layers: str | Sequence[str] | None = None, seed: int = 0,
              cache_dir: str | Path | None = None, use_cache: bool = True,
              max_seconds: float | None = None,
              batch_seconds: float = DEFAULT_BATCH_SECONDS, strict: bool = False,
              device: str = "cpu", config: ProbeConfig | None = None,
              checkpoint: str | None = None, step: int | None = None,
              progress: ProgressArg = True,
              on_plan: Callable[[float], Any] | None = None,
              on_layer: Callable[[str], Any] | None = None) -> ProbeResult:
    """Probe every requested layer of ``model`` on ``data`` for ``task``.

    Args:
        model: an encoder, or a MODEL spec for :func:`speechrank.encoders.load_encoder`.
        data: a dataset, or a DATA spec for :func:`speechrank.audio.load_dataset`.
        task: ``ks``, ``sid``, ``er``, ``pr`` or ``label:COLUMN`` (see
            :mod:`speechrank.probes.tasks`).
        layers: layer names or a spec such as ``"0,3-6"`` (default: every numbered layer).
        seed: seeds a drawn split, the frame and utterance caps and the CTC probe.
        cache_dir: feature cache root (default ``$SPEECHRANK_CACHE`` or
            ``~/.cache/speechrank/features``).
        use_cache: ``False`` extracts into a temporary directory removed afterwards.
        max_seconds: crop every file to its first ``max_seconds``.
        batch_seconds: most padded audio per encoder batch.
        strict: fail on the first unusable file instead of skipping it.
        device: ``cpu`` or ``cuda`` for the encoder.
        config: the recipe (default: :func:`speechrank.probes.config.default_config` of the
            task's kind); its type must match the kind. For ``pr`` it also picks the kind: a
            :class:`CTCProbeConfig` runs the CTC probe on transcripts even where time-aligned
            phones exist (the synthetic corpus has both).
        checkpoint, step: recorded in every row (defaults: the model name, no step).
        progress: ``True`` for progress bars on stderr, a callable for the audio seconds of
            each encoded batch (as ``run_rank``), or ``False``/``None``.
        on_plan: called with the total audio seconds to encode (only when the encoder runs).
        on_layer: called with each layer's name once its probe is fitted.

    Returns:
        A :class:`ProbeResult`; rows for train, dev and test of every layer. Test is never
        used for a choice.
    """
    started = time.perf_counter()
    if max_seconds is not None and max_seconds <= 0:
        raise SpeechrankError(f"--max-seconds must be positive, got {max_seconds}")
    encoder = load_encoder(model, device=device) if isinstance(model, str) else model
    dataset = load_dataset(data) if isinstance(data, str) else data
    pr_kind = {FrameProbeConfig: "frames", CTCProbeConfig: "ctc"}.get(type(config))
    spec = resolve_task(task, dataset, pr_kind=pr_kind)
    chosen_layers = parse_layers(layers, encoder.layer_names)
    recipe = config if config is not None else default_config(spec.kind)
    expected = {"utterance": UtteranceProbeConfig, "frames": FrameProbeConfig,
                "ctc": CTCProbeConfig}[spec.kind]
    if not isinstance(recipe, expected):
        raise SpeechrankError(f"task {spec.name} needs a {expected.__name__}, got "
                              f"{type(recipe).__name__}")
    split_ds = assign_splits(dataset, spec.label, seed=seed)
    split_info = split_ds.info.get("assign_splits", {})
    split_counts = Counter(str(u.split) for u in split_ds.utterances)
    _check_splits(split_counts, spec, dataset)

    common = {"seed": seed, "label": spec.label,
              "split_source": split_ds.info.get("split_source", "unknown"),
              "max_seconds": max_seconds}
    model_name = encoder.name
    base_row = {"model": model_name, "checkpoint": checkpoint or model_name, "step": step,
                "dataset": dataset.spec, "domain": ""}
    extract_kwargs = {"batch_seconds": batch_seconds, "max_seconds": max_seconds,
                      "strict": strict}
    skips = SkipLog()
    bar = _Progress(progress, on_plan, on_layer)
    with contextlib.ExitStack() as stack:
        if use_cache:
            root = resolve_cache_dir(cache_dir)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="speechrank-")))
        stack.enter_context(bar.active())
        if spec.kind == "utterance":
            rows, extra, entry = _utterance_probe(
                encoder, split_ds, spec, chosen_layers, recipe, seed=seed, cache_dir=root,
                common=common, extract_kwargs=extract_kwargs, bar=bar, base_row=base_row)
        elif spec.kind == "frames":
            rows, extra, entry = _frame_probe(
                encoder, split_ds, spec, chosen_layers, recipe, seed=seed, cache_dir=root,
                common=common, extract_kwargs=extract_kwargs, skips=skips, bar=bar,
                base_row=base_row)
        else:
            rows, extra, entry = _ctc_probe(
                encoder, split_ds, spec, chosen_layers, recipe, seed=seed, cache_dir=root,
                common=common, extract_kwargs=extract_kwargs, skips=skips, bar=bar,
                base_row=base_row)
    skipped = list(skips.items)
    seen = {item["path"] for item in skipped}
    skipped += [item for item in entry.skipped if item["path"] not in seen]
    wall = time.perf_counter() - started
    info: dict[str, Any] = {
        "command": "probe",
        "task": spec.name,
        "label": spec.label,
        "probe": spec.kind,
        "metrics": list(spec.metrics),
        "model": model_name,
        "encoder": encoder.describe(),
        "data": {"spec": dataset.spec, "format": dataset.format, "root": dataset.root,
                 "files_found": len(dataset), "info": dataset.info},
        "splits": {"source": split_ds.info.get("split_source", "unknown"),
                   "utterances": {name: split_counts.get(name, 0) for name in SPLITS},
                   "assign_splits": split_info},
        "counts": {**extra.pop("counts"), "skipped": len(skipped),
                   "skipped_by_reason": dict(sorted(Counter(
                       item["reason"] for item in skipped).items()))},
        "classes": extra.pop("classes"),
        "chance": extra.pop("chance", {}),
        **extra,
        "skipped": skipped,
        "layers": chosen_layers,
        "cache": {"dir": str(root) if use_cache else None, "enabled": use_cache,
                  "entry": entry.directory.name, "hit": not entry.computed_layers,
                  "hit_layers": entry.cache_hit_layers,
                  "computed_layers": entry.computed_layers},
        "conventions": {"recipe": config_dict(recipe), "audio": dict(AUDIO_CONVENTIONS),
                        "seed": seed, "max_seconds": max_seconds,
                        "batch_seconds": batch_seconds,
                        "layer_numbering": "0 = input of the first transformer layer "
                                           "(Hugging Face hidden_states[0])",
                        "test_split": "never used for a choice"},
        "versions": _versions(),
        "device": str(encoder.device),
        # issue 12 hook: the torchrun job that extracted the features (world_size 1 if none)
        "distributed": (distributed.current().describe() if distributed.current() is not None
                        else dict(distributed.SINGLE_PROCESS)),
        "wall_seconds": round(wall, 3),
        "encode_seconds": round(entry.encode_seconds, 3),
    }
    return ProbeResult(rows=rows, info=info)

