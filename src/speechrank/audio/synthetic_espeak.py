"""A small ctypes binding to the eSpeak NG speech synthesiser, made deterministic.

eSpeak NG (https://github.com/espeak-ng/espeak-ng, GPL-3.0) is loaded from the shared library
and voice data shipped by the ``espeakng-loader`` wheel; nothing is installed system-wide and
nothing is downloaded. The binding follows the public C API of ``speak_lib.h`` (API revision
12): ``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, espeakINITIALIZE_PHONEME_EVENTS
| espeakINITIALIZE_PHONEME_IPA)`` returns the sample rate (22,050 Hz) and makes the synth
callback deliver the audio together with one ``espeakEVENT_PHONEME`` event per phoneme, whose
``sample`` field is the exact sample index at which the phoneme starts and whose ``id.string``
holds its IPA name (UTF-8, at most 8 bytes, zero-terminated unless it needs all 8).

Two properties of the C library shape this module:

* it is **process-global** (one voice, one set of parameters, one callback per process), so
  every call goes through one :class:`Engine` per process, guarded by a lock;
* its waveform generator keeps **static state across utterances** (pitch flutter index,
  wave phase, ...) that ``espeak_Terminate``/``espeak_Initialize`` and
  ``espeak_ng_SetRandSeed`` do not reset: the same text and voice give different samples
  depending on what was spoken before. To make each utterance a pure function of its inputs,
  :meth:`Engine.synthesize` unloads the library (``dlclose``) and loads it afresh before every
  utterance, which re-initialises all of its static data; this costs about 1 ms. The unload is
  verified with ``dlopen(RTLD_NOLOAD)``: a library that stays loaded because some other code
  in the process also loaded it would silently break determinism, so that is an error.
* its own random generator (the breath noise of variants such as ``f2``) is **seeded from the
  clock** by ``espeak_Initialize``, so the same call gave different audio a second later;
  :meth:`Engine.synthesize` reseeds it with ``espeak_ng_SetRandSeed`` from a hash of the text
  and the voice before speaking.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import os
import re
import sys
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from speechrank.errors import SpeechrankError

# speak_lib.h constants (API revision 12).
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_PHONEME_IPA = 0x0002
CHARS_UTF8 = 1
POS_CHARACTER = 1
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EVENT_SENTENCE = 2
EVENT_END = 5
EVENT_MSG_TERMINATED = 6
EVENT_PHONEME = 7
EVENT_SAMPLERATE = 8
PARAM_RATE = 1
PARAM_VOLUME = 2
PARAM_PITCH = 3
PARAM_RANGE = 4
PHONEMES_IPA = 0x02
RATE_MINIMUM = 80
RATE_MAXIMUM = 450

#: Suprasegmental marks that eSpeak attaches to the first phone of a stressed syllable; phone
#: labels drop them so that a stressed and an unstressed vowel are the same phone.
STRESS_MARKS = ("ˈ", "ˌ")
#: eSpeak marks a switch to another language's rules inside a text as ``(en)`` ... ``(de)``.
_LANGUAGE_SWITCH = re.compile(r"\([A-Za-z0-9-]+\)")
#: Separator asked of ``espeak_TextToPhonemes`` between phone names (bits 8-23 of the mode).
_PHONE_SEPARATOR = "_"


class _EventId(ctypes.Union):
    """``union id`` of ``espeak_EVENT``."""

    _fields_ = (
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),
    )


class EspeakEvent(ctypes.Structure):
    """``espeak_EVENT`` from ``speak_lib.h``: 40 bytes on LP64, the union at offset 32."""

    _fields_ = (
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    )


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(EspeakEvent)
)


@dataclasses.dataclass(frozen=True)
class Voice:
    """What eSpeak is asked to speak with.

    ``name`` is an eSpeak voice name, optionally with a variant (``en-us+m3``); ``rate`` is in
    words per minute (80-450, 175 normal); ``pitch`` and ``pitch_range`` are eSpeak's 0-100
    scales (50 = the voice's own base pitch and range).
    """

    name: str
    rate: int = 175
    pitch: int = 50
    pitch_range: int = 50


@dataclasses.dataclass(frozen=True)
class Synthesis:
    """One synthesised utterance at eSpeak's own rate.

    ``phones`` holds ``(start_sample, end_sample, ipa)`` for every phone, in order and without
    overlap: a phone runs from its own event to the next phoneme or pause event (``start ==
    end`` for the rare phone eSpeak gives no duration). Pauses are not listed (the gaps between
    phones are silence), stress marks are stripped.
    """

    audio: np.ndarray  # int16, mono
    sample_rate: int
    phones: tuple[tuple[int, int, str], ...]


def strip_stress(phone: str) -> str:
    """``"ˈaʊ"`` -> ``"aʊ"``: drop eSpeak's primary and secondary stress marks."""
    for mark in STRESS_MARKS:
        phone = phone.replace(mark, "")
    return phone


def clean_phone(phone: str) -> str:
    """A phone label: stress marks dropped, and the ASCII colon that a few eSpeak phoneme
    tables use for length (Scottish ``a:``) written as the IPA length mark ``ː``."""
    return strip_stress(phone).replace(":", "ː")


def _library_path() -> str:
    import espeakng_loader

    return str(espeakng_loader.get_library_path())


def _data_path() -> str:
    import espeakng_loader

    return str(espeakng_loader.get_data_path())


def _still_loaded(path: str) -> bool:
    """Whether the shared library at ``path`` is still loaded (``dlopen`` with RTLD_NOLOAD)."""
    import _ctypes

    mode = getattr(os, "RTLD_NOLOAD", None)
    if mode is None or sys.platform == "win32":  # pragma: no cover - POSIX only
        return False
    try:
        handle = _ctypes.dlopen(path, mode | os.RTLD_LAZY)  # type: ignore[attr-defined]
    except OSError:
        return False
    _ctypes.dlclose(handle)  # type: ignore[attr-defined]
    return True


def _dlclose(handle: int) -> None:
    import _ctypes

    if sys.platform == "win32":  # pragma: no cover - not a supported platform for the corpus
        _ctypes.FreeLibrary(handle)  # type: ignore[attr-defined]
    else:
        _ctypes.dlclose(handle)  # type: ignore[attr-defined]


def _rand_seed(text: str, voice: Voice) -> int:
    """A seed for eSpeak's random generator that depends only on what is spoken and how."""
    key = f"{voice.name}|{voice.rate}|{voice.pitch}|{voice.pitch_range}|{text}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x7FFFFFFF


class Engine:
    """The process's eSpeak NG instance. Use :func:`engine` to get it; every method locks."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._lib: ctypes.CDLL | None = None
        self._pristine = False
        self._sample_rate = 0
        self._chunks: list[bytes] = []
        self._events: list[tuple[int, int, str]] = []
        self._callback = _SYNTH_CALLBACK(self._on_synth)
        self._library_path = _library_path()
        self._data_path = _data_path()

    # -- library lifetime -------------------------------------------------------------------
    def _load(self) -> ctypes.CDLL:
        try:
            lib = ctypes.CDLL(self._library_path)
        except OSError as exc:
            raise SpeechrankError(
                f"cannot load the eSpeak NG library {self._library_path}: {exc}"
            ) from exc
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
        lib.espeak_SetSynthCallback.argtypes = (_SYNTH_CALLBACK,)
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = (
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        )
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = (
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_int,
            ctypes.c_int,
        )
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = (ctypes.c_void_p,)
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_Terminate.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = (ctypes.c_long,)
        lib.espeak_ng_SetRandSeed.restype = None
        rate = lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS,
            0,
            self._data_path.encode(),
            INITIALIZE_PHONEME_EVENTS | INITIALIZE_PHONEME_IPA,
        )
        if rate <= 0:
            raise SpeechrankError(f"eSpeak NG failed to initialise with data {self._data_path}")
        lib.espeak_SetSynthCallback(self._callback)
        self._sample_rate = int(rate)
        return lib

    def _unload(self) -> None:
        if self._lib is None:
            return
        lib, self._lib = self._lib, None
        lib.espeak_Terminate()
        handle = lib._handle
        del lib
        _dlclose(handle)
        if _still_loaded(self._library_path):
            raise RuntimeError(
                "libespeak-ng stays loaded after dlclose (another component of this process "
                "also loaded it), so synthesis cannot be made deterministic in this process"
            )

    def isolated(self) -> bool:
        """Whether this engine is the library's only user in the process, so that
        :meth:`synthesize` can reset it (unloads the engine's own copy to find out)."""
        with self._lock:
            self._unload()
            return not _still_loaded(self._library_path)

    def _fresh(self) -> ctypes.CDLL:
        """A library whose static state is exactly as after loading."""
        if self._lib is not None and self._pristine:
            return self._lib
        self._unload()
        if _still_loaded(self._library_path):
            raise RuntimeError(
                "libespeak-ng was loaded by another component of this process, so its state "
                "cannot be reset and synthesis would not be deterministic"
            )
        self._lib = self._load()
        self._pristine = True
        return self._lib

    def _any(self) -> ctypes.CDLL:
        """A loaded library, pristine or not (for calls that do not depend on its state)."""
        if self._lib is None:
            self._lib = self._load()
            self._pristine = True
        return self._lib

    @property
    def sample_rate(self) -> int:
        with self._lock:
            self._any()
            return self._sample_rate

    def version(self) -> str:
        """eSpeak NG's version string, e.g. ``"1.52.0"``."""
        with self._lock:
            raw = self._any().espeak_Info(None)
            return raw.decode() if raw else "unknown"

    # -- synthesis ----------------------------------------------------------------------------
    def _on_synth(self, wav, n_samples, events) -> int:  # type: ignore[no-untyped-def]
        if wav and n_samples > 0:
            self._chunks.append(ctypes.string_at(wav, n_samples * 2))
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == EVENT_PHONEME:
                name = bytes(event.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                if not _LANGUAGE_SWITCH.fullmatch(name):
                    self._events.append((int(event.sample), EVENT_PHONEME, name))
            elif event.type in (EVENT_END, EVENT_SENTENCE, EVENT_MSG_TERMINATED):
                self._events.append((int(event.sample), int(event.type), ""))
            i += 1
        return 0

    def _set_voice(self, lib: ctypes.CDLL, voice: Voice) -> None:
        if lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise SpeechrankError(f"eSpeak NG has no voice named {voice.name!r}")
        if not RATE_MINIMUM <= voice.rate <= RATE_MAXIMUM:
            raise SpeechrankError(
                f"speaking rate {voice.rate} is outside eSpeak's {RATE_MINIMUM}-{RATE_MAXIMUM}"
            )
        for param, value in (
            (PARAM_RATE, voice.rate),
            (PARAM_PITCH, voice.pitch),
            (PARAM_RANGE, voice.pitch_range),
        ):
            if lib.espeak_SetParameter(param, int(value), 0) != 0:
                raise SpeechrankError(f"eSpeak NG rejected parameter {param}={value}")

    def synthesize(self, text: str, voice: Voice) -> Synthesis:
        """Speak ``text`` (UTF-8 plain text) with ``voice``; a pure function of its inputs."""
        with self._lock:
            lib = self._fresh()
            self._pristine = False
            self._chunks = []
            self._events = []
            self._set_voice(lib, voice)
            lib.espeak_ng_SetRandSeed(_rand_seed(text, voice))
            data = text.encode("utf-8") + b"\0"
            status = lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
            if status != 0:
                raise SpeechrankError(f"eSpeak NG could not speak {text!r} (status {status})")
            audio = np.frombuffer(b"".join(self._chunks), dtype=np.int16).copy()
            events, self._chunks, self._events = self._events, [], []
        return Synthesis(audio, self._sample_rate, _phone_segments(events, len(audio)))

    def phoneme_clauses(self, text: str, voice_name: str) -> list[str]:
        """``espeak_TextToPhonemes`` output, one string per clause, as eSpeak returns it
        (IPA with stress marks, phones separated by ``_``, words by spaces, language switches
        marked ``(en)``)."""
        with self._lock:
            lib = self._any()
            self._pristine = False
            if lib.espeak_SetVoiceByName(voice_name.encode()) != 0:
                raise SpeechrankError(f"eSpeak NG has no voice named {voice_name!r}")
            buffer = ctypes.create_string_buffer(text.encode("utf-8"))
            pointer = ctypes.c_void_p(ctypes.addressof(buffer))
            mode = PHONEMES_IPA | (ord(_PHONE_SEPARATOR) << 8)
            clauses: list[str] = []
            while pointer.value:
                raw = lib.espeak_TextToPhonemes(ctypes.byref(pointer), CHARS_UTF8, mode)
                if not raw:
                    break
                clauses.append(raw.decode("utf-8", "replace"))
            return clauses

    def text_to_phonemes(self, text: str, voice_name: str) -> list[str]:
        """IPA phones of ``text`` (:func:`clean_phone`), word boundaries and language switches
        dropped."""
        phones: list[str] = []
        for clause in self.phoneme_clauses(text, voice_name):
            for word in _LANGUAGE_SWITCH.sub(" ", clause).split():
                phones.extend(p for p in map(clean_phone, word.split(_PHONE_SEPARATOR)) if p)
        return phones


def _is_modifier(phone: str) -> bool:
    """IPA modifier letters and diacritics alone (``ʲ``, ``ʰ``, ``ː``), not a phone."""
    return all(unicodedata.category(c) in ("Lm", "Mn", "Sk") for c in phone)


def _phone_segments(
    events: Sequence[tuple[int, int, str]], n_samples: int
) -> tuple[tuple[int, int, str], ...]:
    """Turn phoneme events into ``(start, end, phone)`` segments.

    A phone ends where the next event (phoneme, pause or end of clause) starts, or at the end
    of the audio. Pauses (phoneme events with an empty name) are dropped. A phone that eSpeak
    gives no duration (its event shares a sample with the next one, e.g. the ``l`` of
    "twelve" in British accents) is kept with ``start == end``, so that the sequence matches
    :func:`phonemize`; a modifier emitted as an event of its own (the ``ʲ`` of Scottish
    ``eʲ``) is joined to the phone before it, as ``espeak_TextToPhonemes`` writes it.
    """
    ordered = sorted(events, key=lambda event: event[0])  # stable: equal samples keep order
    segments: list[tuple[int, int, str]] = []
    for index, (sample, kind, name) in enumerate(ordered):
        phone = clean_phone(name) if kind == EVENT_PHONEME else ""
        if not phone:
            continue
        start = min(max(sample, 0), n_samples)
        end = n_samples if index + 1 == len(ordered) else min(ordered[index + 1][0], n_samples)
        end = max(end, start)
        if _is_modifier(phone) and segments and segments[-1][1] == start:
            previous = segments.pop()
            segments.append((previous[0], end, previous[2] + phone))
        else:
            segments.append((start, end, phone))
    return tuple(segments)


_ENGINE: Engine | None = None
_ENGINE_LOCK = threading.Lock()


def engine() -> Engine:
    """This process's :class:`Engine` (created on first use)."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = Engine()
        return _ENGINE


def phonemize(text: str, language: str = "en-us") -> list[str]:
    """IPA phones of ``text`` as eSpeak NG pronounces it, e.g. ``["h", "ə", "l", "oʊ"]``.

    ``language`` is an eSpeak voice name (``en-us``, ``en``, ``de``, ``es``, ...). Uses
    ``espeak_TextToPhonemes`` with IPA output; stress marks are stripped (:func:`clean_phone`)
    and word boundaries dropped, so the list matches the phones that :meth:`Engine.synthesize`
    labels for the same text and voice. For CTC phoneme targets of corpora that only have
    transcripts.
    """
    return engine().text_to_phonemes(text, language)


def language_switches(text: str, language: str) -> list[str]:
    """Languages eSpeak switches to inside ``text`` (``["en"]`` for an English loan word in
    German text, say); empty when it reads everything with ``language``'s own rules."""
    found: list[str] = []
    for clause in engine().phoneme_clauses(text, language):
        found += [m.group(0)[1:-1] for m in _LANGUAGE_SWITCH.finditer(clause)]
    return [x for x in found if x.lower() != language.lower()]


def espeak_version() -> str:
    """Version of the eSpeak NG library in use."""
    return engine().version()


def variant_names() -> list[str]:
    """Voice variants present in the eSpeak NG data directory (``voices/!v``), sorted."""
    folder = Path(_data_path()) / "voices" / "!v"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file())
