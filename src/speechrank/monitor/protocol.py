"""A published protocol for the training monitor: ``RankMonitor(..., protocol="whetten2025")``.

:mod:`speechrank.protocols` names its presets in ``rank``'s options; the monitor calls some of
them differently (``max_utterances`` is ``rank``'s ``num_utterances``, ``max_audio_seconds``
its ``total_seconds``). :func:`apply_protocol` translates, lets
:func:`speechrank.protocols.resolve` fill every option the caller left at the monitor's
default (explicit ones win) and returns the record of what was filled and overridden.

One difference from ``rank`` is kept and documented rather than hidden: the monitor's
``max_audio_seconds`` takes a seeded choice of whole utterances of *at most* that much audio
(the held-out rule of :mod:`speechrank.monitor.heldout`), where ``rank --total-seconds`` draws
until the budget is reached, so a monitor's "one hour" may fall short of 3,600 s by less than
one utterance. The audio actually used is recorded (``describe()["heldout"]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from speechrank.protocols import get_protocol, resolve

__all__ = ["MONITOR_OPTION_NAMES", "apply_protocol"]

#: ``RankMonitor`` argument -> the protocol option (``rank``'s name) it takes.
MONITOR_OPTION_NAMES: Mapping[str, str] = {
    "layers": "layers", "poolings": "poolings", "metrics": "metrics",
    "max_utterances": "num_utterances", "max_audio_seconds": "total_seconds",
    "max_frames": "max_frames", "n_clusters": "n_clusters",
    "cluster_max_rows": "cluster_max_rows",
}

#: Options given as a comma list or a sequence: compared as lists.
_LISTS = ("poolings", "metrics")


def _normal(name: str, value: Any) -> Any:
    """``value`` in the form the protocol presets use, so equal choices compare equal
    (``"sum,frames"``, ``("sum", "frames")`` and ``["sum", "frames"]`` are one choice)."""
    if name in _LISTS and value is not None:
        items = value.split(",") if isinstance(value, str) else list(value)
        return [str(item).strip() for item in items if str(item).strip()]
    if name == "layers" and isinstance(value, Sequence) and not isinstance(value, str):
        return [str(item) for item in value]
    return value


def apply_protocol(name: str, given: Mapping[str, Any], defaults: Mapping[str, Any]
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The monitor's options under protocol ``name``.

    Args:
        name: a preset of :data:`speechrank.protocols.PROTOCOLS`.
        given: the values the monitor was called with, by ``RankMonitor`` argument name
            (every key of :data:`MONITOR_OPTION_NAMES`).
        defaults: the monitor's defaults for the same arguments; a value equal to its default
            counts as not given (as ``rank`` decides it), so the protocol fills it.

    Returns:
        ``(options, record)``: every argument of ``given`` with the protocol's value where the
        caller left the default, and :func:`speechrank.protocols.resolve`'s record (option
        names as ``rank`` spells them) plus ``"monitor_names"``, the translation.
    """
    protocol = get_protocol(name)
    unmapped = sorted(set(protocol.options) - set(MONITOR_OPTION_NAMES.values()))
    if unmapped:  # a new preset option needs a monitor counterpart before it can be honoured
        raise AssertionError(f"protocol {name} sets {unmapped}, which RankMonitor lacks")
    explicit = {MONITOR_OPTION_NAMES[key]: _normal(key, value) for key, value in given.items()
                if _normal(key, value) != _normal(key, defaults[key])}
    options, record = resolve(name, explicit)
    out = {key: options.get(MONITOR_OPTION_NAMES[key], value) for key, value in given.items()}
    record["monitor_names"] = {rank_name: key for key, rank_name in MONITOR_OPTION_NAMES.items()
                               if rank_name != key}
    return out, record
