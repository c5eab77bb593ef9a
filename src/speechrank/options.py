"""One options type for every pass over audio, with the one source of its defaults.

``rank``, ``probe``, ``sweep`` and the training monitor all choose a subset of utterances, crop
them, batch them by padded seconds, cap the frames of the ``frames`` pooling and seed those
choices. :class:`RunOptions` holds those five knobs under one name each (the command line keeps
its historical flags: ``--num-utterances``, ``--max-seconds`` for ``crop_seconds``); the
constants below are the only place their defaults are written.

The named variants that used to be bare strings are typed here too: :data:`Pooling` and
:data:`FeatureNorm` (the probe kinds are :data:`speechrank.probes.drivers.TaskKind`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal, get_args

from speechrank.errors import SpeechrankError

__all__ = [
    "DEFAULT_BATCH_SECONDS",
    "DEFAULT_MAX_FRAMES",
    "DEFAULT_MONITOR_UTTERANCES",
    "DEFAULT_NUM_UTTERANCES",
    "DEFAULT_N_CLUSTERS",
    "POOLINGS",
    "FeatureNorm",
    "Pooling",
    "RunOptions",
    "check_pooling",
    "resolve_options",
]

#: The speech paper's utterance count (Aldeneh et al., ICASSP 2025, arXiv 2409.10787).
DEFAULT_NUM_UTTERANCES = 10_000
#: The RankMe paper's sample count (Garrido et al., ICML 2023) as the ``frames`` row cap.
DEFAULT_MAX_FRAMES = 25_600
#: Padded audio per encoder batch, in seconds.
DEFAULT_BATCH_SECONDS = 32.0
#: k of the cluster metrics: Whetten et al. (Interspeech 2025, arXiv 2501.05966).
DEFAULT_N_CLUSTERS = 1024
#: The training monitor's held-out subset: smaller, since it runs at every check.
DEFAULT_MONITOR_UTTERANCES = 1000

#: How a layer's frames become rows: ``sum`` (RankMe-t), ``mean`` or ``frames``.
Pooling = Literal["sum", "mean", "frames"]
POOLINGS: tuple[Pooling, ...] = get_args(Pooling)
#: How the BEST-RQ encoder normalises its log-mel features: with statistics of the training
#: data (``global``) or of each utterance (``utterance``).
FeatureNorm = Literal["global", "utterance"]


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The knobs every pass over audio shares (a constructor that checks and stores).

    Attributes:
        num_utterances: seeded random subset size (``None``: every utterance).
        crop_seconds: crop every file to its first ``crop_seconds`` (``None``: no crop).
        batch_seconds: most padded audio per encoder batch.
        max_frames: row cap for the ``frames`` pooling.
        seed: seeds the subset, the frame choice and anything else drawn; same seed, same
            numbers.
    """

    num_utterances: int | None = DEFAULT_NUM_UTTERANCES
    crop_seconds: float | None = None
    batch_seconds: float = DEFAULT_BATCH_SECONDS
    max_frames: int = DEFAULT_MAX_FRAMES
    seed: int = 0

    def __post_init__(self) -> None:
        n = self.num_utterances
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise SpeechrankError(
                f"num_utterances (--num-utterances, the monitor's max_utterances) must be "
                f"at least 1, got {n!r}")
        if self.crop_seconds is not None and not _positive(self.crop_seconds):
            raise SpeechrankError(f"--max-seconds must be a positive number, got "
                                  f"{self.crop_seconds!r}")
        if not _positive(self.batch_seconds):
            raise SpeechrankError(
                f"--batch-seconds must be a positive number, got {self.batch_seconds!r}")
        if (isinstance(self.max_frames, bool) or not isinstance(self.max_frames, int)
                or self.max_frames < 1):
            raise SpeechrankError(f"--max-frames must be an integer of at least 1, got "
                                  f"{self.max_frames!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            # numpy's generators take seeds of 0 and above
            raise SpeechrankError(f"seed must be an integer of at least 0, got {self.seed!r}")

    def replace(self, **changes: Any) -> RunOptions:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, base: RunOptions | None = None
                     ) -> RunOptions:
        """Options from a mapping such as a sweep's TOML table; ``max_seconds`` is accepted
        as the command line's name for ``crop_seconds``; other keys are ignored."""
        base = base or cls()
        changes: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name in values:
                changes[field.name] = values[field.name]
        if "max_seconds" in values and "crop_seconds" not in values:
            changes["crop_seconds"] = values["max_seconds"]
        return base.replace(**changes)


def _positive(value: Any) -> bool:
    """A finite number above zero (an infinite crop or batch is a mistake, not "no limit")."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def check_pooling(name: str) -> Pooling:
    """``name`` as a :data:`Pooling`, or a one-line error."""
    if name not in POOLINGS:
        raise SpeechrankError(f"unknown pooling '{name}'")
    return name  # type: ignore[return-value]


def resolve_options(options: RunOptions | None = None, *, defaults: RunOptions | None = None,
                    **overrides: Any) -> RunOptions:
    """``options`` (or ``defaults``, or :class:`RunOptions`'s own defaults) with keyword
    ``overrides`` by field name; ``max_seconds`` is the command line's name for
    ``crop_seconds``. Unknown names are a :class:`SpeechrankError`.

    Library verbs take ``options=RunOptions(...)`` and, for convenience, the same fields as
    keywords (``run_rank(model, data, num_utterances=200)``)."""
    base = options if options is not None else (defaults or RunOptions())
    if "max_seconds" in overrides:
        if "crop_seconds" in overrides:
            raise SpeechrankError("give crop_seconds or max_seconds, not both")
        overrides["crop_seconds"] = overrides.pop("max_seconds")
    names = {f.name for f in dataclasses.fields(RunOptions)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise SpeechrankError(f"unknown option(s) {', '.join(unknown)}; RunOptions has "
                              f"{', '.join(sorted(names))}")
    return base.replace(**overrides) if overrides else base
