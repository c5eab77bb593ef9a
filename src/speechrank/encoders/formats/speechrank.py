"""speechrank's own checkpoints: the ``checkpoint-<step:06d>/`` directories of
``speechrank pretrain`` (layout in :mod:`speechrank.encoders.bestrq_format`).

- marked by ``config.json`` whose ``model_type`` is ``speechrank-bestrq`` (claimed even when
  broken, so the user gets this format's error);
- complete when ``config.json``, ``model.safetensors`` and a readable ``trainer.json`` are
  all there (``pretrain`` renames a finished checkpoint into place, so a killed write leaves
  only ``.partial/``, which no listing reads);
- step: ``trainer.json`` ``step``, else the name;
- training record (``trainer.json``): ``loss`` (the mean training loss over the steps since
  the previous checkpoint; none at step 0), ``accuracy`` (masked-prediction accuracy over the
  same steps), ``learning_rate``;
- digest: ``config.json`` and ``model.safetensors`` (the resumable ``training_state.pt`` is
  not the model).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from speechrank.encoders.bestrq_format import (
    CONFIG_FILE,
    MODEL_FILE,
    MODEL_TYPE,
    TRAINER_FILE,
    read_checkpoint_config,
)
from speechrank.encoders.formats.base import (
    CheckpointFormat,
    read_json,
    step_from_name,
    training_from,
)
from speechrank.errors import SpeechrankError

_NAME = re.compile(r"^checkpoint-(\d{6,})$")


def parse_checkpoint_name(name: str) -> int | None:
    """The step of a ``checkpoint-000100`` directory name, or ``None`` for any other name."""
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def declares_bestrq(path: Path) -> bool:
    """True when ``path``'s ``config.json`` names the speechrank model type (weights not
    checked): the test for "this directory is ours", so a broken one gets our error."""
    config = read_json(Path(path) / CONFIG_FILE)
    return config is not None and config.get("model_type") == MODEL_TYPE


def is_bestrq_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a directory with a speechrank ``config.json`` of a format this
    version reads, and weights. Optimiser state is not required: only the newest checkpoint
    of a run keeps it."""
    directory = Path(path)
    if not (directory / MODEL_FILE).is_file():
        return False
    try:
        read_checkpoint_config(directory)
    except SpeechrankError:
        return False
    return True


class SpeechrankFormat(CheckpointFormat):
    name = "speechrank"
    description = "a checkpoint directory of `speechrank pretrain`"

    def claims(self, path: Path) -> bool:
        return path.is_dir() and declares_bestrq(path)

    def complete(self, path: Path) -> bool:
        return is_bestrq_checkpoint(path) and read_json(path / TRAINER_FILE) is not None

    def run_checkpoints(self, directory: Path) -> list[Path]:
        return [path for path in super().run_checkpoints(directory)
                if parse_checkpoint_name(path.name) is not None]

    def step(self, path: Path) -> int | None:
        trainer = read_json(path / TRAINER_FILE) or {}
        step = trainer.get("step")
        if isinstance(step, int) and not isinstance(step, bool):
            return step
        return parse_checkpoint_name(path.name) or step_from_name(path.name)

    def training(self, path: Path) -> dict[str, float]:
        return training_from(read_json(path / TRAINER_FILE) or {},
                             {"loss": "loss", "accuracy": "accuracy",
                              "learning_rate": "learning_rate"})

    def content_files(self, path: Path) -> list[Path]:
        return [file for file in (path / CONFIG_FILE, path / MODEL_FILE) if file.is_file()]

    def load(self, path: Path, *, device: Any, dtype: Any, normalize: bool | None,
             name: str) -> Any:
        import torch

        try:
            from speechrank.encoders import bestrq
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith("speechrank.encoders.bestrq"):
                raise SpeechrankError(
                    f"{path}: a speechrank checkpoint, but this install lacks the built-in "
                    "encoder (speechrank.encoders.bestrq)") from None
            raise
        if dtype not in (None, torch.float32):
            raise SpeechrankError(f"{path}: speechrank checkpoints load in float32 only")
        return bestrq.load_bestrq_checkpoint(path, device=device)


FORMAT = SpeechrankFormat()
