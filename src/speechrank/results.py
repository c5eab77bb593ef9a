"""The tidy result row every part of speechrank produces (docs/design.md, "Rows and layer names").

One row is one number: a metric or probe score of one layer of one checkpoint on one dataset,
together with the conventions that produced it. ``rank``, ``probe``, ``sweep``, the store,
``correlate`` and the report all speak in these rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from speechrank import jsonsafe


@dataclasses.dataclass(frozen=True)
class ResultRow:
    """One measured value.

    ``layer`` is a string: ``"0"`` .. ``"L"`` following Hugging Face numbering (``"0"`` is the
    input of the first transformer layer) or ``"cnn"`` for the feature-extractor output.
    ``pooling`` is ``sum``, ``mean`` or ``frames`` for label-free metrics and the probe's pooling
    for probes. ``task`` and ``split`` are empty for label-free metrics. ``conventions`` holds
    everything else that produced the value (eps, centring, fit range, delta, seed, ...).
    """

    model: str
    checkpoint: str
    step: int | None
    dataset: str
    layer: str
    pooling: str
    metric: str
    value: float
    n_rows: int
    dim: int
    task: str = ""
    split: str = ""
    domain: str = ""
    conventions: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``NaN`` stays a float; the JSON writer maps it to ``null``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRow:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def layer_sort_key(layer: str) -> tuple[int, int]:
    """Order layers as ``cnn, 0, 1, 2, ...``; unknown names sort last."""
    if layer == "cnn":
        return (0, -1)
    try:
        return (1, int(layer))
    except ValueError:
        return (2, 0)


def dumps_json(payload: dict[str, Any]) -> str:
    """Strict JSON (NaN and infinities become ``null``), stable key order, indented."""
    return jsonsafe.dumps(payload, non_finite="null", indent=2)
