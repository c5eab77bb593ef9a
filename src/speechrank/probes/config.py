"""The probe recipes: one frozen dataclass per kind of probe, holding every hyperparameter.

Modelled on the ``default_config()`` of s3prl's SUPERB problems (one place per task that holds
every knob), but much lighter: the aim is a fast, honest *linear* read-out of each frozen layer
for comparing layers and checkpoints (as in Aldeneh et al., ICASSP 2025, arXiv 2409.10787),
not the SUPERB leaderboard protocol (s3prl trains a 256-wide projector plus a linear head for
up to 200k steps per task).

- :class:`UtteranceProbeConfig` (``ks``, ``sid``, ``er``, ``label:COLUMN``): mean over the valid
  frames of each utterance, standardised on train, multinomial logistic regression (L2, lbfgs)
  with the inverse strength ``C`` chosen on dev from a 5-point grid.
- :class:`FrameProbeConfig` (``pr`` with time-aligned phones): the same logistic probe on single
  frames, each labelled with the phone covering its centre time; frames capped per split.
- :class:`CTCProbeConfig` (``pr`` with transcripts only): a linear layer plus CTC
  (Graves et al., ICML 2006) trained for a fixed budget with Adam, greedy decoding, scored by
  phone error rate.

The test split is never used for a choice in any recipe.

Every recipe is a pydantic dataclass checked by type and range when it is built (strict: no
coercion between types, so ``"5"`` is not a count and ``true`` is not a number), whether in
Python or from a TOML table (:mod:`speechrank.probes.recipes`), so a bad value never reaches
a fit.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

import pydantic
from pydantic import AfterValidator, Field

from speechrank.validation import STRICT_DATACLASS

#: The floating-point type lbfgs works in (the features are standardised in float64 first).
FitDtype = Literal["float64", "float32"]
#: A split's name.
Split = Literal["train", "dev", "test"]
#: A count of at least one (steps, iterations, threads, frames).
Count = Annotated[int, Field(ge=1)]
#: A finite number above zero.
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
#: A finite number of at least zero.
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: A string with something in it.
Text = Annotated[str, Field(min_length=1)]

#: Who solves the logistic regressions: ``torch`` fits every layer and every ``C`` of a probe
#: as one batch (:mod:`speechrank.probes.batched`, on the encoder's device), ``sklearn``
#: one at a time with scikit-learn's lbfgs (the reference). Same objective, same stopping rule.
Solver = Literal["torch", "sklearn"]

#: The name each solver is recorded under in a row's ``conventions["solver"]``.
SOLVER_NAMES: dict[str, str] = {"torch": "torch-lbfgs-batched", "sklearn": "sklearn-lbfgs"}

#: Per-example weights in the loss: ``none`` (every example 1) or ``balanced`` (scikit-learn's
#: ``n / (K * n_k)`` for an example of class ``k``, so every class weighs the same in total).
ClassWeight = Literal["none", "balanced"]

#: Inverse L2 strengths tried on dev (scikit-learn's ``C``), smallest (strongest) first.
DEFAULT_C_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)

#: The splits every probe reports, in order.
SPLITS: tuple[str, ...] = ("train", "dev", "test")


def _every_split(caps: dict[str, Any]) -> dict[str, Any]:
    if set(caps) != set(SPLITS):
        raise ValueError(f"a table needs train, dev and test values, got {sorted(caps)}")
    return {name: caps[name] for name in SPLITS}


#: Frames per split (a table of train, dev and test).
FrameCaps = Annotated[dict[Split, Count], AfterValidator(_every_split)]
#: Seconds of audio per split (a table of train, dev and test).
SecondCaps = Annotated[dict[Split, Positive], AfterValidator(_every_split)]
#: Inverse L2 strengths (a list from TOML is taken as the tuple).
CGrid = Annotated[tuple[Positive, ...], Field(min_length=1, strict=False)]


@pydantic.dataclasses.dataclass(frozen=True, config=STRICT_DATACLASS)
class LogisticConfig:
    """Multinomial logistic regression on standardised features.

    The objective is scikit-learn's (binomial for two classes): the weighted mean log-loss
    plus ``||W||^2 / (2 C S)`` (``S``: the sum of the example weights; intercepts are not
    penalised), minimised until the largest gradient entry is at most ``tol``; both solvers
    reach the same optimum (benchmarks/bench_batched_probes.py measures how close).

    Attributes:
        c_grid: inverse L2 strengths to try; the one with the best dev ``selection_metric``
            wins, ties going to the smaller ``C`` (stronger regularisation).
        selection_metric: ``accuracy`` or ``macro_f1``, measured on dev.
        max_iter: lbfgs iteration cap per fit (a fit that hits it is reported as not
            converged in the row's conventions, never silently).
        tol: lbfgs stopping tolerance.
        standardise: z-score every feature with the train mean and standard deviation
            (scikit-learn's ``StandardScaler``; a constant feature keeps scale 1).
        blas_threads: BLAS threads during the fits (``None``: the library default). One by
            default: probe-sized matrices gain little from threads, and OpenBLAS threads
            spin-wait, which made the FSDD keyword fits 30 times slower on a busy 2-core
            machine (70 s against 2.3 s per layer) in our measurement. The ``torch`` solver
            runs on the process's torch threads instead (one batch for all layers).
        fit_dtype: the type lbfgs's loss and gradient are computed in. The features are
            z-scored in float64 either way; ``float32`` then casts them, and scikit-learn's
            lbfgs keeps float32 through its matrix products (the optimiser's own state
            stays float64). ``float64`` (the default) is the reference; ``float32`` is a
            named, recorded variant for time-bound runs such as the demo
            (benchmarks/bench_probe_dtype.py measures both). The batched solver keeps
            float64 sums over examples and float64 optimiser state in either.
        solver: ``torch`` (the default: all layers and every ``C`` in one batched L-BFGS,
            recorded as ``torch-lbfgs-batched``) or ``sklearn`` (one fit at a time, warm
            started along the grid, recorded as ``sklearn-lbfgs``).
        class_weight: ``none`` (today's default) or ``balanced``.
    """

    c_grid: CGrid = DEFAULT_C_GRID
    selection_metric: Literal["accuracy", "macro_f1"] = "accuracy"
    max_iter: Count = 1000
    tol: Positive = 1e-4
    standardise: bool = True
    blas_threads: Count | None = 1
    fit_dtype: FitDtype = "float64"
    solver: Solver = "torch"
    class_weight: ClassWeight = "none"


@pydantic.dataclasses.dataclass(frozen=True, config=STRICT_DATACLASS)
class UtteranceProbeConfig:
    """Utterance classification (``ks``, ``sid``, ``er``, ``label:COLUMN``).

    Attributes:
        pooling: ``mean`` over valid frames (SUPERB's KS/SID/ER pooling) or ``sum``.
        logistic: the classifier.
    """

    pooling: Literal["mean", "sum"] = "mean"
    logistic: LogisticConfig = dataclasses.field(default_factory=LogisticConfig)


@pydantic.dataclasses.dataclass(frozen=True, config=STRICT_DATACLASS)
class FrameProbeConfig:
    """Frame-level phone classification (``pr`` where time-aligned ``phones`` exist).

    Frame ``i`` of an utterance is labelled with the phone whose ``[start, end)`` interval
    covers its centre time ``(i + 0.5) / frame_rate`` seconds; a frame covered by no phone gets
    ``silence_label``.

    The cap keeps the cache and the fit small: per split, utterances are taken in a seeded
    random order until ``max_audio_seconds`` of audio, then ``max_frames`` frames are spread
    over them as evenly as their lengths allow (water-filling) and placed evenly within each
    utterance with a random phase seeded by ``(seed, uid)``.

    Attributes:
        logistic: the classifier.
        max_frames: frame cap per split.
        max_audio_seconds: audio cap per split (limits the encoder's work on large corpora).
        silence_label: class of frames that no phone covers.
    """

    logistic: LogisticConfig = dataclasses.field(default_factory=LogisticConfig)
    max_frames: FrameCaps = dataclasses.field(
        default_factory=lambda: {"train": 20_000, "dev": 5_000, "test": 5_000})
    max_audio_seconds: SecondCaps = dataclasses.field(
        default_factory=lambda: {"train": 3_600.0, "dev": 900.0, "test": 900.0})
    silence_label: Text = "sil"


@pydantic.dataclasses.dataclass(frozen=True, config=STRICT_DATACLASS)
class CTCProbeConfig:
    """Linear CTC phone recogniser (``pr`` where only transcripts exist).

    A single ``Linear(D, V + 1)`` (blank = index 0) on standardised frames, trained with CTC
    (Graves et al., ICML 2006; PyTorch ``CTCLoss``, ``zero_infinity=True``) by Adam for a fixed
    budget of ``steps`` optimiser steps, decoded greedily (best path, repeats merged, blanks
    dropped). Dev PER is measured every ``eval_every`` steps and at the end; the weights with
    the lowest dev PER (ties: the earlier step) are the ones scored, so dev makes the one
    choice (the stopping step) and test none. Targets come from the transcript through eSpeak
    NG's text-to-phonemes (:func:`speechrank.audio.synthetic_espeak.phonemize`).

    Attributes:
        steps: optimiser steps (batches drawn from seeded per-epoch shuffles of train).
        eval_every: steps between dev evaluations.
        batch_size: utterances per step.
        torch_threads: torch CPU threads while training (restored afterwards; ``None``: leave
            as is). One by default: the probe's matrices are small, and on a busy 2-core
            machine one thread ran a 300-step probe in 9 s against 20 s with two.
        lr: Adam learning rate (s3prl's SUPERB PR recipe uses 1e-2 for its linear head).
        weight_decay: Adam L2 weight decay.
        grad_clip: gradient norm clip (0 = none).
        max_audio_seconds: audio cap per split (seeded random utterance order).
        language: eSpeak NG voice for ``phonemize`` when an utterance has no ``language``
            label.
    """

    steps: Count = 600
    eval_every: Count = 100
    batch_size: Count = 16
    torch_threads: Count | None = 1
    lr: Positive = 1e-2
    weight_decay: NonNegative = 0.0
    grad_clip: NonNegative = 1.0
    max_audio_seconds: SecondCaps = dataclasses.field(
        default_factory=lambda: {"train": 1_200.0, "dev": 300.0, "test": 300.0})
    language: Text = "en-us"


ProbeConfig = UtteranceProbeConfig | FrameProbeConfig | CTCProbeConfig


def config_dict(config: ProbeConfig) -> dict[str, Any]:
    """The recipe as a JSON-ready dict (goes into the output's conventions)."""
    return dataclasses.asdict(config)
