"""What a label-free measurement measures: one spec for ``rank``, the sweep and the monitor.

A :class:`MeasureSpec` names everything that decides a measurement's numbers apart from the
model and the data: the metrics, poolings and layers, the subset and frame caps, the crop, the
batch size, the seed, a published protocol, the cluster metrics' k and row cap, and whether
the convergence and dominance records are attached. ``speechrank rank`` builds one from its
flags, a sweep from its ``[rank]`` and ``[options]`` tables, the training monitor from its
caller (:meth:`MeasureSpec.for_monitor`), and a protocol maps one spec to another
(:mod:`speechrank.protocols`); :func:`speechrank.rank.run_rank` and
:class:`speechrank.monitor.RankMonitor` take it. The defaults written here (and the constants
of :mod:`speechrank.options` they use) are the only copy.

Every field is checked when a spec is built, by the type its annotation declares (pydantic,
strict: ``"5"`` is not a count, ``True`` is not a number, an infinite crop is a mistake), so a
wrong value is one :class:`~speechrank.errors.SpeechrankError` line naming the field, the value
and what is allowed (docs/design.md, "Configuration").
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BeforeValidator, Field

from speechrank.errors import SpeechrankError
from speechrank.metrics.registry import LAYER_METRIC_NAMES
from speechrank.options import (
    DEFAULT_BATCH_SECONDS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_MONITOR_UTTERANCES,
    DEFAULT_N_CLUSTERS,
    DEFAULT_NUM_UTTERANCES,
    POOLINGS,
    Pooling,
)
from speechrank.validation import describe_error

__all__ = ["DEFAULT_SPEC", "MONITOR_SPEC", "MeasureSpec", "ProtocolName"]

#: The published protocols by name (their presets are in :mod:`speechrank.protocols`).
ProtocolName = Literal["aldeneh2025", "whetten2025"]
#: A metric measured per layer: the Gram metrics and the metrics of stored rows.
MetricName = Literal[LAYER_METRIC_NAMES]  # type: ignore[valid-type]


def _names(value: Any, allowed: tuple[str, ...]) -> Any:
    """A comma list or a sequence as a tuple without repeats; ``"all"`` is every name."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        items = [item.strip() if isinstance(item, str) else item for item in value]
        if items == ["all"]:
            return allowed
        return tuple(dict.fromkeys(items))
    return value


def _metric_names(value: Any) -> Any:
    return _names(value, LAYER_METRIC_NAMES)


def _pooling_names(value: Any) -> Any:
    return _names(value, POOLINGS)


def _layers(value: Any) -> Any:
    """A layer spec as given (``"0,3-6"``, ``"all"``) or a sequence of names as a tuple of
    strings (``[0, 3]`` is ``("0", "3")``); resolved against the encoder's layers later."""
    if isinstance(value, (list, tuple)):
        return tuple(str(item) if isinstance(item, int) and not isinstance(item, bool)
                     else item for item in value)
    return value


