"""What a dataset is made of: utterances with a path, labels and an optional split."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One audio file (or one region of it) with its labels.

    ``uid`` is unique within the dataset and stable across runs (a relative path, say).
    ``labels`` holds every label column (``keyword``, ``speaker``, ``emotion``, ``transcript``,
    ``phones`` ...). ``split`` is ``train``/``dev``/``test`` where the corpus defines it,
    else ``None``. ``start``/``end`` select a region in seconds (``None`` = whole file).
    """

    uid: str
    path: str
    labels: dict[str, Any] = dataclasses.field(default_factory=dict)
    split: str | None = None
    start: float | None = None
    end: float | None = None

    @property
    def speaker(self) -> str | None:
        value = self.labels.get("speaker")
        return None if value is None else str(value)


@dataclasses.dataclass
class Dataset:
    """A list of utterances plus where it came from.

    ``spec`` is what the user typed (``fsdd:../data``), ``format`` the layout
    (``directory``, ``manifest``, ``fsdd``, ...), ``info`` anything the JSON output should
    record about how labels and splits were derived.
    """

    spec: str
    format: str
    root: str
    utterances: list[Utterance]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.utterances)
