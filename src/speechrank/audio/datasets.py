"""Turning a DATA spec into a :class:`Dataset` of utterances with labels and splits.

A spec is one of:

- a directory: every audio file under it (recursively, hidden files skipped, sorted), the
  utterance id being the path relative to the directory; no labels, no splits;
- a single audio file (one utterance);
- a manifest, ``.csv``, ``.tsv`` or ``.jsonl`` (see :mod:`speechrank.audio.layouts.manifest`);
- ``FORMAT:PATH`` for a known corpus layout (:data:`~speechrank.audio.layouts.LAYOUTS`:
  ``librispeech``, ``speechcommands``, ``voxceleb1``, ``iemocap``, ``fsdd``, ``synthetic``).

Any spec may end in ``#key=value&key=value`` options: ``split=test`` or ``split=train,dev``
keeps only those splits (any spec), ``fold=2`` and ``seed=1`` (``iemocap``),
``silence_fraction=0`` and ``seed=1`` (``speechcommands``). A path that exists is taken
literally, ``#`` and ``:`` included.

``Dataset.info`` records how labels and splits were derived: ``split_source`` is one of
``corpus``, ``rule``, ``manifest``, ``seeded`` or ``none``
(:data:`~speechrank.audio.layouts._common.SPLIT_SOURCES`), with ``split_rule`` in words.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from speechrank.audio.io import AUDIO_EXTENSIONS, is_audio_file
from speechrank.audio.layouts import LAYOUTS
from speechrank.audio.layouts._common import (
    SPLIT_SOURCES,
    SPLITS,
    abspath,
    audio_files,
    make_dataset,
    normalize_split,
    rel_uid,
    split_counts,
)
from speechrank.audio.layouts.manifest import MANIFEST_SUFFIXES, is_manifest, load_manifest
from speechrank.audio.utterance import Dataset, Utterance
from speechrank.errors import SpeechrankError

__all__ = [
    "SPLITS",
    "SPLIT_SOURCES",
    "DataSpec",
    "known_formats",
    "load_dataset",
    "parse_spec",
    "resolve_spec",
    "select_splits",
]

#: Options every spec accepts, whatever its format.
COMMON_OPTIONS = ("split",)

_FORMAT = re.compile(r"^(?P<format>[A-Za-z][A-Za-z0-9_-]+):(?P<path>.*)$")
_OPTIONS = re.compile(r"^[A-Za-z_]\w*=[^&=]*(&[A-Za-z_]\w*=[^&=]*)*$")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """A parsed DATA spec: layout name (``None`` for a plain path), path and raw options."""

    format: str | None
    path: Path
    options: Mapping[str, str]


def known_formats() -> list[str]:
    """Names accepted before the colon in ``FORMAT:PATH``."""
    return list(LAYOUTS)


def _parse_options(text: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in text.split("&"):
        key, _, value = item.partition("=")
        options[key] = value
    return options


def parse_spec(spec: str | os.PathLike[str]) -> DataSpec:
    """Split a DATA spec into layout, path and ``#key=value`` options (nothing is read)."""
    return _parse(os.fspath(spec), Path.exists)


def _parse(text: str, exists: Callable[[Path], bool]) -> DataSpec:
    """:func:`parse_spec`, with ``exists`` telling whether a path is there (relative paths
    are the caller's to place)."""
    if not text.strip():
        raise SpeechrankError("empty DATA spec")
    if exists(Path(text).expanduser()):
        return DataSpec(None, Path(text).expanduser(), {})
    head, options = text, {}
    if "#" in text:
        before, _, after = text.rpartition("#")
        if _OPTIONS.match(after):
            head, options = before, _parse_options(after)
    match = _FORMAT.match(head)
    if match is not None and not exists(Path(head).expanduser()):
        fmt = match["format"].lower()
        if fmt not in LAYOUTS:
            raise SpeechrankError(f"unknown DATA format {match['format']!r} in {text!r} "
                                  f"(known: {', '.join(LAYOUTS)}; or give a directory or a "
                                  ".csv/.tsv/.jsonl manifest)")
        if not match["path"]:
            raise SpeechrankError(f"{fmt}: no path after the colon in {text!r}")
        return DataSpec(fmt, Path(match["path"]).expanduser(), options)
    return DataSpec(None, Path(head).expanduser(), options)


