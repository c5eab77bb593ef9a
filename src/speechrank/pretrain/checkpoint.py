"""Checkpoint directories of a pretraining run: atomic writes, discovery, resumable state.

A run directory ``OUT`` holds ``checkpoint-<step:06d>/`` directories. Each is written into a
temporary directory inside the hidden ``OUT/.partial/`` and renamed into place only once every
file is written (``config.json`` last), so a killed process never leaves a partial checkpoint
under a checkpoint name, nor a directory with a ``config.json`` directly in ``OUT`` that a
checkpoint scanner could mistake for one; leftovers of such a kill are ignored by discovery and
removed on resume.

Files of a checkpoint:

the files of :mod:`speechrank.encoders.bestrq_format` (the one description of the format).
``training_state.pt`` is a ``torch.save`` of plain containers and tensors, read back with
``weights_only=True``; by default only the newest checkpoint of a run keeps it: it is removed
from the previous one once the next is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechrank.encoders.bestrq import BestRqConfig
from speechrank.encoders.bestrq_format import (
    TRAINER_FILE,
    TRAINING_STATE_FILE,
    checkpoint_name,
    write_model_files,
)
from speechrank.encoders.formats.speechrank import FORMAT as SPEECHRANK_FORMAT
from speechrank.encoders.formats.speechrank import parse_checkpoint_name
from speechrank.errors import SpeechrankError

__all__ = [
    "TRAINING_STATE_FILE",
    "capture_rng_state",
    "checkpoint_name",
    "clean_temporary",
    "drop_training_state",
    "list_checkpoints",
    "load_training_state",
    "preserved_rng",
    "restore_rng_state",
    "save_checkpoint",
    "update_trainer_json",
]

_PARTIAL = ".partial"


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")


def list_checkpoints(out_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``out_dir`` as ``(step, path)``, oldest first (the
    registry's ``speechrank`` format decides what is complete)."""
    root = Path(out_dir)
    if not root.is_dir():
        return []
    found = []
    for path in SPEECHRANK_FORMAT.run_checkpoints(root):
        step = parse_checkpoint_name(path.name)
        if step is not None:
            found.append((step, path))
    return sorted(found)


def clean_temporary(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Remove leftovers of interrupted checkpoint writes; returns what was removed."""
    partial = Path(out_dir) / _PARTIAL
    removed = sorted(partial.iterdir()) if partial.is_dir() else []
    for entry in removed:
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return removed


def save_checkpoint(out_dir: str | os.PathLike[str], step: int, *, config: BestRqConfig,
                    tensors: Mapping[str, torch.Tensor], recipe: Mapping[str, Any],
                    trainer: Mapping[str, Any],
                    training_state: Mapping[str, Any] | None) -> Path:
    """Write ``checkpoint-<step>`` atomically (temporary directory, then one rename)."""
    root = Path(out_dir)
    final = root / checkpoint_name(step)
    tmp = root / _PARTIAL / f"{checkpoint_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if training_state is not None:
        torch.save(dict(training_state), tmp / TRAINING_STATE_FILE)
    _write_json(tmp / TRAINER_FILE, trainer)
    write_model_files(tmp, config, tensors, extra_config={"pretraining": dict(recipe)})
    if final.exists():  # re-saving a step: swap the old one out, then delete it
        old = tmp.with_name(tmp.name + "-old")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


def update_trainer_json(checkpoint: Path, values: Mapping[str, Any]) -> None:
    """Merge ``values`` into a complete checkpoint's ``trainer.json`` (atomic file replace)."""
    path = checkpoint / TRAINER_FILE
    payload = json.loads(path.read_text())
    payload.update(values)
    tmp = path.with_name(path.name + ".tmp")
    _write_json(tmp, payload)
    os.replace(tmp, path)


def drop_training_state(checkpoint: Path) -> None:
    """Remove the resumable state of an older checkpoint (its weights stay)."""
    with contextlib.suppress(FileNotFoundError):
        (checkpoint / TRAINING_STATE_FILE).unlink()
    with contextlib.suppress(OSError, ValueError):
        update_trainer_json(checkpoint, {"resumable": False})


def load_training_state(checkpoint: Path) -> dict[str, Any]:
    """Read ``training_state.pt`` (tensors and plain containers only)."""
    path = checkpoint / TRAINING_STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise SpeechrankError(f"{checkpoint}: no {TRAINING_STATE_FILE}; only the newest "
                              "checkpoint of a run can be resumed") from err
    except Exception as err:  # unpickling errors come in many types
        raise SpeechrankError(f"{path}: unreadable ({type(err).__name__}: {err})") from err


def capture_rng_state() -> dict[str, Any]:
    """torch (CPU), numpy (legacy global) and Python ``random`` generator states."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32),
                         np_state["pos"], np_state["has_gauss"], np_state["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (a user's monitor, say) without disturbing the global generators."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)
