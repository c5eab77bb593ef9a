"""The pretraining loop behind ``speechrank pretrain DATA OUT`` (masked prediction on CPU).

The recipe (model size, crops, masking, optimiser, schedule) is a :class:`TrainConfig`
(:mod:`speechrank.pretrain.recipe`); the data pipeline is :mod:`speechrank.pretrain.data`, the
objective :mod:`speechrank.pretrain.objective`.

A run directory ``OUT`` receives ``checkpoint-<step:06d>/`` at step 0, every ``save_every``
steps, at each of ``save_steps`` and at the last step (see
:mod:`speechrank.pretrain.checkpoint`), and ``train_log.jsonl``:
one JSON object per line with an ``event`` of ``start``, ``train`` (every ``log_every`` steps:
loss, masked-prediction accuracy, the accuracy of always guessing the most frequent target
code, the perplexity of the targets, learning rate, gradient norm, steps/s, audio seconds/s),
``checkpoint``, ``monitor`` (what the ``monitor`` hook returned), ``monitor_error``, ``stop``
(the ``stop`` hook ended the run, with its reason) or ``end``.

Determinism: for a seed, on CPU, with the same number of threads, two runs give identical
weights; a run resumed from a checkpoint gives the weights an uninterrupted run would. Every
random draw of a step (crop order and offsets, mask positions, noise) comes from generators
seeded by ``(seed, step)``; torch's global generator (dropout) and the global numpy and Python
generators are saved in each resumable checkpoint and restored; the caller's global generator
states are put back when :func:`pretrain` returns. Deterministic algorithms are enforced with
``torch.use_deterministic_algorithms`` while training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from speechrank.audio.utterance import Dataset
from speechrank.encoders.bestrq import (
    MODEL_FILE,
    TRAINER_FILE,
    BestRqConfig,
    BestRqEncoder,
    config_for_size,
    init_bestrq_model,
    read_checkpoint_config,
)
from speechrank.errors import SpeechrankError
from speechrank.pretrain.checkpoint import (
    TRAINING_STATE_FILE,
    capture_rng_state,
    clean_temporary,
    drop_training_state,
    list_checkpoints,
    load_training_state,
    preserved_rng,
    restore_rng_state,
    save_checkpoint,
    update_trainer_json,
)
from speechrank.pretrain.data import (
    AudioBank,
    CropSampler,
    log_mel_statistics,
    preload_audio,
    resolve_dataset,
    select_pretraining,
)
from speechrank.pretrain.objective import (
    BatchRandom,
    BestRqPretrainer,
    KMeansQuantizer,
    MaskedPrediction,
)
from speechrank.pretrain.recipe import TrainConfig, WarmupInverseSqrt, derive_seed
from speechrank.pretrain.reporting import ProgressBar, RunLog, Window, json_safe
from speechrank.pretrain.targets import fit_kmeans_centroids, frontend_frames
from speechrank.progress import ProgressArg

__all__ = ["LOG_FILE", "Monitor", "PretrainSummary", "StopHook", "TrainConfig", "TrainRun",
           "WarmupInverseSqrt", "pretrain"]

LOG_FILE = "train_log.jsonl"
#: Checkpoint interval when neither ``save_every`` nor ``save_steps`` is given.
DEFAULT_SAVE_EVERY = 100

#: ``monitor(encoder, step) -> dict`` called after each checkpoint is saved; ``encoder`` wraps
#: the live model (its ``encode`` runs in eval mode and restores train mode).
Monitor = Callable[[BestRqEncoder, int], "Mapping[str, Any] | None"]
#: ``stop(step) -> reason`` called after each checkpoint's save and monitor call: a reason (a
#: non-empty string) ends the run at that checkpoint.
StopHook = Callable[[int], "str | None"]

_STREAM_MASK = 11
_STREAM_NOISE = 12
_STREAM_QUANTIZER = 13
_STREAM_TORCH = 14
_STREAM_SNR = 15
_STREAM_KMEANS = 16
_STREAM_SHUFFLE = 17


@dataclasses.dataclass
class PretrainSummary:
    """What a :func:`pretrain` call did."""

    out_dir: str
    start_step: int
    final_step: int
    stopped_by: str  # "steps", "minutes" or "monitor" (the stop hook, see stop_reason)
    resumed_from: str | None
    checkpoints: list[str]  # written by this call, oldest first
    final_loss: float | None  # mean over the steps since the previous checkpoint
    final_accuracy: float | None
    elapsed_seconds: float  # wall time of all sessions of the run (without data loading)
    session_seconds: float
    train_seconds: float  # time in training steps in this session
    steps_per_second: float
    audio_seconds_per_second: float
    data: dict[str, Any]
    data_fingerprint: str
    skipped: list[dict[str, str]]
    recipe: dict[str, Any]
    model: dict[str, Any]
    stop_reason: str | None = None  # what the stop hook said, when it ended the run

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@contextlib.contextmanager
def _algorithms(deterministic: bool, warn_only: bool = False) -> Iterator[None]:
    """Set ``torch.use_deterministic_algorithms`` for a block, then put the old setting back."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn_only)


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _optimizer(model: BestRqPretrainer, recipe: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=recipe.learning_rate, betas=recipe.adam_betas,
                             eps=recipe.adam_eps, foreach=False)


