"""A probe recipe from a flat table of keys: a sweep's ``[[probe]]`` table or ``probe --recipe``.

A table may set any field of its probe kind's recipe (:mod:`speechrank.probes.config`) and, for
the logistic kinds, any field of the recipe's :class:`~speechrank.probes.config.LogisticConfig`
under its own name::

    c_grid = [0.1, 1.0]     # LogisticConfig.c_grid: C tried on dev
    max_iter = 100          # LogisticConfig.max_iter
    fit_dtype = "float32"   # LogisticConfig.fit_dtype
    solver = "sklearn"      # LogisticConfig.solver: torch (batched) or sklearn
    max_frames = 2500       # FrameProbeConfig.max_frames: train 2500, dev and test 1250 each
    max_audio_seconds = {train = 600, dev = 120, test = 120}

The per-split caps take a table of train, dev and test, or one number for train (dev and test
then get half of it each). The keys and their checks are read from the recipe dataclasses,
so a field added to a recipe is a key of the table, checked by its own type, with nothing else
to edit. A table is checked by type and range before anything runs (:data:`RecipeTable`); that
its keys apply to the task's kind is checked once the kind is known (:func:`recipe_with`).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

import pydantic
from pydantic import BeforeValidator

from speechrank.errors import SpeechrankError
from speechrank.probes.config import FrameCaps, ProbeConfig, SecondCaps
from speechrank.probes.drivers import DRIVERS
from speechrank.validation import STRICT, read_toml, validate

__all__ = ["RecipeTable", "read_recipe", "recipe_keys", "recipe_with", "table_model"]


def _one_number_for_train(value: Any) -> Any:
    """A per-split cap given as one number: train gets it, dev and test half of it each."""
    if isinstance(value, Mapping):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("expected a positive number (train; dev and test get half) or a "
                         "table of train, dev and test values")
    half = value / 2 if isinstance(value, float) else value // 2
    return {"train": value, "dev": half, "test": half}


#: Table types of fields whose value is a per-split table (one number is also accepted).
_PER_SPLIT = {FrameCaps, SecondCaps}


def recipe_keys(config_type: type) -> dict[str, tuple[str, ...]]:
    """The table keys of a recipe type and where each lands: ``("max_iter",)`` for a field of
    the recipe, ``("logistic", "max_iter")`` for one of a nested recipe."""
    keys: dict[str, tuple[str, ...]] = {}
    hints = typing.get_type_hints(config_type)
    for field in dataclasses.fields(config_type):
        inner = hints[field.name]
        if dataclasses.is_dataclass(inner):
            for name in recipe_keys(inner):  # type: ignore[arg-type]
                keys[name] = (field.name, name)
        else:
            keys[field.name] = (field.name,)
    return keys


def _key_types(config_type: type) -> dict[str, Any]:
    """Each table key's annotated type (with its checks), nested recipes flattened."""
    types: dict[str, Any] = {}
    hints = typing.get_type_hints(config_type, include_extras=True)
    for field in dataclasses.fields(config_type):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            types.update(_key_types(hint))  # type: ignore[arg-type]
        elif hint in _PER_SPLIT:
            types[field.name] = Annotated[hint, BeforeValidator(_one_number_for_train)]
        else:
            types[field.name] = hint
    return types


def table_model(config_types: Iterable[type], name: str = "RecipeTable"
                ) -> type[pydantic.BaseModel]:
    """A strict pydantic model of every key any of ``config_types`` takes (all optional)."""
    fields: dict[str, Any] = {}
    for config_type in config_types:
        for key, hint in _key_types(config_type).items():
            if key in fields and fields[key][0] != hint | None:
                raise TypeError(f"recipe key {key} has two types")
            fields[key] = (hint | None, None)
    return pydantic.create_model(name, __config__=STRICT, **fields)


#: Every key a probe recipe table may hold, with its checks (the union over probe kinds).
RecipeTable = table_model(driver.config_type for driver in DRIVERS.values())


def _fields_of(config: Any) -> dict[str, Any]:
    return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}


def recipe_with(config: ProbeConfig, table: Mapping[str, Any], *, kind: str,
                where: str = "probe recipe") -> ProbeConfig:
    """``config`` with the keys of ``table`` set, or one :class:`SpeechrankError` line.

    ``kind`` names the probe kind in the message when a key does not apply to it; ``where``
    names the table (a file, a sweep's ``[[probe]]``).
    """
    given = validate(RecipeTable, table, where=where).model_dump(exclude_unset=True)
    paths = recipe_keys(type(config))
    foreign = sorted(set(given) - set(paths))
    if foreign:
        raise SpeechrankError(f"{where}: probe option(s) {foreign} do not apply to a {kind} "
                              f"probe")
    changes: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in given.items():
        path = paths[key]
        if len(path) == 1:
            changes[key] = value
        else:
            nested.setdefault(path[0], {})[path[1]] = value
    for field, values in nested.items():
        inner = getattr(config, field)
        changes[field] = validate(type(inner), {**_fields_of(inner), **values}, where=where)
    return validate(type(config), {**_fields_of(config), **changes}, where=where)


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The recipe table of a TOML file (``speechrank probe --recipe``), checked by type and
    range (:data:`RecipeTable`); only the keys the file sets."""
    raw = read_toml(path, "recipe")
    return validate(RecipeTable, raw, where=str(path)).model_dump(exclude_unset=True)
