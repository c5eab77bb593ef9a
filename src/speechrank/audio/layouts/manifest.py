"""Manifests: ``.csv``, ``.tsv`` and ``.jsonl`` tables of audio files and their labels.

Columns:

- ``path`` (required): the audio file, relative to the manifest's directory or absolute;
- ``id`` or ``uid`` (optional): the utterance id; by default the ``path`` as written, with
  ``@start-end`` appended when the row selects a region;
- ``split`` (optional): ``train``/``dev``/``test`` (``valid``/``validation`` mean ``dev``;
  ``pretrain`` marks audio for self-supervised training); empty means no split;
- ``start``/``end`` (optional): the region in seconds;
- every other column is a label. CSV/TSV values stay strings; JSON values keep their types
  (a ``phones`` list stays a list). Empty cells and JSON ``null`` mean "no label".

Any problem with the table itself is a one-line :class:`SpeechrankError` naming the file and
the line. The audio files are not opened here (reading them is the extraction's job, where an
unreadable file is skipped and recorded).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from speechrank.audio.layouts._common import abspath, make_dataset, normalize_split
from speechrank.audio.utterance import Dataset, Utterance
from speechrank.errors import SpeechrankError

#: Manifest file extensions and their delimiter (``None``: JSON lines).
MANIFEST_SUFFIXES: dict[str, str | None] = {".csv": ",", ".tsv": "\t", ".jsonl": None}

_RESERVED = ("path", "id", "uid", "split", "start", "end")


def is_manifest(path: Path) -> bool:
    """True for a file whose extension is a manifest's."""
    return path.suffix.lower() in MANIFEST_SUFFIXES


def _rows_delimited(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header: list[str] | None = None
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                if "" in header:
                    raise SpeechrankError(f"{path}:{line}: empty column name in the header")
                if len(set(header)) != len(header):
                    raise SpeechrankError(f"{path}:{line}: repeated column name in the header")
                if "path" not in header:
                    raise SpeechrankError(f"{path}:{line}: no 'path' column "
                                          f"(columns: {', '.join(header)})")
                continue
            if len(row) != len(header):
                raise SpeechrankError(f"{path}:{line}: {len(row)} fields, the header has "
                                      f"{len(header)}")
            yield line, {name: cell.strip() for name, cell in zip(header, row, strict=True)}
        if header is None:
            raise SpeechrankError(f"{path}: empty manifest (no header line)")


def _rows_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                raise SpeechrankError(f"{path}:{line}: invalid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise SpeechrankError(f"{path}:{line}: expected a JSON object, got "
                                      f"{type(row).__name__}")
            yield line, row


def read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The manifest's rows with their 1-based line numbers.

    Raises:
        SpeechrankError: unreadable file, bad encoding, malformed row or no ``path`` column.
    """
    suffix = path.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise SpeechrankError(f"{path}: not a manifest (expected .csv, .tsv or .jsonl)")
    delimiter = MANIFEST_SUFFIXES[suffix]
    try:
        rows = list(_rows_jsonl(path) if delimiter is None else _rows_delimited(path, delimiter))
    except UnicodeDecodeError as err:
        raise SpeechrankError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})"
                              ) from None
    except csv.Error as err:
        raise SpeechrankError(f"{path}: malformed {suffix[1:].upper()} ({err})") from None
    except OSError as err:
        raise SpeechrankError(f"{path}: cannot read manifest ({err.strerror or err})") from None
    return rows


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _seconds(value: Any, name: str, where: str) -> float | None:
    if _empty(value):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise SpeechrankError(f"{where}: {name} {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise SpeechrankError(f"{where}: {name} {value!r} is not a time >= 0")
    return seconds


def row_to_utterance(row: dict[str, Any], base: Path, where: str, *,
                     default_split: str | None = None,
                     split_aliases: Mapping[str, str] | None = None) -> Utterance:
    """One manifest row as an :class:`Utterance` (``where`` = ``file:line`` for errors).

    ``split_aliases`` maps extra raw split values (a layout's own group names) to splits.
    """
    raw_path = row.get("path")
    if _empty(raw_path) or not isinstance(raw_path, str):
        raise SpeechrankError(f"{where}: missing or empty 'path'")
    start = _seconds(row.get("start"), "start", where)
    end = _seconds(row.get("end"), "end", where)
    if end is not None and end <= (start or 0.0):
        raise SpeechrankError(f"{where}: end {end} is not after start {start or 0.0}")
    raw_split = row.get("split")
    if split_aliases and isinstance(raw_split, str) and raw_split in split_aliases:
        raw_split = split_aliases[raw_split]
    try:
        split = normalize_split(raw_split)
    except ValueError as err:
        raise SpeechrankError(f"{where}: {err}") from None
    uid_value = next((row[k] for k in ("uid", "id") if not _empty(row.get(k))), None)
    if uid_value is None:
        uid = Path(raw_path).as_posix()
        if start is not None or end is not None:
            uid += f"@{start or 0.0:g}-{'' if end is None else f'{end:g}'}"
    else:
        uid = str(uid_value)
    labels = {k: v for k, v in row.items() if k not in _RESERVED and not _empty(v)}
    return Utterance(uid=uid, path=abspath(base / raw_path), labels=labels,
                     split=split if split is not None else default_split,
                     start=start, end=end)


def manifest_utterances(path: Path, *, default_split: str | None = None,
                        split_aliases: Mapping[str, str] | None = None,
                        ) -> tuple[list[Utterance], list[str]]:
    """Utterances of one manifest, and the label columns seen (in first-seen order)."""
    base = Path(abspath(path)).parent
    utterances: list[Utterance] = []
    columns: dict[str, None] = {}
    first_line: dict[str, int] = {}
    for line, row in read_rows(path):
        where = f"{path}:{line}"
        utt = row_to_utterance(row, base, where, default_split=default_split,
                               split_aliases=split_aliases)
        if utt.uid in first_line:
            raise SpeechrankError(f"{where}: utterance id {utt.uid!r} already used on line "
                                  f"{first_line[utt.uid]}")
        first_line[utt.uid] = line
        columns.update(dict.fromkeys(utt.labels))
        utterances.append(utt)
    return utterances, list(columns)


def load_manifest(path: Path, spec: str) -> Dataset:
    """A manifest file as a :class:`Dataset` (format ``manifest``)."""
    utterances, columns = manifest_utterances(path)
    if not utterances:
        raise SpeechrankError(f"{path}: manifest has no rows")
    has_split = any(u.split for u in utterances)
    return make_dataset(
        spec, "manifest", path.parent, utterances,
        manifest=abspath(path),
        labels=columns,
        label_source="manifest columns",
        split_source="manifest" if has_split else "none",
    )