def _recipe_for_run(resume_from: Path | None, base: TrainConfig | None,
                    overrides: Mapping[str, Any],
                    steps: int | None) -> tuple[TrainConfig, BestRqConfig]:
    if resume_from is None:
        recipe = dataclasses.replace(base or TrainConfig(), **overrides).for_budget(steps)
        return recipe, config_for_size(recipe.size)
    payload = read_checkpoint_config(resume_from)
    recipe = TrainConfig.from_dict(payload.get("pretraining", {}))
    asked = dataclasses.asdict(base.for_budget(steps)) if base is not None else {}
    if base is not None and base.decay_steps is None:
        asked.pop("decay_steps")  # a resumed run keeps the schedule its first call fixed
        asked.pop("schedule")
    asked.update(overrides)
    conflicts = [f"{k}={v!r} (checkpoint: {getattr(recipe, k)!r})" for k, v in asked.items()
                 if getattr(recipe, k) != v]
    if conflicts:
        raise SpeechrankError(f"--resume continues {resume_from} with its own recipe; these "
                              f"differ: {', '.join(conflicts)}")
    return recipe, BestRqConfig.from_dict(payload["model"])


def _load_bank(data: Dataset | str | os.PathLike[str], recipe: TrainConfig,
               config: BestRqConfig, progress: ProgressArg) -> tuple[Dataset, AudioBank]:
    dataset = resolve_dataset(data)
    utterances, rule = select_pretraining(dataset)
    min_samples = config.n_fft + config.hop_length * (config.stack - 1)  # one encoder frame
    with ProgressBar.counter(progress, "loading audio", len(utterances)) as advance:
        bank = preload_audio(utterances, config.sample_rate, min_samples=min_samples,
                             max_seconds=recipe.max_preload_seconds, seed=recipe.seed,
                             selection=rule, on_progress=advance)
    if bank.left_out:
        warnings.warn(f"pretraining audio capped at {recipe.max_preload_seconds:g} s: "
                      f"{bank.left_out} utterances left out", stacklevel=3)
    return dataset, bank


@dataclasses.dataclass(frozen=True)
class TrainRun:
    """How one call of :func:`pretrain` runs: its budget, its checkpoints, its log.

    Attributes:
        minutes: wall-time budget of this call (training, checkpoints and monitor, not data
            loading); the last step is always saved.
        steps: total step count to reach (counted from the start of the run, so a resumed
            run with ``steps=N`` stops at step N). Give ``minutes``, ``steps`` or both.
        save_every: checkpoint interval in steps; default 100 unless ``save_steps`` is given.
        save_steps: explicit steps to checkpoint at (say denser early in training, where
            rank moves fastest), on top of any ``save_every``. Step 0 and the last step are
            always saved.
        log_every: interval, in steps, of ``train`` records in ``train_log.jsonl``.
        keep_training_state: ``"last"`` keeps optimiser state in the newest checkpoint only
            (older checkpoints keep weights, config and trainer.json); ``"all"`` keeps it in
            every checkpoint.
        resume: continue from the newest complete checkpoint of the run directory (a fresh
            start when there is none).
        num_threads: torch CPU threads for this call (put back afterwards); ``None`` keeps
            torch's setting. On a machine shared with other jobs one thread can be several
            times faster than two (thread-pool stalls); results are bit-identical only at the
            same thread count.
    """

    minutes: float | None = None
    steps: int | None = None
    save_every: int | None = None
    save_steps: Sequence[int] | None = None
    log_every: int = 10
    keep_training_state: Literal["last", "all"] = "last"
    resume: bool = False
    num_threads: int | None = None

    def __post_init__(self) -> None:
        minutes, steps = self.minutes, self.steps
        if minutes is None and steps is None:
            raise SpeechrankError("give a budget: minutes (wall time) and/or steps")
        if minutes is not None and not minutes > 0:
            raise SpeechrankError(f"minutes must be positive, got {minutes}")
        if steps is not None and steps < 0:
            raise SpeechrankError(f"steps must be >= 0, got {steps}")
        if (self.save_every is not None and self.save_every < 1) or self.log_every < 1:
            raise SpeechrankError("save_every and log_every must be at least 1")
        if self.save_steps is not None:
            object.__setattr__(self, "save_steps", tuple(int(s) for s in self.save_steps))
        if any(step < 0 for step in self.save_steps or ()):
            raise SpeechrankError("save_steps must be >= 0")
        if self.num_threads is not None and self.num_threads < 1:
            raise SpeechrankError(f"num_threads must be at least 1, got {self.num_threads}")
        if self.keep_training_state not in ("last", "all"):
            raise SpeechrankError(f"keep_training_state must be 'last' or 'all', "
                                  f"got {self.keep_training_state!r}")

    @property
    def interval(self) -> int | None:
        """The checkpoint interval (the default one when no step is named)."""
        if self.save_every is None and self.save_steps is None:
            return DEFAULT_SAVE_EVERY
        return self.save_every


