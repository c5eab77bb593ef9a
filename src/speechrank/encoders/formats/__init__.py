"""One registry of checkpoint formats: what a checkpoint is, wherever speechrank asks.

Each format is one module of this package holding a
:class:`~speechrank.encoders.formats.base.CheckpointFormat` as ``FORMAT``: it says whether a
path is one of its checkpoints, loads it (weights only, no training framework imported),
lists the complete checkpoints of a run directory, and reads a checkpoint's step, training
record and content digest. :func:`~speechrank.encoders.load_encoder`, the sweep's series,
``speechrank pretrain`` (its resume) and the training monitor all ask this registry, and
nothing else in speechrank tests for a checkpoint's files.

Adding a format is one module here (holding its ``FORMAT``) and one line in
:data:`MODULES`, at the place in the order where it should be asked.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from speechrank.encoders.formats.base import (
    CheckpointFormat,
    FoundCheckpoint,
    content_digest,
    step_from_name,
)
from speechrank.errors import SpeechrankError

__all__ = [
    "FORMATS",
    "MODULES",
    "CheckpointFormat",
    "FoundCheckpoint",
    "by_name",
    "content_digest",
    "describe",
    "detect",
    "run_checkpoints",
    "step_from_name",
]

#: The modules of this package that hold a format, in the order the formats are asked: the
#: first that claims a path owns it, so a format whose checkpoints a more general one would
#: also claim comes before it.
MODULES: tuple[str, ...] = (
    "speechrank",  # config.json naming speechrank's model type
    "hf_trainer",  # a model directory with trainer_state.json
    "huggingface",  # any other model directory
    "espnet",  # .pth beside an ESPnet HuBERT config.yaml
    "torchaudio",  # torchaudio state dicts (.pt, .pth) and Lightning .ckpt, by their keys
    "fairseq",  # any other .pt
    "random",  # random:NAME specs
)

#: Every format, in :data:`MODULES` order.
FORMATS: tuple[CheckpointFormat, ...] = tuple(
    importlib.import_module(f"{__name__}.{module}").FORMAT for module in MODULES)


def by_name(name: str) -> CheckpointFormat:
    """The format recorded under ``name``."""
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise SpeechrankError(f"unknown checkpoint format {name!r} "
                          f"(known: {', '.join(f.name for f in FORMATS)})")


def detect(target: str | Path) -> CheckpointFormat | None:
    """The format of one checkpoint: a MODEL string (``random:tiny``) or an existing path;
    None when no format claims it."""
    if isinstance(target, str):
        for fmt in FORMATS:
            if fmt.claims_spec(target):
                return fmt
        target = Path(target).expanduser()
    if not target.exists():
        return None
    for fmt in FORMATS:
        if fmt.claims(target):
            return fmt
    return None


def _found(path: Path, fmt: CheckpointFormat) -> FoundCheckpoint:
    return FoundCheckpoint(path=path, name=fmt.checkpoint_name(path), step=fmt.step(path),
                           format=fmt)


def describe(target: str | Path) -> FoundCheckpoint:
    """One checkpoint (a MODEL string or a path): its format, name and step.

    Raises:
        SpeechrankError: no format claims ``target``.
    """
    fmt = detect(target)
    if fmt is None:
        raise SpeechrankError(f"{target}: not a checkpoint of any known format "
                              f"({', '.join(f.name for f in FORMATS)})")
    if isinstance(target, str) and fmt.claims_spec(target):
        return _found(Path(target), fmt)
    path = Path(target).expanduser() if isinstance(target, str) else target
    return _found(fmt.locate(path), fmt)


def run_checkpoints(directory: str | Path) -> list[FoundCheckpoint]:
    """The complete checkpoints of a run directory, in training order (by step; unknown
    steps last, by name). Each checkpoint is listed by the format that owns it."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        return []
    seen: set[Path] = set()
    found: list[FoundCheckpoint] = []
    for fmt in FORMATS:
        for path in fmt.run_checkpoints(root):
            if path in seen or detect(path) is not fmt:
                continue
            seen.add(path)
            found.append(_found(path, fmt))
    return sorted(found, key=lambda c: (c.step is None, c.step or 0, c.name))
