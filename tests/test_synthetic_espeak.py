"""The eSpeak NG ctypes binding: struct layout, labels, determinism, text-to-phonemes."""

from __future__ import annotations

import ctypes
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speechrank.audio import synthetic_grammar as grammar
from speechrank.audio.synthetic_espeak import (
    STRESS_MARKS,
    EspeakEvent,
    Voice,
    clean_phone,
    engine,
    espeak_version,
    language_switches,
    phonemize,
    strip_stress,
    variant_names,
)
from speechrank.audio.synthetic_voices import ACCENTS, available_variants
from speechrank.errors import SpeechrankError


def _align(offset: int, alignment: int) -> int:
    return (offset + alignment - 1) // alignment * alignment


def test_event_struct_matches_the_c_layout() -> None:
    # speak_lib.h: six 4-byte ints, a void*, then a union of int / char* / char[8].
    pointer = ctypes.sizeof(ctypes.c_void_p)
    user_data = _align(24, pointer)
    union = _align(user_data + pointer, pointer)
    assert EspeakEvent.type.offset == 0
    assert EspeakEvent.unique_identifier.offset == 4
    assert EspeakEvent.text_position.offset == 8
    assert EspeakEvent.length.offset == 12
    assert EspeakEvent.audio_position.offset == 16
    assert EspeakEvent.sample.offset == 20
    assert EspeakEvent.user_data.offset == user_data
    assert EspeakEvent.id.offset == union
    assert ctypes.sizeof(EspeakEvent) == _align(union + max(8, pointer), pointer)
    if pointer == 8:
        assert ctypes.sizeof(EspeakEvent) == 40


def test_version_and_variants() -> None:
    assert espeak_version()[0].isdigit()
    assert {"m1", "f1"} <= set(variant_names())
    assert len(available_variants()) >= 40


def test_synthesis_gives_ordered_phones_inside_the_audio() -> None:
    syn = engine().synthesize("Seven birds fly home.", Voice("en-us+m3", 160, 40, 60))
    assert syn.sample_rate == 22_050
    assert syn.audio.dtype == np.int16 and syn.audio.size > 0.5 * syn.sample_rate
    assert [p for *_, p in syn.phones][:5] == ["s", "ɛ", "v", "ə", "n"]
    previous_end = 0
    for start, end, phone in syn.phones:
        assert previous_end <= start <= end <= syn.audio.size
        assert phone and not any(mark in phone for mark in STRESS_MARKS)
        previous_end = end


def test_phones_without_duration_are_kept_and_modifiers_joined() -> None:
    # British "twelve": the /l/ has no duration of its own; Scottish "eʲ" comes as two events.
    twelve = engine().synthesize("Twelve friendly uncles.", Voice("en-gb-x-gbcwmd+m1")).phones
    names = [p for *_, p in twelve]
    assert names[:5] == ["t", "w", "ɛ", "l", "v"]
    assert twelve[3][0] == twelve[3][1] == twelve[4][0]
    assert sum(1 for s, e, _ in twelve if s == e) == 1
    scots = [p for *_, p in engine().synthesize("piano", Voice("en-gb-scotland")).phones]
    assert scots == phonemize("piano", "en-gb-scotland")
    assert any(p.endswith("ʲ") and len(p) > 1 for p in scots)
    assert phonemize("basket", "en-gb-scotland")[1] == "aː"  # eSpeak writes "a:"


def test_synthesis_does_not_depend_on_what_was_spoken_before() -> None:
    voice = Voice("en-us+m3", 170, 45, 55)
    first = engine().synthesize("Hello there, seven birds fly home.", voice)
    engine().synthesize("Something else entirely.", Voice("en+f2", 300, 20, 90))
    engine().synthesize("Und noch etwas anderes.", Voice("de+klatt2", 120, 80, 10))
    again = engine().synthesize("Hello there, seven birds fly home.", voice)
    assert first.audio.tobytes() == again.audio.tobytes()
    assert first.phones == again.phones


def test_synthesis_does_not_depend_on_the_clock() -> None:
    # Breathy variants (f2) draw noise from eSpeak's own generator, which espeak_Initialize
    # seeds from time(): without a reseed, the same call a second later differs.
    voice = Voice("en-gb-x-gbclan+f2", 194, 76, 32)
    first = engine().synthesize("no", voice)
    time.sleep(1.1)
    again = engine().synthesize("no", voice)
    assert first.audio.tobytes() == again.audio.tobytes()
    other = engine().synthesize("no", Voice("en-gb-x-gbclan+f2", 194, 76, 33))
    assert other.audio.tobytes() != first.audio.tobytes()


def test_voice_parameters_change_the_audio() -> None:
    slow = engine().synthesize("five", Voice("en-us+m1", 120))
    fast = engine().synthesize("five", Voice("en-us+m1", 300))
    assert slow.audio.size > 1.3 * fast.audio.size


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), language=st.sampled_from(sorted(grammar.GENERATORS)))
def test_phonemize_matches_the_synthesis_labels(seed: int, language: str) -> None:
    rng = np.random.default_rng(seed)
    text = grammar.sentence(language, rng)
    accent = ACCENTS[language][int(rng.integers(len(ACCENTS[language])))]
    variants = available_variants()
    voice = Voice(f"{accent}+{variants[int(rng.integers(len(variants)))]}")
    labelled = [phone for *_, phone in engine().synthesize(text, voice).phones]
    assert phonemize(text, accent) == labelled


def test_phonemize_known_words() -> None:
    assert phonemize("yes", "en-us") == ["j", "ɛ", "s"]
    assert phonemize("yes no", "en-us") == ["j", "ɛ", "s", "n", "oʊ"]
    assert phonemize("", "en-us") == []
    assert strip_stress("ˈaʊ") == "aʊ" and strip_stress("ˌoʊ") == "oʊ"
    assert clean_phone("ˈa:") == "aː"


def test_language_switches_are_reported_and_dropped_from_phones() -> None:
    text = "Seven birds fly home across the water"
    assert "en" in language_switches(text, "de")
    assert language_switches("Der Hund sieht den Ball.", "de") == []
    assert not any(p.startswith("(") for p in phonemize(text, "de"))
    phones = [p for *_, p in engine().synthesize(text, Voice("de")).phones]
    assert not any(p.startswith("(") for p in phones)


def test_bad_voices_are_user_errors() -> None:
    with pytest.raises(SpeechrankError, match="no voice"):
        engine().synthesize("hello", Voice("xx-nonexistent"))
    with pytest.raises(SpeechrankError, match="rate"):
        engine().synthesize("hello", Voice("en-us", rate=20))
    with pytest.raises(SpeechrankError, match="no voice"):
        phonemize("hello", "xx-nonexistent")


def test_a_second_loader_of_the_library_is_detected() -> None:
    import _ctypes

    import espeakng_loader

    eng = engine()
    assert eng.isolated()
    other = ctypes.CDLL(espeakng_loader.get_library_path())
    try:
        assert not eng.isolated()
        with pytest.raises(RuntimeError, match="deterministic"):
            eng.synthesize("hello", Voice("en-us"))
    finally:
        _ctypes.dlclose(other._handle)
    assert eng.isolated()
    assert eng.synthesize("hello", Voice("en-us")).phones
