"""What a training run reports: the JSONL log, running windows of step statistics, the bar."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from speechrank import jsonsafe
from speechrank.pretrain.objective import MaskedPrediction
from speechrank.progress import ProgressArg, as_progress

__all__ = ["ProgressBar", "RunLog", "Window", "json_safe"]


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON; NaN/inf become None (:func:`speechrank.jsonsafe.plain`)."""
    return jsonsafe.plain(value, non_finite="null")


class RunLog:
    """Append-only JSONL log (one flushed line per event)."""

    def __init__(self, path: Path, keep_until_step: int | None) -> None:
        self.path = path
        if keep_until_step is None:
            path.write_text("")
        else:  # resuming: drop what the interrupted session logged after its checkpoint
            kept = []
            if path.exists():
                for line in path.read_text().splitlines():
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(record, dict) and record.get("step", 0) <= keep_until_step:
                        kept.append(line)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)
        self._file = path.open("a")

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Window:
    """Running sums over a stretch of steps (a log interval or a checkpoint interval)."""

    def __init__(self) -> None:
        self.steps = 0
        self.loss = 0.0
        self.correct = 0
        self.masked = 0
        self.audio_samples = 0
        self.seconds = 0.0
        self.grad_norm = 0.0
        self.target_counts: np.ndarray | None = None

    def add(self, result: MaskedPrediction, loss: float, audio_samples: int, seconds: float,
            grad_norm: float) -> None:
        self.steps += 1
        self.loss += loss
        self.correct += result.correct
        self.masked += result.masked_frames
        self.audio_samples += audio_samples
        self.seconds += seconds
        self.grad_norm += grad_norm
        if self.target_counts is None:
            self.target_counts = result.target_counts.copy()
        else:
            self.target_counts += result.target_counts

    @property
    def mean_loss(self) -> float | None:
        return self.loss / self.steps if self.steps else None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.masked if self.masked else None

    @property
    def majority_accuracy(self) -> float | None:
        """Accuracy of always predicting the window's most frequent target: what the masked
        prediction must beat to have learnt more than the code frequencies."""
        if self.target_counts is None or not self.masked:
            return None
        return float(self.target_counts.max()) / self.masked

    @property
    def target_perplexity(self) -> float | None:
        """exp(entropy) of the target codes: how many codes the quantiser effectively uses."""
        if self.target_counts is None or not self.masked:
            return None
        p = self.target_counts[self.target_counts > 0] / self.masked
        return float(np.exp(-(p * np.log(p)).sum()))


class ProgressBar:
    """Training progress through the :class:`~speechrank.progress.Progress` protocol: stage
    ``train`` over steps (``steps`` budget) or seconds (``minutes`` budget)."""

    def __init__(self, progress: ProgressArg, total_steps: int | None,
                 total_seconds: float | None, start_step: int) -> None:
        self.progress = as_progress(progress)
        self.by_steps = total_steps is not None
        self.total = total_steps if self.by_steps else total_seconds
        self.position = float(start_step) if self.by_steps else 0.0

    @staticmethod
    @contextlib.contextmanager
    def counter(progress: ProgressArg, label: str,
                total: int) -> Iterator[Callable[[int, int], None]]:
        """A counting stage (``label``, done of total) for a setup phase; yields the
        ``on_progress(done, total)`` callback."""
        report = as_progress(progress)
        report.start(label, total, "items")
        seen = [0]

        def advance(done: int, _total: int) -> None:
            report.advance(label, done - seen[0])
            seen[0] = done

        try:
            yield advance
        finally:
            report.end(label)

    def __enter__(self) -> ProgressBar:
        self.progress.start("train", self.total, "steps" if self.by_steps else "s")
        if self.position:
            self.progress.advance("train", self.position)
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.end("train")

    def update(self, step: int, seconds: float, loss: float | None, accuracy: float | None,
               steps_per_second: float | None) -> None:
        text = f"step {step}"
        if loss is not None:
            text += f"  loss {loss:.3f}"
        if accuracy is not None:
            text += f"  acc {accuracy:.3f}"
        if steps_per_second:
            text += f"  {steps_per_second:.2f} step/s"
        position = float(step) if self.by_steps else seconds
        self.progress.advance("train", position - self.position, note=text)
        self.position = position
