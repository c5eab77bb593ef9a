"""The one JSON sanitiser: any result payload as plain, strict JSON values.

Every JSON speechrank writes (``--json`` output, ``train_log.jsonl``, the store's conventions
and metadata) goes through :func:`plain`: tensors and numpy arrays become lists, numpy and
torch scalars Python numbers, tuples lists, sets sorted lists, paths strings, mapping keys
strings. Non-finite floats follow a named policy, because JSON has no NaN:

- ``"null"`` (output files and logs): NaN and infinities become ``null``;
- ``"string"`` (the results store): ``"nan"``, ``"inf"``, ``"-inf"``, so a stored convention
  keeps its value and its hash.

Anything else is turned into its ``str`` or, with ``strict=True``, refused with ``TypeError``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any, Literal

__all__ = ["NonFinite", "dumps", "plain"]

NonFinite = Literal["null", "string"]


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)  # what json itself does with such keys
    return str(key)


def _non_finite(value: float, policy: NonFinite) -> Any:
    if policy == "null":
        return None
    return "nan" if value != value else ("inf" if value > 0 else "-inf")


def plain(value: Any, *, non_finite: NonFinite = "null", strict: bool = False) -> Any:
    """``value`` as plain JSON values (see the module docstring)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else _non_finite(value, non_finite)
    if isinstance(value, Mapping):
        return {_key(k): plain(v, non_finite=non_finite, strict=strict)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, non_finite=non_finite, strict=strict) for v in value]
    if isinstance(value, (set, frozenset)):
        return [plain(v, non_finite=non_finite, strict=strict)
                for v in sorted(value, key=repr)]
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "tolist"):  # numpy and torch arrays and scalars
        return plain(value.tolist(), non_finite=non_finite, strict=strict)
    if strict:
        raise TypeError(f"cannot write a {type(value).__name__} as JSON")
    return str(value)


def dumps(value: Any, *, non_finite: NonFinite = "null", strict: bool = False,
          **json_options: Any) -> str:
    """Strict JSON text of :func:`plain` ``(value)``; ``json_options`` go to ``json.dumps``."""
    return json.dumps(plain(value, non_finite=non_finite, strict=strict), allow_nan=False,
                      **json_options)