Count = Annotated[int, Field(ge=1)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Poolings = Annotated[tuple[Pooling, ...], Field(min_length=1)]
Metrics = Annotated[tuple[MetricName, ...], Field(min_length=1)]
Layers = Annotated[str, Field(min_length=1)] | Annotated[tuple[str, ...], Field(min_length=1)]

#: How the command line spells a field whose name differs (for the error line).
_FLAGS = {"crop_seconds": "--max-seconds", "poolings": "--pooling"}


@dataclasses.dataclass(frozen=True)
class MeasureSpec:
    """What a label-free measurement measures (a constructor that checks and stores).

    Attributes:
        metrics: per-layer metric names, a comma list, or ``"all"`` (``None``: every Gram
            metric of :data:`speechrank.metrics.METRICS`); the metrics of stored rows
            (``kmeans_inertia``, ``davies_bouldin``) opt in and need the ``frames`` pooling.
        poolings: any of ``sum`` (RankMe-t), ``mean``, ``frames`` (``None``: all three).
        layers: layer names or a spec such as ``"0,3-6"`` (``None``: every numbered layer).
        num_utterances: seeded random subset size (``None``: every utterance).
        total_seconds: a seeded draw of whole utterances up to this much audio (``None``: no
            budget); ``rank`` draws until it is reached, the monitor keeps at most this much.
        crop_seconds: crop every file to its first ``crop_seconds`` (``--max-seconds``).
        max_frames: row cap of the ``frames`` pooling (``None``: every valid frame, the
            command line's ``--uncapped-frames``).
        batch_seconds: most padded audio per encoder batch.
        seed: seeds the subset, the frame choice, the prefixes and the clusters.
        strict: fail on the first unusable file instead of skipping it.
        protocol: a published preset (:mod:`speechrank.protocols`); it fills the fields left
            at their defaults when the measurement starts, and is recorded.
        n_clusters: k of the cluster metrics (lowered, and recorded, when rows are few).
        cluster_max_rows: most frames the cluster metrics see per layer (``None``: the
            ``frames`` row cap); past it, a seeded selection.
        convergence: give every Gram row its values at nested seeded prefixes N/8, N/4, N/2.
        dominance: give every RankMe row the share of its first direction.
    """

    metrics: Annotated[Metrics | None, BeforeValidator(_metric_names)] = None
    poolings: Annotated[Poolings | None, BeforeValidator(_pooling_names)] = None
    layers: Annotated[Layers | None, BeforeValidator(_layers)] = None
    num_utterances: Count | None = DEFAULT_NUM_UTTERANCES
    total_seconds: Positive | None = None
    crop_seconds: Positive | None = None
    max_frames: Count | None = DEFAULT_MAX_FRAMES
    batch_seconds: Positive = DEFAULT_BATCH_SECONDS
    seed: Annotated[int, Field(ge=0)] = 0
    strict: bool = False
    protocol: ProtocolName | None = None
    n_clusters: Annotated[int, Field(ge=2)] = DEFAULT_N_CLUSTERS
    cluster_max_rows: Count | None = None
    convergence: bool = True
    dominance: bool = True

    def __post_init__(self) -> None:
        adapters = _adapters()
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            try:
                checked = adapters[field.name].validate_python(value)
            except pydantic.ValidationError as err:
                error = err.errors(include_url=False)[0]
                name = field.name + (f" ({_FLAGS[field.name]})" if field.name in _FLAGS else "")
                # the field alone: the inner places of a union or a list name types, not keys
                error = {**error, "loc": (name,)}
                raise SpeechrankError(describe_error(error, "measurement option")) from None
            object.__setattr__(self, field.name, checked)

    def replace(self, **changes: Any) -> MeasureSpec:
        """A copy with ``changes`` (checked again); an unknown name is one error line."""
        names = {field.name for field in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise SpeechrankError(f"unknown measurement option(s) {', '.join(unknown)}; "
                                  f"choose from {', '.join(sorted(names))}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def for_monitor(cls, **changes: Any) -> MeasureSpec:
        """The training monitor's defaults (:data:`MONITOR_SPEC`) with ``changes``."""
        return MONITOR_SPEC.replace(**changes)


@functools.cache
def _adapters() -> dict[str, pydantic.TypeAdapter[Any]]:
    """One strict validator per field, from the field's annotation."""
    hints = typing.get_type_hints(MeasureSpec, include_extras=True)
    config = pydantic.ConfigDict(strict=True)
    return {field.name: pydantic.TypeAdapter(hints[field.name], config=config)
            for field in dataclasses.fields(MeasureSpec)}


#: ``speechrank rank``'s defaults.
DEFAULT_SPEC = MeasureSpec()
#: The training monitor's defaults: RankMe-t alone on a smaller held-out subset, without the
#: convergence record (it costs up to half again the Gram work at every check).
MONITOR_SPEC = MeasureSpec(metrics=("rankme",), poolings=("sum",),
                           num_utterances=DEFAULT_MONITOR_UTTERANCES, convergence=False)