def resolve_spec(spec: str | os.PathLike[str], base: str | os.PathLike[str] | None = None,
                 ) -> str:
    """The one spelling of a DATA spec: its path made absolute against ``base`` (default: the
    working directory) and resolved (``..`` and symbolic links), the layout name in lower
    case, the options sorted: ``fsdd:../data/fsdd#split=test`` read in ``/work/x`` is
    ``fsdd:/work/data/fsdd#split=test``. Two spellings of one dataset resolve alike, so the
    store keys a dataset by this, never by how it was written. Resolving a resolved spec
    changes nothing. Nothing is read beyond the path's existence.
    """
    root = Path(base).expanduser() if base is not None else Path.cwd()
    parsed = _parse(os.fspath(spec), lambda p: (p if p.is_absolute() else root / p).exists())
    path = parsed.path if parsed.path.is_absolute() else root / parsed.path
    head = str(path.resolve())
    if parsed.format is not None:
        head = f"{parsed.format}:{head}"
    if parsed.options:
        head += "#" + "&".join(f"{k}={v}" for k, v in sorted(parsed.options.items()))
    return head


def _load_directory(path: Path, spec: str) -> Dataset:
    files = audio_files(path)
    if not files:
        raise SpeechrankError(f"{path}: no audio files found (looked for "
                              f"{', '.join(sorted(AUDIO_EXTENSIONS))}, recursively)")
    utterances = [Utterance(uid=rel_uid(f, path), path=abspath(f)) for f in files]
    return make_dataset(spec, "directory", path, utterances, labels=[],
                        label_source="none", split_source="none")


def _load_file(path: Path, spec: str) -> Dataset:
    utterance = Utterance(uid=path.name, path=abspath(path))
    return make_dataset(spec, "file", path.parent, [utterance], labels=[],
                        label_source="none", split_source="none")


def _load_path(path: Path, spec: str) -> Dataset:
    if not path.exists():
        raise SpeechrankError(f"DATA {spec!r}: {path} does not exist")
    if path.is_dir():
        return _load_directory(path, spec)
    if is_manifest(path):
        return load_manifest(path, spec)
    if is_audio_file(path):
        return _load_file(path, spec)
    raise SpeechrankError(f"DATA {spec!r}: {path} is neither a directory, a manifest "
                          f"({', '.join(MANIFEST_SUFFIXES)}) nor an audio file")


def _convert_options(fmt: str | None, raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict]:
    """Layout keyword arguments and the common options, converted and checked."""
    accepted = dict(LAYOUTS[fmt].options) if fmt is not None else {}
    layout_options: dict[str, Any] = {}
    common: dict[str, Any] = {}
    for key, value in raw.items():
        if key in COMMON_OPTIONS:
            common[key] = value
            continue
        if key not in accepted:
            allowed = ", ".join([*COMMON_OPTIONS, *accepted])
            where = f"format {fmt!r}" if fmt else "a plain path"
            raise SpeechrankError(f"option {key!r} is not accepted for {where} "
                                  f"(accepted: {allowed})")
        convert = accepted[key]
        try:
            layout_options[key] = convert(value) if isinstance(value, str) else value
        except ValueError:
            raise SpeechrankError(f"option {key}={value!r}: expected "
                                  f"{getattr(convert, '__name__', 'a value')}") from None
    return layout_options, common


def _split_names(value: str | list[str] | tuple[str, ...]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    names = []
    for item in items:
        try:
            name = normalize_split(item)
        except ValueError as err:
            raise SpeechrankError(f"option split: {err}") from None
        if name is None:
            raise SpeechrankError("option split: empty split name")
        names.append(name)
    return names


def select_splits(dataset: Dataset, splits: str | list[str] | tuple[str, ...]) -> Dataset:
    """A dataset with only the utterances of ``splits`` (``"test"``, ``"train,dev"``, ...)."""
    names = _split_names(splits)
    kept = [u for u in dataset.utterances if u.split in names]
    if not kept:
        raise SpeechrankError(f"{dataset.spec}: no utterances in split "
                              f"{', '.join(names)} (have {split_counts(dataset.utterances)})")
    info = {**dataset.info, "n_utterances": len(kept), "splits": split_counts(kept),
            "selected_splits": names}
    return dataclasses.replace(dataset, utterances=kept, info=info)


def load_dataset(spec: str | os.PathLike[str], **options: Any) -> Dataset:
    """Read a DATA spec (see the module docstring) into a :class:`Dataset`.

    Keyword ``options`` are the same as the spec's ``#key=value`` ones and override them.
    Nothing is decoded: audio files are opened later, by the extraction.

    Raises:
        SpeechrankError: unknown format, missing path, no audio, malformed manifest or
            corpus file, bad option; always with a one-line message.
    """
    parsed = parse_spec(spec)
    text = os.fspath(spec)
    layout_options, common = _convert_options(parsed.format, {**parsed.options, **options})
    if parsed.format is None:
        dataset = _load_path(parsed.path, text)
    else:
        if not parsed.path.exists():
            raise SpeechrankError(f"{parsed.format}: {parsed.path} does not exist")
        dataset = LAYOUTS[parsed.format].load(parsed.path, text, **layout_options)
    if layout_options:
        dataset.info.setdefault("options", {}).update(layout_options)
    if "split" in common:
        dataset = select_splits(dataset, common["split"])
    return dataset
