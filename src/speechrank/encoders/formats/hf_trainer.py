"""Hugging Face ``Trainer`` runs: ``checkpoint-<N>/`` directories with ``trainer_state.json``
beside the model files (``Trainer._save_checkpoint``).

- claimed: a Hugging Face model directory that also holds ``trainer_state.json``;
- complete: the model directory is complete and ``trainer_state.json`` reads (``Trainer``
  writes the state last);
- run: the ``checkpoint-<N>`` directories of the output directory;
- step: ``trainer_state.json`` ``global_step``, else the name;
- training record: the last logged ``loss`` and ``learning_rate`` of ``log_history`` at or
  before the step (the Trainer's ``loss`` is the mean over the steps since its previous log
  line); no accuracy (the Trainer keeps none);
- digest: as a model directory (the optimiser and scheduler files are not the model).
"""

from __future__ import annotations

import re
from pathlib import Path

from speechrank.encoders.formats.base import finite, read_json
from speechrank.encoders.formats.huggingface import HuggingFaceFormat

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


class HuggingFaceTrainerFormat(HuggingFaceFormat):
    """A model directory (loaded, digested and completed as one) with the Trainer's state."""

    name = "hf-trainer"
    description = "a checkpoint-N directory of a Hugging Face Trainer run"

    def claims(self, path: Path) -> bool:
        return super().claims(path) and (path / STATE_FILE).is_file()

    def complete(self, path: Path) -> bool:
        return super().complete(path) and read_json(path / STATE_FILE) is not None

    def run_checkpoints(self, directory: Path) -> list[Path]:
        return [path for path in super().run_checkpoints(directory) if _NAME.match(path.name)]

    def step(self, path: Path) -> int | None:
        state = read_json(path / STATE_FILE) or {}
        step = state.get("global_step")
        if isinstance(step, int) and not isinstance(step, bool):
            return step
        match = _NAME.match(path.name)
        return int(match.group(1)) if match else None

    def training(self, path: Path) -> dict[str, float]:
        step = self.step(path)
        history = (read_json(path / STATE_FILE) or {}).get("log_history")
        record: dict[str, float] = {}
        if step is None or not isinstance(history, list):
            return record
        for entry in history:
            at = entry.get("step") if isinstance(entry, dict) else None
            if not isinstance(at, int) or at > step:
                continue
            for key in ("loss", "learning_rate"):
                value = finite(entry.get(key))
                if value is not None:
                    record[key] = value
        return record


FORMAT = HuggingFaceTrainerFormat()
