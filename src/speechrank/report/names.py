"""Short names for what the report shows: datasets by a few words, paths without their root.

A dataset is stored under its full DATA spec (``synthetic:/home/me/demo/corpus#manifest=ood_de``),
which is too long for an axis, a caption or a table column, and shows where the user keeps
their files. The report names each dataset by :func:`dataset_names` (``corpus (ood_de)``) and
lists the specs once, in a table; every text on the page goes through :func:`display_paths`,
which writes an absolute path relative to the store's folder when it lies inside it
(``corpus``), and as its last two parts otherwise (``…/data/fsdd``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath

#: An absolute POSIX path in running text: a ``/`` that does not follow a word character, a
#: dot, a tilde, a ``<`` or another slash (so ``n/a``, ``1/3``, ``rankme/sum``, ``https://``
#: and a closing tag in the data are left alone), up to the next space, quote, bracket or
#: separator; a colon ends it too, so that each path of a list such as ``/usr/bin:/bin`` is
#: shortened on its own.
_ABSOLUTE = re.compile(r"(?<![\w.~/<-])/(?=[\w.@+-])[^\s\"'<>#,;:|()\[\]{}]*")
_FORMAT = re.compile(r"^([a-z0-9_]{2,}):(.*)$")

#: A dataset name longer than this is cut (with an ellipsis).
MAX_NAME = 32


def display_paths(text: str, base: str | PurePosixPath | None = None) -> str:
    """``text`` with every absolute path shortened: relative to ``base`` when inside it,
    else ``…/`` and its last two parts."""
    root = PurePosixPath(base) if base is not None else None

    def shorten(match: re.Match[str]) -> str:
        path = PurePosixPath(match.group(0))
        if root is not None and root.parts[1:]:
            try:
                relative = path.relative_to(root)
            except ValueError:
                pass
            else:
                return str(relative)
        return "…/" + "/".join(path.parts[1:][-2:])

    return _ABSOLUTE.sub(shorten, text)


def _parts(spec: str) -> tuple[str, str, str]:
    """``(format, path, selector)`` of a DATA spec (each may be empty)."""
    body, _, selector = spec.partition("#")
    match = _FORMAT.match(body)
    fmt, path = (match.group(1), match.group(2)) if match else ("", body)
    return fmt, path, selector


def _base_name(spec: str) -> str:
    fmt, path, selector = _parts(spec)
    stem = PurePosixPath(path.rstrip("/")).stem if path.strip("/") else ""
    name = stem or fmt or spec
    values = [item.partition("=")[2] or item for item in selector.split("&") if item]
    if values:
        name += f" ({'; '.join(values)})"
    return name if len(name) <= MAX_NAME else name[:MAX_NAME - 1] + "…"


def dataset_names(specs: Iterable[str]) -> dict[str, str]:
    """A short, unique name for each dataset spec: the file or folder name without its
    extension and the values of its selector (``synthetic:/x/corpus#manifest=ood_de`` ->
    ``corpus (ood_de)``); specs that would share a name are numbered (``data [2]``)."""
    unique = sorted(set(specs))
    base = {spec: _base_name(spec) for spec in unique}
    shared = {name for name in base.values() if list(base.values()).count(name) > 1}
    names: dict[str, str] = {}
    used = {name for name in base.values() if name not in shared}
    counters: dict[str, int] = {}
    for spec in unique:
        name = base[spec]
        if name in shared:
            while True:  # the next number whose name no other dataset has
                counters[name] = counters.get(name, 0) + 1
                candidate = f"{name} [{counters[name]}]"
                if candidate not in used:
                    break
            used.add(candidate)
            name = candidate
        names[spec] = name
    return names
