"""A Lightning run's training record: the ``metrics.csv`` of Lightning's ``CSVLogger``, read
without Lightning.

``CSVLogger`` writes ``<save_dir>/<name>/version_<N>/metrics.csv`` (``name`` defaults to
``lightning_logs``): one row per logging call with an ``epoch`` and a ``step`` column (the
optimizer steps taken before the batch, so a value logged at step S was computed with the
weights a checkpoint of ``global_step`` S holds) and one column per logged name, empty where a
row does not log it. A metric logged with ``on_step=True, on_epoch=True`` gets two columns,
``<name>_step`` and ``<name>_epoch``; torchaudio's HuBERT recipe
(``examples/hubert/lightning_modules.py``) logs ``train_loss`` (divided by the masked frames)
and ``train_masked_accuracy`` that way. TensorBoard event files (Lightning's default logger when
tensorboard is installed) are not read.

The record at a checkpoint is, for each quantity, the value logged at the greatest step at or
before the checkpoint's (per-step columns only: an epoch aggregate is no value at a step),
across every ``version_N`` log of the run; where two logs have the same step (a resumed run
logs again from its resume step) the later version wins.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from pathlib import Path

METRICS_FILE = "metrics.csv"

#: Record key -> columns to read, in order of preference.
COLUMNS: dict[str, tuple[str, ...]] = {
    "loss": ("train_loss_step", "train_loss", "loss_step", "loss", "Loss"),
    "accuracy": ("train_masked_accuracy_step", "train_masked_accuracy"),
}
#: ``LearningRateMonitor`` names its columns ``lr-<Optimizer>`` (``lr-AdamW``).
_LR_COLUMN = re.compile(r"^lr-[\w.-]+$")
_VERSION = re.compile(r"^version_(\d+)$")

Row = dict[str, float]


def _versions(directory: Path) -> list[Path]:
    """``metrics.csv`` of ``directory`` itself, else of its ``version_N`` directories and its
    loggers' (``*/version_N``), by version number."""
    own = directory / METRICS_FILE
    if own.is_file():
        return [own]
    found: list[tuple[int, str, Path]] = []
    for pattern in ("version_*", "*/version_*"):
        for version in directory.glob(pattern):
            match = _VERSION.match(version.name)
            if match and (version / METRICS_FILE).is_file():
                found.append((int(match.group(1)), str(version), version / METRICS_FILE))
    return [path for _n, _s, path in sorted(found)]


def find_metrics(checkpoint: Path, *, levels: int = 3) -> list[Path]:
    """The ``metrics.csv`` files of the run ``checkpoint`` belongs to: the nearest of its
    directory and the ``levels - 1`` above it that holds any (``version_N/checkpoints/x.ckpt``
    finds ``version_N/metrics.csv``; ``exp/checkpoints_x/x.ckpt`` finds
    ``exp/lightning_logs/version_*/metrics.csv``)."""
    directory = checkpoint.parent if checkpoint.is_file() else checkpoint
    for _ in range(levels):
        files = _versions(directory)
        if files:
            return files
        if directory.parent == directory:
            break
        directory = directory.parent
    return []


def _number(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_metrics(files: Sequence[Path]) -> list[Row]:
    """Every row with a ``step`` of ``files`` (in order), as ``{column: finite value}``."""
    rows: list[Row] = []
    for file in files:
        try:
            with file.open(newline="", encoding="utf-8") as handle:
                for raw in csv.DictReader(handle):
                    step = _number(raw.get("step"))
                    if step is None:
                        continue
                    row = {key: value for key, value in
                           ((k, _number(v)) for k, v in raw.items() if isinstance(k, str))
                           if value is not None}
                    rows.append(row)
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
    return rows


def record_at(rows: Sequence[Row], step: int) -> dict[str, float]:
    """``loss``, ``accuracy`` and ``learning_rate``: each the value logged at the greatest step
    at or before ``step`` (the later row at equal steps), from the first column of
    :data:`COLUMNS` the log has; absent when never logged."""
    columns = {key for row in rows for key in row}
    chosen = {record: next((c for c in options if c in columns), None)
              for record, options in COLUMNS.items()}
    chosen["learning_rate"] = next((c for c in sorted(columns) if _LR_COLUMN.match(c)), None)
    best: dict[str, tuple[float, float]] = {}  # record key -> (step logged at, value)
    for row in rows:  # the greatest step wins; at one step, the later row (a resumed log)
        if row["step"] > step:
            continue
        for key, column in chosen.items():
            if column is not None and column in row and row["step"] >= best.get(
                    key, (-math.inf, 0.0))[0]:
                best[key] = (row["step"], row[column])
    return {key: value for key, (_at, value) in best.items()}
