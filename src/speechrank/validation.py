"""One-line errors for configuration read from files and options: pydantic 2 models, checked once.

Every configuration a user writes (the sweep file, a probe recipe, a pretraining recipe, the
measurement options) is declared as a pydantic model with ``extra="forbid"`` and strict types,
and read through :func:`validate`, so a wrong key, type or value becomes one
:class:`~speechrank.errors.SpeechrankError` line that names where it is, the key, the value
given and what is allowed, never a traceback. pydantic rather than checks of our own: it
already knows how to say what a ``Literal``, a bounded number or a nested table expects, and
the models double as the schema that the bad-input tests enumerate.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import pydantic

from speechrank.errors import SpeechrankError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["STRICT", "STRICT_DATACLASS", "describe_error", "read_toml", "validate"]

#: The model configuration every user-facing schema uses: unknown keys are refused, values
#: are not coerced between types (``"5"`` is not an integer, ``true`` is not a number), and
#: a model is immutable once built.
STRICT = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)
#: The same for a pydantic dataclass (which is frozen by its decorator, not its config).
STRICT_DATACLASS = pydantic.ConfigDict(extra="forbid", strict=True)

Model = TypeVar("Model")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_error(error: Mapping[str, Any], where: str) -> str:
    """One line for one pydantic error: where, the dotted key, the value and what is allowed."""
    location = ".".join(str(part) for part in error.get("loc", ()) if part != "__root__")
    key = f"{where} {location}".strip() if location else where
    kind = error.get("type", "")
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"{key}: unknown key"
    if kind in ("missing", "missing_argument"):
        return f"{key}: missing (required)"
    message = str(error.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    # the words of the files users write (TOML arrays and tables), not Python's
    message = message.replace("a valid tuple", "a list").replace("a valid dictionary", "a table")
    return f"{key} = {_short(error.get('input'))}: {message}"


def validate(model: type[Model], data: Any, *, where: str) -> Model:
    """Build ``model`` (a pydantic model or dataclass) from ``data`` or raise one
    :class:`SpeechrankError` line.

    ``where`` names the place the data came from (``"sweep config [rank]"``, a file path); the
    first error pydantic reports is the one shown (the others usually follow from it; errors
    about the keys that enclose the first one are not counted as more).
    """
    if not isinstance(data, Mapping):
        raise SpeechrankError(f"{where}: expected a table of keys, got {_short(data)}")
    try:
        if isinstance(model, type) and issubclass(model, pydantic.BaseModel):
            return model.model_validate(dict(data))  # type: ignore[return-value]
        return model(**{str(key): value for key, value in data.items()})
    except pydantic.ValidationError as err:
        errors = err.errors(include_url=False)
        first = tuple(errors[0].get("loc", ()))
        others = [e for e in errors[1:] if first[:len(e.get("loc", ()))] != tuple(e["loc"])]
        more = f" (and {len(others)} more)" if others else ""
        raise SpeechrankError(describe_error(errors[0], where) + more) from None


def read_toml(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """The tables of a TOML file, or one :class:`SpeechrankError` line naming ``what`` the
    file is ("recipe"), its path and what is wrong (missing, unreadable, not TOML)."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpeechrankError(f"{what} {path}: not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpeechrankError(f"{what} {path}: cannot be read ({err})") from None
    except tomllib.TOMLDecodeError as err:
        raise SpeechrankError(f"{what} {path}: not valid TOML ({err})") from None
