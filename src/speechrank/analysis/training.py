"""What a training run says for free about each checkpoint: its step and its training record.

A label-free metric earns its cost only where it says more than the signals every training
run already has: how far training has gone (the step) and the pretraining objective (the
loss, the masked-prediction accuracy). These come from the store's checkpoint records
(:meth:`speechrank.store.ResultStore.checkpoints`), matched to result rows by
``(row.model, row.checkpoint) == (record.run, record.checkpoint)``. A store without records
(written before they existed) still has each row's ``step``; its loss is then unknown.

speechrank's own checkpoints record the loss as the mean over the steps since the previous
checkpoint, so the first checkpoint (step 0) has none: a checkpoint without a loss simply does
not take part in anything computed from the loss.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from speechrank.results import ResultRow

__all__ = ["SIGNALS", "CheckpointSignals", "checkpoint_signals"]

#: The free training signals and their orientation (+1: larger is better): a later step, a
#: lower loss and a higher masked-prediction accuracy are what a user reads as "better".
SIGNALS: Mapping[str, int] = {"step": 1, "loss": -1, "train_accuracy": 1}


@dataclasses.dataclass(frozen=True)
class CheckpointSignals:
    """The free signals of one checkpoint (``None`` where unknown)."""

    run: str
    checkpoint: str
    step: int | None
    loss: float | None = None
    train_accuracy: float | None = None
    learning_rate: float | None = None
    recorded: bool = False  # whether the store has a checkpoint record for it

    def value(self, signal: str) -> float | None:
        """The signal's raw value (``step``, ``loss`` or ``train_accuracy``)."""
        value = getattr(self, signal)
        return None if value is None else float(value)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def checkpoint_signals(rows: Iterable[ResultRow], records: Sequence[Any] = ()
                       ) -> dict[tuple[str, str], CheckpointSignals]:
    """The signals of every (model, checkpoint) that has rows.

    The step is the record's where it has one, else the rows' ``step`` column; the loss,
    masked-prediction accuracy and learning rate come from the record's ``training`` dict.
    ``records`` are :class:`~speechrank.store.CheckpointRecord` objects (or anything with
    ``run``, ``checkpoint``, ``step`` and ``training``).
    """
    by_key = {(str(r.run), str(r.checkpoint)): r for r in records}
    steps: dict[tuple[str, str], int | None] = {}
    for row in rows:
        key = (row.model, row.checkpoint)
        if steps.get(key) is None:
            steps[key] = row.step
    out: dict[tuple[str, str], CheckpointSignals] = {}
    for key, row_step in steps.items():
        record = by_key.get(key)
        if record is None:
            out[key] = CheckpointSignals(key[0], key[1], row_step)
            continue
        training = dict(getattr(record, "training", None) or {})
        step = record.step if record.step is not None else row_step
        out[key] = CheckpointSignals(
            key[0], key[1], None if step is None else int(step),
            loss=_finite(training.get("loss")),
            train_accuracy=_finite(training.get("accuracy")),
            learning_rate=_finite(training.get("learning_rate")), recorded=True)
    return out
