"""The on-disk format of a BEST-RQ checkpoint directory, in one place.

``speechrank pretrain`` writes it (:mod:`speechrank.pretrain.checkpoint` adds the atomic
rename and the resumable training state), the registry's ``speechrank`` format
(:mod:`speechrank.encoders.formats.speechrank`) recognises it and
:func:`speechrank.encoders.bestrq.load_bestrq_checkpoint` reads it. A run directory
holds ``checkpoint-<step:06d>/`` directories, each with:

- ``config.json``: ``model_type`` = :data:`MODEL_TYPE` (what marks the directory as ours),
  ``format_version``, ``speechrank_version``, the model configuration under ``"model"`` and
  the training recipe under ``"pretraining"``; written last;
- ``model.safetensors``: the encoder's tensors under :data:`ENCODER_PREFIX` plus the
  pretraining head and quantiser under other prefixes (ignored by the loader);
- ``trainer.json``: step, loss, accuracy, elapsed seconds, seed, data fingerprint, ...;
- ``training_state.pt`` (:data:`TRAINING_STATE_FILE`, newest checkpoint only by default):
  optimiser, scheduler and random-number state for ``--resume``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from speechrank.errors import SpeechrankError

__all__ = [
    "CONFIG_FILE",
    "ENCODER_PREFIX",
    "FORMAT_VERSION",
    "MODEL_FILE",
    "MODEL_TYPE",
    "TRAINER_FILE",
    "TRAINING_STATE_FILE",
    "checkpoint_name",
    "read_checkpoint_config",
    "read_trainer",
    "write_model_files",
]

#: ``model_type`` in ``config.json`` that marks a speechrank BEST-RQ checkpoint.
MODEL_TYPE = "speechrank-bestrq"
#: Version of the checkpoint layout; bumped when files or keys change incompatibly.
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
TRAINER_FILE = "trainer.json"
TRAINING_STATE_FILE = "training_state.pt"
#: Prefix of the encoder's tensors in ``model.safetensors``.
ENCODER_PREFIX = "encoder."

def checkpoint_name(step: int) -> str:
    """``checkpoint-000100`` for step 100."""
    return f"checkpoint-{step:06d}"


def write_model_files(directory: str | os.PathLike[str], config: Any,
                      tensors: Mapping[str, torch.Tensor],
                      extra_config: Mapping[str, Any] | None = None) -> None:
    """Write ``model.safetensors`` then ``config.json`` into an existing ``directory``.

    ``config`` is the model configuration (a mapping, or an object with ``to_dict()`` such as
    :class:`~speechrank.encoders.bestrq.BestRqConfig`); ``tensors`` must hold the encoder's
    state under :data:`ENCODER_PREFIX`.
    """
    from safetensors.torch import save_file

    from speechrank import __version__

    directory = Path(directory)
    model = dict(config) if isinstance(config, Mapping) else config.to_dict()
    payload = {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION,
               "speechrank_version": __version__, "model": model}
    payload.update(extra_config or {})
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
              str(directory / MODEL_FILE), metadata={"format": "pt", "model_type": MODEL_TYPE})
    (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2) + "\n")


def read_checkpoint_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``config.json`` of a BEST-RQ checkpoint directory (SpeechrankError if not)."""
    directory = Path(path)
    config_path = directory / CONFIG_FILE
    try:
        payload = json.loads(config_path.read_text())
    except FileNotFoundError as err:
        raise SpeechrankError(f"{directory}: not a speechrank checkpoint "
                              f"(no {CONFIG_FILE})") from err
    except (OSError, ValueError) as err:
        raise SpeechrankError(f"{config_path}: unreadable ({err})") from err
    if not isinstance(payload, dict) or payload.get("model_type") != MODEL_TYPE:
        raise SpeechrankError(f"{directory}: {CONFIG_FILE} is not a {MODEL_TYPE} config")
    version = payload.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SpeechrankError(f"{directory}: checkpoint format {version} is newer than this "
                              f"speechrank reads ({FORMAT_VERSION}); upgrade speechrank")
    return payload


def read_trainer(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """``trainer.json`` of a checkpoint (empty when missing or unreadable)."""
    try:
        data = json.loads((Path(directory) / TRAINER_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
