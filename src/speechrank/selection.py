"""Choosing layers and named variants from user text (``--layers``, ``--pooling``,
``--metrics``), shared by ``rank``, ``probe``, ``sweep`` and the training monitor.

Layer names follow docs/design.md, "Rows and layer names": ``"0"`` is the input of the first
transformer layer (Hugging Face ``hidden_states[0]``), ``"i"`` the output of layer ``i``,
``cnn`` the convolutional feature encoder's output where an encoder offers it.
"""

from __future__ import annotations

from collections.abc import Sequence

from speechrank.errors import SpeechrankError

__all__ = ["parse_choices", "parse_layers"]


def parse_layers(spec: str | Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Turn ``"all"``, ``"0,3,6"``, ``"0-4"``, ``"cnn,12"`` or a list into layer names.

    ``None`` and ``"all"`` mean every numbered layer (``cnn`` only when asked for by name).
    """
    numbered = [name for name in available if name != "cnn"]
    if spec is None:
        return numbered
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    chosen: list[str] = []
    for raw in (str(item).strip() for item in items):
        if not raw:
            continue
        if raw == "all":
            names = numbered
        elif raw == "cnn" or raw in available:
            names = [raw]
        elif "-" in raw.lstrip("-") and raw[0] != "-":
            lo, hi = raw.split("-", 1)
            try:
                names = [str(i) for i in range(int(lo), int(hi) + 1)]
            except ValueError as err:
                raise SpeechrankError(f"bad layer range '{raw}'") from err
        else:
            try:
                index = int(raw)
            except ValueError as err:
                raise SpeechrankError(
                    f"unknown layer '{raw}'; this encoder has {', '.join(available)}") from err
            names = [str(index if index >= 0 else len(numbered) + index)]
        for name in names:
            if name not in available:
                raise SpeechrankError(
                    f"unknown layer '{name}'; this encoder has {', '.join(available)}")
            if name not in chosen:
                chosen.append(name)
    if not chosen:
        raise SpeechrankError("no layers selected")
    return chosen


def parse_choices(spec: str | Sequence[str] | None, allowed: Sequence[str], what: str,
                  default: Sequence[str]) -> list[str]:
    """Split a comma list and check every item is one of ``allowed``."""
    if spec is None:
        return list(default)
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    items = [s for s in items if s]
    if items == ["all"]:
        return list(allowed)
    for item in items:
        if item not in allowed:
            raise SpeechrankError(f"unknown {what} '{item}'; choose from {', '.join(allowed)}")
    if not items:
        raise SpeechrankError(f"no {what} given")
    return list(dict.fromkeys(items))