def pretrain(data: Dataset | str | os.PathLike[str], out_dir: str | os.PathLike[str],
             run: TrainRun, config: TrainConfig | None = None, *,
             overrides: Mapping[str, Any] | None = None, progress: ProgressArg = None,
             monitor: Monitor | None = None, stop: StopHook | None = None) -> PretrainSummary:
    """Train speechrank's small encoder on ``data``, writing checkpoints into ``out_dir``.

    Args:
        data: a :class:`Dataset` or a DATA spec (directory of audio, manifest,
            ``FORMAT:PATH``); a ``pretrain`` split is used when present, else all but ``test``.
        out_dir: the run directory (created; must hold no checkpoint unless ``run.resume``).
        run: the budget, checkpoints, log, resumption and threads (:class:`TrainRun`).
        config: the recipe (default :class:`TrainConfig`: ``tiny``, seed 0, 12 crops of
            2.56 s, peak learning rate 2e-3 after 60 warm-up steps, 7200 s of audio).
        overrides: recipe fields given on top of ``config`` (``{"seed": 3}``, as the CLI's
            options). On resume the checkpoint's recipe is used, and a value given here (or
            in ``config``) that differs from it is an error.
        progress: a :class:`~speechrank.progress.Progress` (stages ``loading audio`` in
            files and ``train`` in steps or seconds); ``None`` for silence.
        monitor: ``monitor(encoder, step) -> dict`` called after every checkpoint save; its
            values go to ``train_log.jsonl`` and the checkpoint's ``trainer.json``. It runs
            with the global random generators saved and restored around it, so it cannot
            change the training trajectory; an exception in it is logged and warned about.
        stop: ``stop(step) -> reason`` called after every checkpoint (after ``monitor``): a
            reason ends the run at that checkpoint (saved, resumable), with ``stopped_by``
            ``"monitor"`` and the reason in the summary and the log (the rank monitor's
            collapse alarm: :func:`speechrank.monitor.pretrain.pretrain_with_monitor`).

    Returns:
        A :class:`PretrainSummary`.
    """
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise SpeechrankError(f"{unknown[0]!r} is not a recipe field")
    out = Path(out_dir)
    resume_from = _resume_point(out, run.resume)
    recipe, model_config = _recipe_for_run(resume_from, config, overrides, run.steps)
    dataset, bank = _load_bank(data, recipe, model_config, progress)
    out.mkdir(parents=True, exist_ok=True)
    trainer = _Run(out, run, recipe, model_config, (dataset, bank), monitor, stop)
    with preserved_rng(), _algorithms(True), _threads(run.num_threads):
        return trainer.execute(resume_from, progress=progress)


def _resume_point(out: Path, resume: bool) -> Path | None:
    """The checkpoint a resumed run continues from (``None``: a fresh start)."""
    if out.exists() and not out.is_dir():
        raise SpeechrankError(f"{out} exists and is not a directory")
    existing = list_checkpoints(out)
    if not resume:
        if existing:
            raise SpeechrankError(
                f"{out} already holds checkpoints (newest: {existing[-1][1].name}); pass "
                "--resume to continue the run or choose an empty OUT")
        return None
    clean_temporary(out)
    if not existing:
        return None
    resume_from = existing[-1][1]
    if not (resume_from / TRAINING_STATE_FILE).is_file():
        raise SpeechrankError(f"cannot resume: newest checkpoint {resume_from} has no "
                              f"{TRAINING_STATE_FILE}")
    return resume_from


