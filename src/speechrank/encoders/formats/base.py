"""What every checkpoint format answers, and the helpers the formats share.

A format (one module of :mod:`speechrank.encoders.formats`) is a :class:`CheckpointFormat`:
it says whether a path (or a spec such as ``random:tiny``) is one of its checkpoints, loads it
as a :class:`~speechrank.encoders.base.SpeechEncoder` (weights only: ``torch.load`` runs with
``weights_only=True``, nothing of the training framework is imported), lists the complete
checkpoints of a run directory, and reads a checkpoint's training step, its training record
and the files its content digest covers.

The content digest
------------------
:func:`content_digest` is the sha256 of every byte of the files that hold a checkpoint's
weights and configuration (for a fairseq ``.pt``, the whole file: its weights and optimiser
state share one pickle), each preceded by its name relative to the checkpoint and its size.
It is a true content digest: no size-and-mtime shortcut and no sample of the first and last
MiB, which would call two checkpoints of one training run equal whenever a write kept the
file's size and touched only its middle (a resumed run rewriting ``checkpoint_last.pt`` does
exactly that). Measured on this project's 2-core machine from the page cache, sha256 reads
about 1.3 GiB/s (0.68 to 0.86 s per GiB at load average 5.4; the CPU has SHA extensions), so
a 1.1 GiB fairseq HuBERT base checkpoint costs under a second, against minutes for one rank
unit of that checkpoint; a run on a slow disk pays its read speed instead. Digests are
remembered within a process by (path, size, mtime, inode), so a sweep that both deduplicates
``checkpoint_last.pt`` and records the checkpoints hashes each file once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CheckpointFormat",
    "FoundCheckpoint",
    "content_digest",
    "finite",
    "read_json",
    "step_from_name",
]

#: Directory names that carry a training step: ``checkpoint-500``, ``step_1000``,
#: ``checkpoint-000600``, ``ckpt-20``; the step is the number.
_STEP_NAME = re.compile(r"^(?:checkpoint|step|ckpt|iter)[-_]?(\d+)$")


def step_from_name(name: str) -> int | None:
    """The training step a checkpoint's name carries (``checkpoint-500`` -> 500), else None."""
    match = _STEP_NAME.match(name)
    return int(match.group(1)) if match else None


def finite(value: object) -> float | None:
    """``value`` as a float when it is a finite real number (a 0-d tensor too), else None."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (TypeError, ValueError, RuntimeError):
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


_DIGESTS: dict[tuple[str, ...], str] = {}


def _stat_key(files: Sequence[Path]) -> tuple[str, ...]:
    key = []
    for file in files:
        st = file.stat()
        key.append(f"{file}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
    return tuple(key)


def content_digest(root: Path, files: Sequence[Path]) -> str:
    """``sha256:`` + the sha256 of ``files`` (names relative to the checkpoint directory
    ``root``, sizes and bytes, in name order); see the module docstring for why every byte is
    read. A checkpoint that is one file (``root`` itself) is hashed without its name, so a
    byte-for-byte copy under another name has the same digest."""
    def name(file: Path) -> str:
        return "" if file == root else file.relative_to(root).as_posix()

    ordered = sorted(files, key=name)
    key = _stat_key(ordered)
    cached = _DIGESTS.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for file in ordered:
        digest.update(f"{name(file)}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    value = "sha256:" + digest.hexdigest()
    _DIGESTS[key] = value
    return value


@dataclasses.dataclass(frozen=True)
class FoundCheckpoint:
    """One checkpoint of a run as its format lists it: where, what it is called, its step."""

    path: Path
    name: str
    step: int | None
    format: CheckpointFormat


class CheckpointFormat:
    """One checkpoint format. Subclasses set :attr:`name` and :attr:`description` and override
    what applies; the defaults describe a format with no run layout and no training record.

    ``target`` is a :class:`~pathlib.Path` for checkpoints on disk; a format of specs that
    are no path (``random:NAME``) overrides :meth:`claims_spec` instead of :meth:`claims`.
    """

    #: Short name recorded in the store's ``checkpoints.format`` column.
    name: str = ""
    #: One line: what a checkpoint of this format is.
    description: str = ""

    def claims_spec(self, spec: str) -> bool:
        """Whether a MODEL string that is not a path on disk belongs to this format."""
        return False

    def claims(self, path: Path) -> bool:
        """Whether ``path`` (an existing file or directory) is one checkpoint of this format.

        Claim what is recognisably yours even when it is broken, so the user gets this
        format's own error from :meth:`load` rather than another format's.
        """
        return False

    def complete(self, path: Path) -> bool:
        """Whether a claimed checkpoint has every file it needs (a run lists only those)."""
        return True

    def run_checkpoints(self, directory: Path) -> list[Path]:
        """The complete checkpoints of this format directly inside the run ``directory``
        (any order: the registry sorts them by step). Hidden entries are never checkpoints."""
        return [child for child in _children(directory)
                if self.claims(child) and self.complete(child)]

    def locate(self, path: Path) -> Path:
        """The file or directory that holds a claimed checkpoint (``path`` itself, or the
        one file a directory stands for)."""
        return path

    def checkpoint_name(self, path: Path) -> str:
        """How results name the checkpoint (``checkpoint-000600``, ``checkpoint_3_600.pt``)."""
        return path.name

    def step(self, path: Path) -> int | None:
        """The training step the checkpoint was saved at, from its own files where they keep
        it, else from its name; None when unknown."""
        return step_from_name(path.name)

    def training(self, path: Path) -> dict[str, float]:
        """The training record at the checkpoint: ``loss``, ``accuracy`` (masked-prediction
        accuracy), ``learning_rate`` where the format keeps them (absent when unknown)."""
        return {}

    def content_files(self, path: Path) -> list[Path]:
        """The files whose bytes :meth:`digest` covers (weights and model configuration)."""
        return [path] if path.is_file() else []

    def digest(self, path: Path) -> str | None:
        """The content digest (see :func:`content_digest`); None when no file is covered."""
        files = self.content_files(path)
        return content_digest(path, files) if files else None

    def load(self, path: Path, *, device: Any, dtype: Any, normalize: bool | None,
             name: str) -> Any:
        """The checkpoint as a ready :class:`~speechrank.encoders.base.SpeechEncoder`."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<checkpoint format {self.name}>"


def _children(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except OSError:
        return []


def training_from(payload: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, float]:
    """``{record key: finite value}`` for ``keys`` (record key -> payload key) found in
    ``payload``."""
    out = {}
    for record_key, payload_key in keys.items():
        value = finite(payload.get(payload_key))
        if value is not None:
            out[record_key] = value
    return out
