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
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from speechrank.encoders.bestrq import config_for_size
from speechrank.errors import SpeechrankError
from speechrank.pretrain.data import DEFAULT_MAX_PRELOAD_SECONDS
from speechrank.pretrain.objective import TargetKind

__all__ = ["LEGACY_RECIPE", "Schedule", "TrainConfig", "WarmupInverseSqrt", "WarmupLinear",
           "derive_seed"]

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
    learning_rate: float = 2e-3  # peak, reached at the end of warm-up
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

    def __post_init__(self) -> None:
        checks = [
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.crop_seconds >= 0.1, f"crop seconds must be at least 0.1, "
                                       f"got {self.crop_seconds}"),
            (self.learning_rate > 0, f"learning rate must be positive, "
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
