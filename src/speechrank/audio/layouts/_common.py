"""Helpers shared by the corpus layouts: split names, relative ids, dataset summaries."""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from speechrank.audio.io import is_audio_file
from speechrank.audio.utterance import Dataset, Utterance
from speechrank.errors import SpeechrankError

#: Split names an :class:`Utterance` may carry. ``pretrain`` marks audio reserved for
#: self-supervised training (the synthetic corpus has it); probes use train/dev/test.
SPLITS: tuple[str, ...] = ("pretrain", "train", "dev", "test")

#: Probe splits, in order.
PROBE_SPLITS: tuple[str, ...] = ("train", "dev", "test")

_SPLIT_ALIASES: Mapping[str, str] = {
    "pretrain": "pretrain",
    "train": "train",
    "training": "train",
    "dev": "dev",
    "development": "dev",
    "val": "dev",
    "valid": "dev",
    "validation": "dev",
    "test": "test",
    "testing": "test",
}

#: How a dataset's splits were decided, the values of ``Dataset.info["split_source"]``.
SPLIT_SOURCES: Mapping[str, str] = {
    "corpus": "the corpus's own files (split lists, subset folders, fold sessions)",
    "rule": "a fixed, documented rule on file names (no randomness)",
    "manifest": "the manifest's split column",
    "seeded": "a seeded random split (seed and method recorded)",
    "none": "no split: every utterance has split None",
}


def normalize_split(value: Any) -> str | None:
    """Map a split name (``valid``, ``validation``, ``Training`` ...) to one of :data:`SPLITS`.

    Empty values give ``None``; anything else unknown raises ``ValueError``.
    """
    if value is None:
        return None
    text = str(value).strip().lower()
    if not text:
        return None
    try:
        return _SPLIT_ALIASES[text]
    except KeyError:
        raise ValueError(
            f"split {value!r} is not one of {', '.join(SPLITS)} (or valid/validation)"
        ) from None


def split_counts(utterances: Iterable[Utterance]) -> dict[str, int]:
    """Number of utterances per split, ``"none"`` for those without one, in a fixed order."""
    counts = collections.Counter(u.split or "none" for u in utterances)
    order = [*SPLITS, "none"]
    return {name: counts[name] for name in order if counts[name]}


def walk_files(root: Path) -> Iterator[Path]:
    """Every regular file under ``root``, following directory links but never twice.

    Hidden files and directories (names starting with ``.``, such as macOS ``._x.wav``
    resource forks) are skipped.
    """
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        stat = os.stat(dirpath)
        key = (stat.st_dev, stat.st_ino)
        if key in seen:
            dirnames[:] = []
            continue
        seen.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath, name)


def audio_files(root: Path) -> list[Path]:
    """Audio files under ``root`` (recursively), sorted by their path relative to ``root``."""
    files = [p for p in walk_files(root) if is_audio_file(p) and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def rel_uid(path: Path, root: Path) -> str:
    """A stable id: ``path`` relative to ``root`` with forward slashes."""
    return Path(os.path.relpath(path, root)).as_posix()


def abspath(path: Path | str) -> str:
    """Absolute, normalised path string (symbolic links are kept, not resolved)."""
    return os.path.normpath(os.path.abspath(path))


def require_dir(path: Path, fmt: str) -> Path:
    """``path`` if it is a directory, else a one-line error naming the layout."""
    if not path.exists():
        raise SpeechrankError(f"{fmt}: {path} does not exist")
    if not path.is_dir():
        raise SpeechrankError(f"{fmt}: {path} is not a directory")
    return path


def make_dataset(spec: str, fmt: str, root: Path, utterances: list[Utterance],
                 **info: Any) -> Dataset:
    """Build a :class:`Dataset`, refusing an empty one and adding utterance/split counts."""
    if not utterances:
        raise SpeechrankError(f"{fmt}: no utterances found under {root}")
    uids = collections.Counter(u.uid for u in utterances)
    duplicate = next((uid for uid, n in uids.items() if n > 1), None)
    if duplicate is not None:
        raise SpeechrankError(f"{fmt}: utterance id {duplicate!r} occurs {uids[duplicate]} times"
                              f" under {root}")
    info = {"n_utterances": len(utterances), "splits": split_counts(utterances), **info}
    return Dataset(spec=spec, format=fmt, root=abspath(root), utterances=utterances, info=info)
