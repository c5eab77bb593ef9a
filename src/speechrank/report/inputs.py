"""When a finished report can be reused: what it was drawn from, recorded beside it.

A report (and the analysis under it) is a function of three things: the store's content, the
analysis and page options, and the code that computes and draws them. :func:`report_inputs`
names the three by digests (:meth:`~speechrank.store.ResultStore.content_digest` for the
store, the source of :mod:`speechrank.analysis` and :mod:`speechrank.report` for the code);
the report directory keeps the inputs it was drawn from in :data:`INPUTS_FILE`, written after
everything else, and a caller that finds the same inputs there and every file of the page in
place (:func:`is_current`) reuses the page instead of computing it again. Anything else (a
new unit in the store, another seed, a deleted image, a changed template) draws it anew.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from speechrank import jsonsafe

#: The record of a report's inputs, in its directory.
INPUTS_FILE = "report-inputs.json"

_IMAGE = re.compile(r'<img src="(img/[^"]+)"')


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 of the speechrank version and the source files of the analysis and the report
    (their Python modules, templates and style sheet)."""
    from speechrank import __version__

    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(__version__.encode())
    for folder in ("analysis", "report"):
        for path in sorted((package / folder).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".j2", ".css"):
                digest.update(str(path.relative_to(package)).encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def report_inputs(store: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """What a report drawn now from ``store`` (an open
    :class:`~speechrank.store.ResultStore`) with ``options`` would depend on."""
    return {"store": store.content_digest(), "options": jsonsafe.plain(dict(options)),
            "code": code_digest()}


def is_current(directory: str | Path, inputs: Mapping[str, Any],
               outputs: Iterable[str | Path] = ()) -> bool:
    """Whether ``directory`` holds a complete report drawn from ``inputs``: its record
    matches, ``index.html`` and every image it shows exist, and so do ``outputs`` (other
    files the caller wrote with it)."""
    directory = Path(directory)
    try:
        recorded = json.loads((directory / INPUTS_FILE).read_text(encoding="utf-8"))
        page = (directory / "index.html").read_text(encoding="utf-8")
    except (OSError, ValueError):
        return False
    if recorded != json.loads(jsonsafe.dumps(dict(inputs))):
        return False
    files = [directory / src for src in _IMAGE.findall(page)] + [Path(p) for p in outputs]
    return all(path.is_file() for path in files)


def forget(directory: str | Path) -> None:
    """Drop the record before a report is drawn again (a run stopped halfway through leaves
    no record, so the next run draws the page again)."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        (Path(directory) / INPUTS_FILE).unlink()


def remember(directory: str | Path, inputs: Mapping[str, Any]) -> Path:
    """Record ``inputs`` as those the report in ``directory`` was drawn from (written last,
    atomically)."""
    path = Path(directory) / INPUTS_FILE
    scratch = path.with_suffix(".tmp")
    scratch.write_text(jsonsafe.dumps(dict(inputs), indent=2) + "\n", encoding="utf-8")
    scratch.replace(path)
    return path