class _Run:
    """One call of :func:`pretrain` once its inputs are checked and its data is loaded."""

    def __init__(self, out: Path, run: TrainRun, recipe: TrainConfig,
                 model_config: BestRqConfig, data: tuple[Dataset, AudioBank],
                 monitor: Monitor | None, stop: StopHook | None) -> None:
        self.out = out
        self.run = run
        self.recipe = recipe
        self.model_config = model_config
        self.dataset, self.bank = dataset, bank = data
        self.fingerprint = bank.fingerprint()
        self.monitor = monitor
        self.stop = stop
        self.stop_reason: str | None = None
        self.keep_all_states = run.keep_training_state == "all"
        self.save_every = run.interval
        self.save_at = frozenset(run.save_steps or ())
        self.log_every = run.log_every
        self.sampler = CropSampler(bank, recipe.batch_size,
                                   round(recipe.crop_seconds * model_config.sample_rate),
                                   recipe.seed)
        seed = recipe.seed
        self.model = BestRqPretrainer(init_bestrq_model(model_config, seed),
                                      quantizer_seed=derive_seed(seed, _STREAM_QUANTIZER),
                                      targets=recipe.targets,
                                      num_clusters=recipe.num_clusters,
                                      kmeans_deltas=recipe.kmeans_deltas)
        self.measure_statistics = model_config.feature_norm == "global"
        self.monitor_encoder = BestRqEncoder(self.model.encoder, name=str(out), step=0)
        self.caller_algorithms = (torch.are_deterministic_algorithms_enabled(),
                                  torch.is_deterministic_algorithms_warn_only_enabled())
        self.optimizer = _optimizer(self.model, recipe)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, recipe.learning_rate_factor())
        self.step = 0
        self.elapsed_before = 0.0
        self.written: list[str] = []
        self.previous_checkpoint: Path | None = None
        self.resumed_loss: tuple[float | None, float | None] = (None, None)
        self.targets_info: dict[str, Any] = {"kind": recipe.targets}
        self.data_info = {"spec": dataset.spec, "format": dataset.format,
                          **bank.describe()}

    # --- state -----------------------------------------------------------------------------

    def _restore(self, checkpoint: Path) -> None:
        from safetensors.torch import load_file

        trainer = json.loads((checkpoint / TRAINER_FILE).read_text())
        if trainer.get("data_fingerprint") != self.fingerprint:
            raise SpeechrankError(f"cannot resume {checkpoint}: the training audio differs from "
                                  "the run's (data fingerprint mismatch); use the same DATA")
        self.model.load_state_dict(load_file(str(checkpoint / MODEL_FILE)),
                                   strict=True)
        state = load_training_state(checkpoint)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng_state(state["rng"])
        self.step = int(state["step"])
        self.elapsed_before = float(trainer.get("elapsed_seconds", 0.0))
        self.previous_checkpoint = checkpoint
        self.resumed_loss = trainer.get("loss"), trainer.get("accuracy")

    def _training_state(self) -> dict[str, Any]:
        return {"step": self.step, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": capture_rng_state(),
                "sampler": self.sampler.position(self.step)}

    def _save(self, window: Window, elapsed: float, log: RunLog) -> Path:
        from speechrank import __version__

        trainer = {
            "step": self.step, "loss": window.mean_loss, "accuracy": window.accuracy,
            "majority_accuracy": window.majority_accuracy, "steps_in_window": window.steps,
            "elapsed_seconds": round(elapsed, 3),
            "seed": self.recipe.seed, "data_fingerprint": self.fingerprint,
            "data": self.data_info, "sampler": self.sampler.position(self.step),
            "learning_rate": self.scheduler.get_last_lr()[0],
            "resumable": True,
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "speechrank_version": __version__, "torch_version": torch.__version__,
        }
        path = save_checkpoint(self.out, self.step, config=self.model_config,
                               tensors=self.model.state_dict(), recipe=self.recipe.to_dict(),
                               trainer=json_safe(trainer),
                               training_state=self._training_state())
        if (self.previous_checkpoint is not None and not self.keep_all_states
                and self.previous_checkpoint != path):
            drop_training_state(self.previous_checkpoint)
        self.previous_checkpoint = path
        self.written.append(str(path))
        log.write({"event": "checkpoint", "step": self.step, "path": str(path),
                   "loss": window.mean_loss, "accuracy": window.accuracy})
        if self.monitor is not None:
            self._call_monitor(path, log)
        if self.stop is not None and self.stop_reason is None:
            reason = self.stop(self.step)
            if reason:
                self.stop_reason = str(reason)
                log.write({"event": "stop", "step": self.step, "reason": self.stop_reason})
        return path

    def _call_monitor(self, path: Path, log: RunLog) -> None:
        # one adapter for the run (a monitor may cache per encoder), renamed per checkpoint
        encoder = self.monitor_encoder
        encoder.name, encoder.step = str(path), self.step
        started = time.monotonic()
        try:
            # the monitor runs under the caller's own determinism setting, and cannot move the
            # training's random generators
            with preserved_rng(), _algorithms(*self.caller_algorithms):
                values = self.monitor(encoder, self.step)  # type: ignore[misc]
        except Exception as err:  # a monitor must not end a training run
            message = f"{type(err).__name__}: {err}"
            warnings.warn(f"monitor failed at step {self.step}: {message}", stacklevel=2)
            log.write({"event": "monitor_error", "step": self.step, "error": message})
            return
        values = json_safe(dict(values or {}))
        log.write({"event": "monitor", "step": self.step,
                   "seconds": round(time.monotonic() - started, 3), "values": values})
        update_trainer_json(path, {"monitor": values})

    def _fit_targets(self) -> None:
        """Fit the k-means centroids of HuBERT-style targets on the (un-augmented) audio."""
        seed = derive_seed(self.recipe.seed, _STREAM_KMEANS)
        frames = frontend_frames(self.bank, self.model.encoder.frontend,
                                 max_frames=self.recipe.kmeans_frames, seed=seed,
                                 deltas=self.recipe.kmeans_deltas)
        centroids, summary = fit_kmeans_centroids(frames, self.recipe.num_clusters,
                                                  seed=seed % (2**32))
        quantizer = self.model.quantizer
        assert isinstance(quantizer, KMeansQuantizer)
        quantizer.set_centroids(torch.from_numpy(centroids))
        self.targets_info = {"kind": "hubert", **summary}

    # --- one step --------------------------------------------------------------------------

    def _train_step(self) -> tuple[MaskedPrediction, float, float, int]:
        seed, step = self.recipe.seed, self.step
        waves, lengths = self.sampler.batch(step)
        snr_db = None
        if self.recipe.input_snr_db is not None:
            low, high = self.recipe.input_snr_db
            draw = np.random.default_rng([seed, _STREAM_SNR, step]).uniform(low, high,
                                                                          len(lengths))
            snr_db = torch.from_numpy(draw.astype(np.float32))
        self.model.train()
        random = BatchRandom(
            rng=np.random.default_rng([seed, _STREAM_MASK, step]),
            noise=torch.Generator().manual_seed(derive_seed(seed, _STREAM_NOISE, step)),
            shuffle=np.random.default_rng([seed, _STREAM_SHUFFLE, step])
            if self.recipe.shuffle_targets else None)
        result = self.model(waves, lengths, self.recipe.masking(), random, snr_db=snr_db)
        loss = float(result.loss.detach())
        if not math.isfinite(loss):
            raise SpeechrankError(f"the loss is not finite at step {step}; lower the learning "
                                  "rate or resume from an earlier checkpoint")
        self.optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                         self.recipe.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return result, loss, grad_norm, int(lengths.sum())

    # --- the loop --------------------------------------------------------------------------

    def execute(self, resume_from: Path | None, *, progress: ProgressArg) -> PretrainSummary:
        minutes, steps = self.run.minutes, self.run.steps
        if resume_from is not None:
            self._restore(resume_from)  # statistics come back with the weights
        else:
            frontend = self.model.encoder.frontend
            if self.measure_statistics:
                frontend.set_statistics(*log_mel_statistics(self.bank, frontend))
            if self.recipe.targets == "hubert":
                self._fit_targets()
            torch.manual_seed(derive_seed(self.recipe.seed, _STREAM_TORCH))
        start_step = self.step
        log = RunLog(self.out / LOG_FILE, keep_until_step=start_step if resume_from else None)
        try:
            return self._loop(log, resume_from, start_step, minutes, steps, progress)
        finally:
            log.close()

    def _loop(self, log: RunLog, resume_from: Path | None, start_step: int,
              minutes: float | None, steps: int | None, progress: ProgressArg
              ) -> PretrainSummary:
        budget = None if minutes is None else minutes * 60.0
        log.write({"event": "start" if resume_from is None else "resume", "step": start_step,
                   "resumed_from": str(resume_from) if resume_from else None,
                   "recipe": self.recipe.to_dict(), "model": self.model_config.to_dict(),
                   "encoder_parameters": sum(p.numel() for p in self.model.encoder.parameters()),
                   "data": self.data_info, "data_fingerprint": self.fingerprint,
                   "targets": self.targets_info,
                   "skipped": self.bank.skipped, "budget_minutes": minutes,
                   "budget_steps": steps, "torch_threads": torch.get_num_threads()})
        session_start = time.monotonic()
        totals, since_save, since_log = Window(), Window(), Window()
        # a session that runs no step reports what its checkpoint recorded
        final_loss, final_accuracy = self.resumed_loss
        if resume_from is None:
            self._save(since_save, 0.0, log)

        def elapsed() -> float:
            return time.monotonic() - session_start

        def done() -> str | None:
            if self.stop_reason is not None:
                return "monitor"
            if steps is not None and self.step >= steps:
                return "steps"
            if budget is not None and elapsed() >= budget:
                return "minutes"
            return None

        stopped_by = done()
        with ProgressBar(progress, steps, budget, start_step) as bar:
            while stopped_by is None:
                started = time.monotonic()
                result, loss, grad_norm, samples = self._train_step()
                seconds = time.monotonic() - started
                for window in (totals, since_save, since_log):
                    window.add(result, loss, samples, seconds, grad_norm)
                stopped_by = done()
                if self.step % self.log_every == 0 or stopped_by is not None:
                    self._log_train(log, since_log, self.elapsed_before + elapsed())
                    bar.update(self.step, elapsed(), since_log.mean_loss, since_log.accuracy,
                               since_log.steps / since_log.seconds)
                    since_log = Window()
                if self._save_due() or stopped_by is not None:
                    # the last step is always saved, whatever stopped the run
                    self._save(since_save, self.elapsed_before + elapsed(), log)
                    final_loss, final_accuracy = since_save.mean_loss, since_save.accuracy
                    since_save = Window()
                    stopped_by = done()
        session = elapsed()
        log.write({"event": "end", "step": self.step, "stopped_by": stopped_by,
                   "stop_reason": self.stop_reason,
                   "session_seconds": round(session, 3),
                   "train_seconds": round(totals.seconds, 3)})
        return PretrainSummary(
            out_dir=str(self.out), start_step=start_step, final_step=self.step,
            stopped_by=stopped_by, resumed_from=str(resume_from) if resume_from else None,
            checkpoints=self.written, final_loss=final_loss, final_accuracy=final_accuracy,
            elapsed_seconds=self.elapsed_before + session, session_seconds=session,
            train_seconds=totals.seconds,
            steps_per_second=totals.steps / totals.seconds if totals.seconds else 0.0,
            audio_seconds_per_second=(totals.audio_samples / self.model_config.sample_rate
                                      / totals.seconds if totals.seconds else 0.0),
            data=self.data_info, data_fingerprint=self.fingerprint, skipped=self.bank.skipped,
            recipe=self.recipe.to_dict(),
            model={"size": self.recipe.size, **self.model_config.to_dict(),
                   "encoder_parameters": sum(p.numel()
                                             for p in self.model.encoder.parameters())},
            stop_reason=self.stop_reason)

    def _save_due(self) -> bool:
        periodic = self.save_every is not None and self.step % self.save_every == 0
        return periodic or self.step in self.save_at

    def _log_train(self, log: RunLog, window: Window, elapsed: float) -> None:
        log.write({
            "event": "train", "step": self.step, "steps": window.steps,
            "loss": window.mean_loss, "accuracy": window.accuracy,
            "majority_accuracy": window.majority_accuracy,
            "target_perplexity": window.target_perplexity,
            "masked_frames": window.masked,
            "learning_rate": self.scheduler.get_last_lr()[0],
            "grad_norm": window.grad_norm / window.steps,
            "steps_per_second": window.steps / window.seconds,
            "audio_seconds_per_second": (window.audio_samples / self.model_config.sample_rate
                                         / window.seconds),
            "elapsed_seconds": round(elapsed, 3),
        })
