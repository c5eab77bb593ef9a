"""validate(): one line naming the place, the key, the value and what is allowed."""

from __future__ import annotations

from typing import Literal

import pydantic
import pytest

from speechrank.errors import SpeechrankError
from speechrank.validation import STRICT, validate


class Inner(pydantic.BaseModel):
    model_config = STRICT
    train: int = pydantic.Field(gt=0)


class Example(pydantic.BaseModel):
    model_config = STRICT
    seed: int = 0
    solver: Literal["lbfgs", "sklearn"] = "lbfgs"
    caps: Inner | None = None


def test_valid_values_pass_and_defaults_fill():
    assert validate(Example, {"seed": 3}, where="x").seed == 3
    assert validate(Example, {}, where="x").solver == "lbfgs"


@pytest.mark.parametrize(("data", "expected"), [
    ({"seed": "x"}, "cfg seed = 'x': Input should be a valid integer"),
    ({"seed": True}, "cfg seed = True: Input should be a valid integer"),
    ({"solver": "adam"}, "cfg solver = 'adam': Input should be 'lbfgs' or 'sklearn'"),
    ({"nope": 1}, "cfg nope: unknown key"),
    ({"caps": {"train": -1}}, "cfg caps.train = -1: Input should be greater than 0"),
    ({"caps": {}}, "cfg caps.train: missing (required)"),
])
def test_errors_are_one_line_naming_key_value_and_rule(data, expected):
    with pytest.raises(SpeechrankError) as info:
        validate(Example, data, where="cfg")
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


def test_a_non_table_is_refused():
    with pytest.raises(SpeechrankError, match="expected a table"):
        validate(Example, [1, 2], where="cfg")
