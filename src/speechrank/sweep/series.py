"""The checkpoint series of a sweep: which models, in which training order, under which run.

A series is a directory of checkpoint directories (those of ``speechrank pretrain``, or Hugging
Face model directories such as ``checkpoint-500``), a single model directory, or a text file
listing one model per line.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path

from speechrank.errors import SpeechrankError
from speechrank.store import CheckpointRecord


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One model of the series: where it is, its name and its training step."""

    path: str
    name: str
    step: int | None


_STEP_IN_NAME = re.compile(r"(\d+)(?!.*\d)")


def _checkpoint_step(path: Path) -> int | None:
    """The training step of a checkpoint directory, from its own files or its name."""
    for name, key in (("trainer.json", "step"), ("trainer_state.json", "global_step")):
        file = path / name
        if file.is_file():
            try:
                value = json.loads(file.read_text(encoding="utf-8")).get(key)
            except (OSError, json.JSONDecodeError):
                value = None
            if isinstance(value, int):
                return value
    match = _STEP_IN_NAME.search(path.name)
    return int(match.group(1)) if match else None


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def find_checkpoints(spec: str | Path) -> list[Checkpoint]:
    """The checkpoints of a series, ordered by training step.

    ``spec`` is a directory of checkpoint directories (those of ``speechrank pretrain``, or
    Hugging Face model directories such as ``checkpoint-500``), a single model directory, or a
    text file listing one model per line (``PATH`` or ``PATH STEP``; ``#`` starts a comment;
    a ``random:NAME`` spec is allowed and counts as step 0 unless a step is given).
    """
    path = Path(spec)
    found: list[Checkpoint] = []
    if path.is_file():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) > 2:
                raise SpeechrankError(f"{path}:{lineno}: expected 'PATH [STEP]'")
            target = parts[0]
            step: int | None
            if len(parts) == 2:
                try:
                    step = int(parts[1])
                except ValueError as err:
                    raise SpeechrankError(f"{path}:{lineno}: step must be an integer") from err
            else:
                step = 0 if target.startswith("random:") else None
            if not target.startswith("random:"):
                resolved = Path(target) if Path(target).is_absolute() else path.parent / target
                if not resolved.is_dir():
                    raise SpeechrankError(f"{path}:{lineno}: no model directory {resolved}")
                if step is None:
                    step = _checkpoint_step(resolved)
                target = str(resolved)
            found.append(Checkpoint(path=target, name=Path(target).name or target, step=step))
    elif path.is_dir():
        if _is_model_dir(path):
            found.append(Checkpoint(str(path), path.name, _checkpoint_step(path)))
        else:
            # Hidden directories hold unfinished work (pretrain writes into .partial/).
            for child in sorted(p for p in path.iterdir()
                                if p.is_dir() and not p.name.startswith(".")):
                if _is_model_dir(child):
                    found.append(Checkpoint(str(child), child.name, _checkpoint_step(child)))
    else:
        raise SpeechrankError(f"checkpoints not found: {spec}")
    if not found:
        raise SpeechrankError(f"no checkpoints in {spec} (expected directories with config.json)")
    return sorted(found, key=lambda c: (c.step is None, c.step or 0, c.name))


def run_name(checkpoints: Sequence[Checkpoint], spec: str | Path) -> str:
    """The run a series belongs to: the directory holding the checkpoints."""
    path = Path(spec)
    if path.is_dir() and not _is_model_dir(path):
        return path.resolve().name
    return Path(checkpoints[0].path).resolve().parent.name if checkpoints else str(spec)


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def _training_record(path: Path, step: int | None) -> tuple[str, dict[str, float]]:
    """The format name and training record (loss, accuracy, learning rate) of a checkpoint."""
    trainer = path / "trainer.json"
    if trainer.is_file():
        try:
            payload = json.loads(trainer.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            payload = {}
        record = {key: _finite(payload.get(key)) for key in ("loss", "accuracy",
                                                              "learning_rate")}
        return "speechrank", {k: v for k, v in record.items() if v is not None}
    state = path / "trainer_state.json"
    if state.is_file():
        try:
            history = json.loads(state.read_text(encoding="utf-8")).get("log_history", [])
        except (OSError, json.JSONDecodeError, AttributeError):
            history = []
        record: dict[str, float] = {}
        for entry in history if isinstance(history, list) else []:
            if not isinstance(entry, dict) or step is None:
                continue
            at = entry.get("step")
            if isinstance(at, int) and at <= step:
                for key in ("loss", "learning_rate"):
                    value = _finite(entry.get(key))
                    if value is not None:
                        record[key] = value
        return "hf-trainer", record
    return ("random" if str(path).startswith("random:") else "huggingface"), {}


@dataclasses.dataclass(frozen=True)
class CheckpointSeries:
    """The checkpoints of one run, in training order, under the run's name in the store."""

    run: str
    checkpoints: tuple[Checkpoint, ...]

    def records(self) -> list[CheckpointRecord]:
        """What the store records of each checkpoint (path, format, step, training record)."""
        records = []
        for checkpoint in self.checkpoints:
            fmt, training = _training_record(Path(checkpoint.path), checkpoint.step)
            path = (checkpoint.path if checkpoint.path.startswith("random:")
                    else str(Path(checkpoint.path).resolve()))
            records.append(CheckpointRecord(run=self.run, checkpoint=checkpoint.name,
                                            path=path, format=fmt, step=checkpoint.step,
                                            training=training))
        return records


def find_series(spec: str | Path) -> CheckpointSeries:
    """The checkpoints of ``spec`` (see :func:`find_checkpoints`) and the run they belong to."""
    checkpoints = find_checkpoints(spec)
    return CheckpointSeries(run=run_name(checkpoints, spec), checkpoints=tuple(checkpoints))
