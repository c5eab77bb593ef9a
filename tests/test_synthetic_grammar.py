"""Sentence generators, keyword lists and speaker recipes of the synthetic corpus."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speechrank.audio import synthetic_grammar as grammar
from speechrank.audio.synthetic_espeak import language_switches
from speechrank.audio.synthetic_voices import (
    ACCENTS,
    Speaker,
    available_variants,
    draw_speakers,
)
from speechrank.errors import SpeechrankError

LANGUAGES = sorted(grammar.GENERATORS)


@pytest.mark.parametrize("language", LANGUAGES)
def test_sentences_are_seeded(language: str) -> None:
    def draw(seed: int) -> list[str]:
        rng = np.random.default_rng(seed)
        return [grammar.sentence(language, rng) for _ in range(20)]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
    assert len(set(draw(5))) >= 18


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), language=st.sampled_from(LANGUAGES))
def test_sentences_are_well_formed(seed: int, language: str) -> None:
    text = grammar.sentence(language, np.random.default_rng(seed))
    body = text.lstrip("¿")
    assert body[0].isupper()
    assert text[-1] in ".?"
    assert "  " not in text and " ," not in text and ",," not in text
    assert 2 <= len(text.split()) <= 30
    if language == "de":
        assert not re.search(r"ee\b|eeen\b|een\b", text), text  # leise + -e/-en merged
    if language == "es":
        assert not re.search(r"\b(a|de) el\b", text.lower()), text  # al, del


def test_keyword_lists() -> None:
    assert len(set(grammar.KEYWORDS["en"])) >= 20
    assert {"yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"} <= set(
        grammar.KEYWORDS["en"]
    )
    for language in LANGUAGES:
        words = grammar.KEYWORDS[language]
        assert len(set(words)) == len(words) >= 20


@pytest.mark.parametrize("language", LANGUAGES)
def test_vocabulary_is_read_with_the_language_own_rules(language: str) -> None:
    words = grammar.vocabulary(language)
    assert len(words) > 100
    switched = [w for w in words if language_switches(w, ACCENTS[language][0])]
    assert switched == []


def test_speakers_are_distinct_recipes_with_stable_ids() -> None:
    variants = available_variants()
    taken: set[str] = set()
    rng = np.random.default_rng(0)
    speakers = draw_speakers("en", 60, rng, variants, taken)
    ids = [s.id for s in speakers]
    assert len(set(ids)) == 60 == len(taken)
    assert len({(s.accent, s.variant) for s in speakers}) == 60
    assert {s.accent for s in speakers} == set(ACCENTS["en"])
    more = draw_speakers("en", 10, rng, variants, taken)
    assert not {s.id for s in more} & set(ids)
    speaker = Speaker("en", "en-us", "m3", 42, 61, 160)
    assert speaker.id == "en-us_m3_p42_r61_w160"
    assert speaker.voice().name == "en-us+m3"
    jittered = speaker.voice(np.random.default_rng(1))
    assert abs(jittered.rate - 160) <= 7 and abs(jittered.pitch - 42) <= 3


def test_unknown_language_for_speakers() -> None:
    with pytest.raises(SpeechrankError, match="no synthetic voices"):
        draw_speakers("xx", 1, np.random.default_rng(0), ["m1"], set())
