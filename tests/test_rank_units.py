"""Unit tests of the rank pipeline's pure parts: layer parsing and frame quotas."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from speechrank.errors import SpeechrankError
from speechrank.rank import frame_quotas, parse_choices, parse_layers

LAYERS = ["cnn", "0", "1", "2", "3", "4"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, ["0", "1", "2", "3", "4"]),
        ("all", ["0", "1", "2", "3", "4"]),
        ("0,3", ["0", "3"]),
        ("1-3", ["1", "2", "3"]),
        ("cnn,4", ["cnn", "4"]),
        ("-1", ["4"]),
        ("2,2,1", ["2", "1"]),
        (["0", "cnn"], ["0", "cnn"]),
    ],
)
def test_parse_layers(spec, expected):
    assert parse_layers(spec, LAYERS) == expected


@pytest.mark.parametrize("spec", ["7", "x", "2-9", "", "a-b"])
def test_parse_layers_rejects_unknown(spec):
    with pytest.raises(SpeechrankError):
        parse_layers(spec, LAYERS)


def test_parse_choices():
    assert parse_choices("sum,frames", ["sum", "mean", "frames"], "pooling", ["sum"]) == [
        "sum", "frames"]
    assert parse_choices(None, ["a", "b"], "x", ["a"]) == ["a"]
    assert parse_choices("all", ["a", "b"], "x", ["a"]) == ["a", "b"]
    with pytest.raises(SpeechrankError, match="unknown pooling 'max'"):
        parse_choices("max", ["sum", "mean", "frames"], "pooling", ["sum"])


@given(st.lists(st.integers(min_value=1, max_value=500), min_size=1, max_size=60),
       st.integers(min_value=1, max_value=5000))
def test_frame_quotas_water_filling(counts, max_frames):
    quotas = frame_quotas(counts, max_frames)
    assert len(quotas) == len(counts)
    assert sum(quotas) == min(max_frames, sum(counts))
    assert all(0 <= q <= n for q, n in zip(quotas, counts, strict=True))
    # Even spread: an utterance that gives fewer than all its frames gives at least as many
    # as every other utterance, minus one (the leftover frames).
    open_quotas = [q for q, n in zip(quotas, counts, strict=True) if q < n]
    if open_quotas:
        assert max(quotas) - min(open_quotas) <= 1


def test_frame_quotas_known_answer():
    assert frame_quotas([10, 2, 10], 12) == [5, 2, 5]
    assert frame_quotas([10, 2, 10], 13) == [6, 2, 5]
    assert frame_quotas([3, 3], 100) == [3, 3]
    assert frame_quotas([], 10) == []
