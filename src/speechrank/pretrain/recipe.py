"""The training recipe: :class:`TrainConfig` and the learning-rate schedules.

The default recipe is the one that made the built-in small encoder better than its random
initialisation within the demo's budget (``benchmarks/bench_pretrain_recipes.py`` holds what was
tried and what each gave):

- **targets**: HuBERT's first iteration (Hsu et al., IEEE/ACM TASLP 2021, arXiv 2106.07447):
  k-means (``K = 50``) on the pretraining audio's own normalised log-mel frames, fitted before
  step 0. BEST-RQ's random-projection quantiser (Chiu et al., ICML 2022, arXiv 2202.01855)
  stays available as ``targets="bestrq"``; on the demo corpus it left the keyword and
  speaker probes below the random initialisation after 1,000 steps (frame phone accuracy rose
  by about 0.03);
- **denoising**: white noise at an SNR drawn uniformly from 0-20 dB per crop is added to the
  encoder's input while the targets come from the clean audio (WavLM's denoising masked
  prediction, Chen et al., IEEE JSTSP 2022, arXiv 2110.13900), so the encoder learns what was
  said under noise; pair it with clean pretraining audio (``speechrank corpus`` renders the
  pretraining clips clean by default);
- **loss**: cross-entropy on masked frames plus 0.5 times the cross-entropy on the unmasked
  ones (HuBERT's weighting of the two, with weight 0 for unmasked in the paper's best setting;
  here the unmasked term is the denoising signal);
- **masks**: each frame starts a 10-frame (200 ms) span with probability 0.08, as in HuBERT;
  masked frames become noise of standard deviation 0.1 (BEST-RQ);
- **optimiser**: AdamW (betas 0.9/0.98, weight decay 0.01 on matrices only), 12 random 2.56 s
  crops per step, 60 warm-up steps to a peak learning rate of 2e-3, then a linear decay to 0 at
  the run's last step (wav2vec 2.0 and HuBERT's schedule); gradient clipping at norm 1.

Checkpoints of speechrank 0.1 recorded no ``targets`` field; :meth:`TrainConfig.from_dict`
reads them with :data:`LEGACY_RECIPE`, the BEST-RQ recipe they were trained with.

A recipe file (``speechrank pretrain --recipe FILE``) is a TOML table of these fields, read by
:func:`load_recipe` and checked once, by type and range, against :class:`RecipeFile`; fields it
leaves out keep the defaults above::

    # BEST-RQ targets at a lower peak learning rate
    targets = "bestrq"
    learning_rate = 1e-3
    input_snr_db = false   # no input noise (TOML has no null)
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pydantic

from speechrank.encoders.bestrq import SIZES, config_for_size
from speechrank.errors import SpeechrankError
from speechrank.pretrain.data import DEFAULT_MAX_PRELOAD_SECONDS
from speechrank.pretrain.objective import Masking, TargetKind
from speechrank.validation import STRICT, read_toml, validate

__all__ = ["LEGACY_RECIPE", "RecipeFile", "Schedule", "TrainConfig", "WarmupInverseSqrt",
           "WarmupLinear", "derive_seed", "load_recipe"]

Schedule = Literal["inverse_sqrt", "linear"]


def derive_seed(*words: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(words)).generate_state(1, np.uint64)[0] >> 1)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes the training trajectory (recorded in every checkpoint)."""

    size: str = "tiny"
    seed: int = 0
    batch_size: int = 12
    crop_seconds: float = 2.56
    learning_rate: float = 2e-3  # peak, reached at the end of warm-up (0: weights never move)
    warmup_steps: int = 60
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    mask_prob: float = 0.08  # each frame starts a span with this probability (HuBERT: 0.08)
    mask_span: int = 10  # frames of 20 ms: 200 ms (HuBERT and wav2vec 2.0: 10 frames)
    noise_std: float = 0.1
    max_preload_seconds: float = DEFAULT_MAX_PRELOAD_SECONDS
    # targets: "hubert" (k-means on the pretraining audio's front-end frames, fitted before
    # step 0; see speechrank.pretrain.targets) or "bestrq" (random-projection quantiser)
    targets: TargetKind = "hubert"
    num_clusters: int = 50
    kmeans_frames: int = 50_000
    kmeans_deltas: bool = False  # cluster [features, time derivative] (HuBERT's MFCC + deltas)
    # additive white noise on the encoder's input at an SNR drawn uniformly per crop from this
    # range (dB); the targets come from the un-augmented audio. None = no augmentation.
    input_snr_db: tuple[float, float] | None = (0.0, 20.0)
    # weight of the cross-entropy on unmasked frames (0 = masked frames only, as BEST-RQ)
    unmasked_weight: float = 0.5
    # "linear" (warm-up, then linear decay to 0 at decay_steps, by default the run's --steps)
    # or "inverse_sqrt" (warm-up, then 1/sqrt(step), for runs with no step budget)
    schedule: Schedule = "linear"
    decay_steps: int | None = None
    # a control, not a recipe: each step's targets are permuted across the batch's frames, so
    # they say nothing about the input and the loss can only fall to the entropy of the codes
    shuffle_targets: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.crop_seconds >= 0.1, f"crop seconds must be at least 0.1, "
                                       f"got {self.crop_seconds}"),
            (self.learning_rate >= 0, f"learning rate must be >= 0, "
                                      f"got {self.learning_rate}"),
            (self.warmup_steps >= 0, f"warm-up steps must be >= 0, got {self.warmup_steps}"),
            (0 < self.mask_prob <= 1, f"mask probability must be in (0, 1], "
                                      f"got {self.mask_prob}"),
            (self.mask_span >= 1, f"mask span must be at least 1, got {self.mask_span}"),
            (self.max_preload_seconds > 0, "max preload seconds must be positive"),
            (self.targets in ("bestrq", "hubert"), f"targets must be 'bestrq' or 'hubert', "
                                                    f"got {self.targets!r}"),
            (self.num_clusters >= 2, f"num_clusters must be at least 2, "
                                     f"got {self.num_clusters}"),
            (self.kmeans_frames >= self.num_clusters, "kmeans_frames must be at least "
                                                      "num_clusters"),
            (self.input_snr_db is None or (len(self.input_snr_db) == 2
                                           and self.input_snr_db[0] <= self.input_snr_db[1]),
             f"input SNR range must be (low, high) with low <= high, "
             f"got {self.input_snr_db!r}"),
            (self.unmasked_weight >= 0, f"unmasked weight must be >= 0, "
                                        f"got {self.unmasked_weight}"),
            (self.schedule in ("inverse_sqrt", "linear"), f"schedule must be 'inverse_sqrt' "
                                                           f"or 'linear', got {self.schedule!r}"),
            (self.schedule != "linear" or self.decay_steps is None
             or self.decay_steps > self.warmup_steps,
             "the linear schedule needs decay_steps greater than warmup_steps"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise SpeechrankError("; ".join(problems))
        config_for_size(self.size)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["adam_betas"] = list(self.adam_betas)
        if self.input_snr_db is not None:
            data["input_snr_db"] = list(self.input_snr_db)
        return data

    def masking(self) -> Masking:
        """The recipe's masking and loss weighting, as the objective takes them."""
        return Masking(mask_prob=self.mask_prob, mask_span=self.mask_span,
                       noise_std=self.noise_std, unmasked_weight=self.unmasked_weight)

    def learning_rate_factor(self) -> WarmupInverseSqrt | WarmupLinear:
        """The schedule's factor of the peak learning rate at each update."""
        if self.schedule == "linear":
            if self.decay_steps is None:
                raise SpeechrankError("the linear schedule needs decay_steps (or a step budget)")
            return WarmupLinear(self.warmup_steps, self.decay_steps)
        return WarmupInverseSqrt(self.warmup_steps)

    def for_budget(self, steps: int | None) -> TrainConfig:
        """This recipe with its schedule fixed for a run of ``steps`` steps: a linear schedule
        without ``decay_steps`` decays to 0 at ``steps``, or, for a run with no step budget
        (a wall-time budget only), becomes ``inverse_sqrt``, which needs no end."""
        if self.schedule != "linear" or self.decay_steps is not None:
            return self
        if steps is None or steps <= self.warmup_steps:
            return dataclasses.replace(self, schedule="inverse_sqrt")
        return dataclasses.replace(self, decay_steps=steps)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """The recipe recorded in a checkpoint; fields that checkpoints of speechrank 0.1
        (BEST-RQ only) did not record take the values those runs used."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {**(LEGACY_RECIPE if "targets" not in data else {}),
                  **{k: v for k, v in data.items() if k in names}}
        if "adam_betas" in values:
            values["adam_betas"] = tuple(values["adam_betas"])
        if values.get("input_snr_db") is not None:
            values["input_snr_db"] = tuple(values["input_snr_db"])
        return cls(**values)


#: The recipe of speechrank 0.1 (BEST-RQ, masks of 20 frames, inverse-square-root decay), for
#: the fields its checkpoints do not record; ``TrainConfig(**LEGACY_RECIPE)`` is that recipe.
LEGACY_RECIPE: dict[str, Any] = {
    "learning_rate": 1e-3, "warmup_steps": 200, "mask_prob": 0.02, "mask_span": 20,
    "targets": "bestrq", "input_snr_db": None, "unmasked_weight": 0.0,
    "schedule": "inverse_sqrt", "decay_steps": None,
}


_Float = Annotated[float, pydantic.Strict()]


class RecipeFile(pydantic.BaseModel):
    """The schema of a recipe file: :class:`TrainConfig`'s fields with their types and ranges
    (every key optional; what a file leaves out keeps :class:`TrainConfig`'s default)."""

    model_config = pydantic.ConfigDict(**STRICT, allow_inf_nan=False)

    size: Literal[tuple(SIZES)] = "tiny"  # type: ignore[valid-type]
    seed: int = pydantic.Field(0, ge=0)
    batch_size: int = pydantic.Field(12, ge=1)
    crop_seconds: float = pydantic.Field(2.56, ge=0.1)
    learning_rate: float = pydantic.Field(2e-3, ge=0.0)
    warmup_steps: int = pydantic.Field(60, ge=0)
    weight_decay: float = pydantic.Field(0.01, ge=0.0)
    # TOML has no tuples: a two-number array, each number strictly a number
    adam_betas: Annotated[tuple[Annotated[_Float, pydantic.Field(ge=0.0, lt=1.0)],
                                Annotated[_Float, pydantic.Field(ge=0.0, lt=1.0)]],
                          pydantic.Field(strict=False)] = (0.9, 0.98)
    adam_eps: float = pydantic.Field(1e-8, gt=0.0)
    grad_clip: float = pydantic.Field(1.0, gt=0.0)
    mask_prob: float = pydantic.Field(0.08, gt=0.0, le=1.0)
    mask_span: int = pydantic.Field(10, ge=1)
    noise_std: float = pydantic.Field(0.1, ge=0.0)
    max_preload_seconds: float = pydantic.Field(DEFAULT_MAX_PRELOAD_SECONDS, gt=0.0)
    targets: TargetKind = "hubert"
    num_clusters: int = pydantic.Field(50, ge=2)
    kmeans_frames: int = pydantic.Field(50_000, ge=2)
    kmeans_deltas: bool = False
    # TOML has no null: ``false`` switches the input noise off
    input_snr_db: (Annotated[tuple[_Float, _Float], pydantic.Field(strict=False)]
                   | Literal[False] | None) = (0.0, 20.0)
    unmasked_weight: float = pydantic.Field(0.5, ge=0.0)
    schedule: Schedule = "linear"
    decay_steps: int | None = pydantic.Field(None, ge=1)
    shuffle_targets: bool = False

    # cross-field rules are checked on the later field, so the error names a key
    @pydantic.field_validator("kmeans_frames")
    @classmethod
    def _enough_frames(cls, value: int, info: pydantic.ValidationInfo) -> int:
        clusters = info.data.get("num_clusters")
        if clusters is not None and value < clusters:
            raise ValueError(f"must be at least num_clusters ({clusters})")
        return value

    @pydantic.field_validator("input_snr_db")
    @classmethod
    def _ordered(cls, value: Any) -> Any:
        if value and value[0] > value[1]:
            raise ValueError("must be [low, high] with low <= high (dB), or false for none")
        return value

    @pydantic.field_validator("decay_steps")
    @classmethod
    def _after_warmup(cls, value: int | None, info: pydantic.ValidationInfo) -> int | None:
        warmup = info.data.get("warmup_steps")
        if (value is not None and warmup is not None
                and info.data.get("schedule", "linear") == "linear" and value <= warmup):
            raise ValueError(f"must be greater than warmup_steps ({warmup}) for the linear "
                             "schedule")
        return value

    def to_config(self) -> TrainConfig:
        """The :class:`TrainConfig` of the keys the file gave (the rest at its defaults)."""
        values = {name: getattr(self, name) for name in self.model_fields_set}
        if values.get("input_snr_db") is False:
            values["input_snr_db"] = None
        return TrainConfig(**values)


def load_recipe(path: str | os.PathLike[str]) -> TrainConfig:
    """The :class:`TrainConfig` of a recipe file (TOML; see :class:`RecipeFile`), or one
    :class:`SpeechrankError` line naming the file, the key, the value and what is allowed."""
    raw = read_toml(path, "recipe")
    return validate(RecipeFile, raw, where=f"recipe {Path(path)}").to_config()


class WarmupInverseSqrt:
    """Learning-rate factor of update ``k`` (0-based): ``(k + 1) / w`` during the ``w`` warm-up
    updates, then ``sqrt(w / (k + 1))`` (Vaswani et al. 2017, "Attention is all you need")."""

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = warmup_steps

    def __call__(self, step: int) -> float:
        n = step + 1
        if self.warmup_steps <= 0:
            return 1.0
        return min(n / self.warmup_steps, math.sqrt(self.warmup_steps / n))


class WarmupLinear:
    """Learning-rate factor of update ``k`` (0-based): ``(k + 1) / w`` during the ``w`` warm-up
    updates, then a linear decay reaching 0 at update ``total`` (the schedule of wav2vec 2.0
    and HuBERT pretraining, Baevski et al. 2020, Hsu et al. 2021)."""

    def __init__(self, warmup_steps: int, total_steps: int) -> None:
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps

    def __call__(self, step: int) -> float:
        n = step + 1
        if n <= self.warmup_steps:
            return n / self.warmup_steps
        return max(0.0, (self.total_steps - step) / (self.total_steps - self.warmup_steps))
