"""The built-in synthetic labelled speech corpus (``speechrank corpus OUT``).

Speech is synthesised with eSpeak NG (through :mod:`.synthetic_espeak`), so the corpus needs no
download, is generated in seconds, and comes with exact labels: transcripts, keywords,
speakers, accents and **time-aligned phones** taken from eSpeak's own phoneme events.

Design, and why
---------------
Downstream, the corpus serves three things: pretraining the built-in small SSL encoder, probing
its layers (speaker identification, keyword spotting, frame-level phone classification and
phoneme recognition), and checking the probes out of domain. Their needs differ, so the corpus
is made of groups of disjoint speakers:

============== ================== ===========================================================
manifest        speakers           purpose
============== ================== ===========================================================
pretrain.jsonl  pretrain speakers  SSL pretraining (main language); labels present but unused.
train.jsonl     probe speakers     probe training; the *same* probe speakers appear in
dev.jsonl                          train, dev and test (closed set, stratified per speaker),
test.jsonl                         as speaker identification requires; keywords and phones
                                   are tested here on unseen *utterances* of seen speakers.
test_unseen     held-out speakers  keyword and phone probes on *unseen speakers* whose voice
.jsonl                             variants (timbres) occur nowhere else in the corpus; not
                                   for speaker ID (its speakers are unknown to any probe).
ood_XX.jsonl    XX speakers        one closed-set train/dev/test corpus per further language
                                   XX (German, Spanish): the out-of-domain probes, with their
                                   own keywords and phone inventory. ``split`` says which.
============== ================== ===========================================================

Pretrain speakers never occur in the probe manifests, so probes measure what the encoder
learnt about speech, not about particular voices. The main language is ``languages[0]``
(English by default); the others become ``ood_XX.jsonl``.

Within a closed-set group every speaker has at least three keyword clips, dealt to train, dev
and test, so each speaker is in every split; further clips of each kind follow a
train/dev/test pattern (``probe_splits``, 3:1:1 by default) rotated by the speaker's index,
so that the splits keep those proportions for sentences and keywords alike. The demo uses
2:1:3, so that its test scores rest on enough clips to show a gain above their noise.
Keywords are dealt to the keyword slots of each split from a reshuffled deck, so every split
holds every keyword about equally often.

Sizes: ``minutes`` is a target for the total audio (the estimate is made from word counts
before synthesis; the summary reports what was made). It is shared out as 35 % pretrain,
45 % probe, 8 % test_unseen and 12 % for the other languages (40/50/10 with one language).
Keyword clips make up 15 % of pretrain audio and 60 % of the other groups (keywords are short
and a 20-class probe needs many of them). The number of probe speakers defaults to
``clamp(probe seconds / 12, 2, 40)`` (40 from about 18 minutes on) and can be set; a corpus
never shrinks below three keyword clips per probe speaker, even if that exceeds ``minutes``.

Each clip is 16 kHz mono 16-bit PCM. Keyword clips are 1 s long (longer words keep their
length); sentences are mostly 1-7 s. How the audio is levelled, padded and mixed with noise is
described in :mod:`.synthetic_render`. Noise (``snr_db``: ``None`` for clean speech, a number,
or a ``(low, high)`` range drawn uniformly per clip) matters: clean synthetic keywords are so
easy that keyword probes score near 1 from random initialisation on, leaving training nothing
to show, hence the default of :data:`DEFAULT_SNR_DB`. The pretraining clips are clean by default
(``pretrain_snr_db``): the default pretraining recipe adds noise to the encoder's input on the
fly and predicts targets made from the clean audio (:mod:`speechrank.pretrain.recipe`), so the
probes keep their noise while the encoder learns to see through it. The SNR of every clip is
recorded.

Manifest lines (JSON, UTF-8) hold ``path`` (relative to the manifest), ``split``, ``kind``
(``sentence`` or ``keyword``), ``language``, ``accent`` (eSpeak voice), ``speaker``,
``keyword`` (``null`` for sentences), ``transcript``, ``phones`` (``[[start_s, end_s, ipa],
...]``, ordered, non-overlapping, stress marks removed; gaps are silence; a phone eSpeak gives
no duration, such as the British ``l`` of "twelve", is left out: about 0.6 % of phones, in one
English sentence of seven, so the list can be shorter than ``phonemize(transcript)``),
``snr_db``,
``duration`` (seconds), ``rate_wpm`` and ``pitch`` (the clip's eSpeak settings).
``corpus.json`` records the settings, seed, summary, speakers, keywords, phone inventories,
voice variants and eSpeak version.

Determinism: every random choice is drawn from a generator seeded by ``(seed, purpose,
group, clip)``, and each clip is rendered by a freshly reset eSpeak, so the same seed gives
byte-identical WAVs and manifests whatever the number of worker processes (only the timing
fields of ``corpus.json`` differ). Across machines, soxr's SIMD code paths may change the last
bit of some samples.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np

from speechrank.audio import synthetic_grammar as grammar
from speechrank.audio.synthetic_espeak import engine, espeak_version, phonemize
from speechrank.audio.synthetic_render import (
    KEYWORD_FRAME_S,
    NOISE_KINDS,
    SAMPLE_RATE,
    Job,
    render_to_file,
)
from speechrank.audio.synthetic_render import job_to_json as render_json
from speechrank.audio.synthetic_voices import (
    ACCENTS,
    Speaker,
    available_variants,
    draw_speakers,
)
from speechrank.errors import SpeechrankError
from speechrank.progress import Progress

__all__ = [
    "DEFAULT_SNR_DB",
    "CorpusProgress",
    "CorpusSpec",
    "CorpusSummary",
    "make_corpus",
    "phonemize",
    "plan_corpus",
]

#: Default noise: a uniform draw per clip from this SNR range (dB), white noise.
DEFAULT_SNR_DB: tuple[float, float] = (0.0, 20.0)
FORMAT_NAME = "speechrank-synthetic"
FORMAT_VERSION = 1

SnrSetting = Union[float, tuple[float, float], None]  # noqa: UP007 (a runtime alias on 3.10)
ProgressArg = Union[bool, None, Progress, Callable[["CorpusProgress"], None]]  # noqa: UP007

_FIRST_SPLITS = ("train", "dev", "test")
_SPLIT_PATTERN = ("train", "train", "dev", "train", "test")
#: Default train:dev:test weights of the closed-set clips after each speaker's first three.
DEFAULT_PROBE_SPLITS: tuple[int, int, int] = (3, 1, 1)


def split_pattern(weights: tuple[int, int, int]) -> tuple[str, ...]:
    """The repeating train/dev/test pattern for ``weights`` (train:dev:test).

    3:1:1 is the historical ``train, train, dev, train, test``; any other weights are
    interleaved smoothly: at each position, the split furthest below its share so far
    (ties in train, dev, test order).
    """
    if tuple(weights) == DEFAULT_PROBE_SPLITS:
        return _SPLIT_PATTERN
    total = sum(weights)
    taken = [0, 0, 0]
    pattern = []
    for position in range(1, total + 1):
        deficits = [w * position / total - taken[i] for i, w in enumerate(weights)]
        chosen = max(range(3), key=lambda i: (deficits[i], -i))
        taken[chosen] += 1
        pattern.append(_FIRST_SPLITS[chosen])
    return tuple(pattern)


def _check_probe_splits(weights: Any) -> tuple[int, int, int]:
    try:
        values = tuple(weights)
    except TypeError:
        values = ()
    if (len(values) != 3 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                                or v < 1 for v in values)):
        raise SpeechrankError(f"probe_splits must be three positive integers "
                              f"(train:dev:test), got {weights!r}")
    return (int(values[0]), int(values[1]), int(values[2]))
_SHARES_WITH_OOD = {"pretrain": 0.35, "probe": 0.45, "test_unseen": 0.08, "ood": 0.12}
_SHARES_MAIN_ONLY = {"pretrain": 0.40, "probe": 0.50, "test_unseen": 0.10, "ood": 0.0}
_KEYWORD_SHARE = {"pretrain": 0.15, "probe": 0.6, "test_unseen": 0.6, "ood": 0.6}
_PROBE_SPEAKER_S = 12.0  # audio per probe speaker when the count is derived from the budget
_PRETRAIN_SPEAKER_S = 20.0
_MAX_PROBE_SPEAKERS = 40
_MAX_PRETRAIN_SPEAKERS = 200
_HELD_OUT_VARIANT_SHARE = 0.2
_MAX_MINUTES = 100_000.0
# Fields of CorpusSummary stored elsewhere in corpus.json (or not at all).
_NOT_IN_SUMMARY = (
    "out", "wall_s", "workers", "realtime_factor", "speakers", "keywords", "phones", "manifests",
)  # fmt: skip

# Seed purposes: each random decision has its own stream.
_SEED_SPEAKERS, _SEED_TEXT, _SEED_VOICE, _SEED_NOISE, _SEED_SNR, _SEED_KEYWORDS = range(1, 7)


@dataclasses.dataclass(frozen=True)
class CorpusProgress:
    """Where generation stands: clips done, audio made and speed so far."""

    done: int
    total: int
    audio_seconds: float
    elapsed_s: float

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio made per second of wall time."""
        return self.audio_seconds / self.elapsed_s if self.elapsed_s > 0 else float("inf")


@dataclasses.dataclass
class CorpusSummary:
    """What :func:`make_corpus` wrote (also stored in ``corpus.json``)."""

    out: str
    seed: int
    minutes_requested: float
    languages: tuple[str, ...]
    snr_db: SnrSetting
    noise: str
    counts: dict[str, dict[str, int]]  # manifest -> kind -> clips
    seconds: dict[str, float]  # manifest -> seconds of audio
    speakers: dict[str, list[str]]  # manifest -> speaker ids
    keywords: dict[str, list[str]]  # language -> keywords
    phones: dict[str, list[str]]  # language -> phone inventory
    manifests: dict[str, str]  # manifest -> file name
    espeak_version: str
    wall_s: float
    workers: int

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))

    @property
    def total_clips(self) -> int:
        return int(sum(sum(kinds.values()) for kinds in self.counts.values()))

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio generated per second of wall time."""
        return self.total_seconds / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def n_speakers(self) -> int:
        return len({s for ids in self.speakers.values() for s in ids})

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["languages"] = list(self.languages)
        data["snr_db"] = list(self.snr_db) if isinstance(self.snr_db, tuple) else self.snr_db
        data["total_seconds"] = round(self.total_seconds, 3)
        data["total_clips"] = self.total_clips
        data["realtime_factor"] = round(self.realtime_factor, 1)
        data["n_speakers"] = self.n_speakers
        return data


@dataclasses.dataclass(frozen=True)
class _Group:
    name: str  # pretrain | probe | test_unseen | ood_XX
    code: int
    language: str
    closed_set: bool
    keyword_share: float
    seconds: float
    speakers: tuple[Speaker, ...]


@dataclasses.dataclass(frozen=True)
class CorpusPlan:
    """Every clip to make, and the speakers and variants behind them."""

    jobs: tuple[Job, ...]
    groups: tuple[_Group, ...]
    seen_variants: tuple[str, ...]
    held_out_variants: tuple[str, ...]

    @property
    def manifests(self) -> list[str]:
        return [name for group in self.groups for name in _group_manifests(group)]


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------
def _check_snr(snr_db: Any) -> SnrSetting:
    if snr_db is None:
        return None
    if isinstance(snr_db, (int, float)) and not isinstance(snr_db, bool):
        value = float(snr_db)
        if not math.isfinite(value):
            raise SpeechrankError(f"snr_db must be finite, got {snr_db!r}")
        return value
    if isinstance(snr_db, (tuple, list)) and len(snr_db) == 2:
        try:
            low, high = float(snr_db[0]), float(snr_db[1])
        except (TypeError, ValueError):
            raise SpeechrankError(f"snr_db range must be two numbers, got {snr_db!r}") from None
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            raise SpeechrankError(f"snr_db range must be finite with low <= high, got {snr_db!r}")
        return (low, high)
    raise SpeechrankError(f"snr_db must be None, a number or a (low, high) pair, got {snr_db!r}")


def _check_languages(languages: Sequence[str]) -> tuple[str, ...]:
    if isinstance(languages, str):
        languages = (languages,)
    langs = tuple(str(x).strip().lower() for x in languages)
    if not langs:
        raise SpeechrankError("languages must name at least one language")
    unknown = [x for x in langs if x not in ACCENTS or x not in grammar.GENERATORS]
    if unknown:
        raise SpeechrankError(
            f"no synthetic speech for language(s) {', '.join(unknown)}; "
            f"choose from {', '.join(sorted(ACCENTS))}"
        )
    if len(set(langs)) != len(langs):
        raise SpeechrankError(f"languages repeat: {', '.join(langs)}")
    return langs


# ------------------------------------------------------------------------------------------
# planning
# ------------------------------------------------------------------------------------------
def _estimate_sentence_seconds(text: str, rate: int) -> float:
    """Clip length from the word count (fitted to eSpeak's output, padding included)."""
    words = len(text.split())
    clauses = text.count(",") + 1
    return max(0.8, 0.9 * words * 60.0 / rate + 0.3 * clauses - 0.15)


def _clamp(value: float, low: int, high: int) -> int:
    return int(max(low, min(high, round(value))))


def _groups(
    minutes: float,
    languages: tuple[str, ...],
    seed: int,
    probe_speakers: int | None,
) -> tuple[list[_Group], list[str], list[str]]:
    """The corpus's groups with their audio budgets and speakers, and the variant partition."""
    total = minutes * 60.0
    main, others = languages[0], languages[1:]
    shares = _SHARES_WITH_OOD if others else _SHARES_MAIN_ONLY
    rng = np.random.default_rng([seed, _SEED_SPEAKERS])
    variants = available_variants()
    shuffled = [variants[i] for i in rng.permutation(len(variants))]
    n_held = max(1, round(_HELD_OUT_VARIANT_SHARE * len(shuffled)))
    held_out, seen = sorted(shuffled[:n_held]), sorted(shuffled[n_held:])

    seconds = {name: shares[name] * total for name in ("pretrain", "probe", "test_unseen")}
    counts = {
        "probe": probe_speakers
        if probe_speakers is not None
        else _clamp(math.floor(seconds["probe"] / _PROBE_SPEAKER_S), 2, _MAX_PROBE_SPEAKERS),
        "pretrain": _clamp(seconds["pretrain"] / _PRETRAIN_SPEAKER_S, 1, _MAX_PRETRAIN_SPEAKERS),
        "test_unseen": _clamp(seconds["test_unseen"] / _PROBE_SPEAKER_S, 1, _MAX_PROBE_SPEAKERS),
    }
    taken: set[str] = set()
    speakers = {  # drawn in this order, so probe speakers do not depend on the other counts
        name: tuple(
            draw_speakers(main, counts[name], rng, held_out if name == "test_unseen" else seen,
                          taken)
        )
        for name in ("probe", "pretrain", "test_unseen")
    }  # fmt: skip
    groups = [
        _Group(name, code, main, name == "probe", _KEYWORD_SHARE[name], seconds[name],
               speakers[name])
        for code, name in enumerate(("pretrain", "probe", "test_unseen"))
    ]  # fmt: skip
    for i, language in enumerate(others):
        budget = shares["ood"] * total / len(others)
        count = _clamp(budget / _PROBE_SPEAKER_S, 2, _MAX_PROBE_SPEAKERS)
        group_speakers = tuple(draw_speakers(language, count, rng, variants, taken))
        groups.append(
            _Group(f"ood_{language}", 3 + i, language, True, _KEYWORD_SHARE["ood"], budget,
                   group_speakers)
        )  # fmt: skip
    return groups, seen, held_out


def _slots(group: _Group, rng: np.random.Generator) -> list[tuple[int, str, str | None]]:
    """``(speaker index, kind, sentence text or None)`` for every clip of the group."""
    n = len(group.speakers)
    slots: list[tuple[int, str, str | None]] = []
    est = {"keyword": 0.0, "sentence": 0.0}

    def add(speaker: int, kind: str) -> None:
        if kind == "keyword":
            slots.append((speaker, kind, None))
            est[kind] += KEYWORD_FRAME_S
        else:
            text = grammar.sentence(group.language, rng)
            slots.append((speaker, kind, text))
            est[kind] += _estimate_sentence_seconds(text, group.speakers[speaker].rate)

    if group.closed_set:
        for _ in range(3):
            for s in range(n):
                add(s, "keyword")
    else:
        for s in range(n):
            add(s, "keyword" if group.keyword_share >= 0.5 else "sentence")
    turn = {"keyword": 0, "sentence": 0}
    while sum(est.values()) < group.seconds:
        total = sum(est.values())
        kind = "keyword" if est["keyword"] < group.keyword_share * total else "sentence"
        add(turn[kind] % n, kind)
        turn[kind] += 1
    return slots


def _splits(group: _Group, slots: list[tuple[int, str, str | None]],
            pattern: tuple[str, ...] = _SPLIT_PATTERN) -> list[str]:
    """Split of every slot: a speaker's first three keyword clips go to train, dev and test;
    later clips of each kind follow ``pattern`` rotated by the speaker's index."""
    if not group.closed_set:
        return [group.name] * len(slots)
    seen: Counter[tuple[int, str]] = Counter()
    splits = []
    for speaker, kind, _ in slots:
        i = seen[(speaker, kind)]
        seen[(speaker, kind)] += 1
        if kind == "keyword" and i < len(_FIRST_SPLITS):
            splits.append(_FIRST_SPLITS[i])
        else:
            start = len(_FIRST_SPLITS) if kind == "keyword" else 0
            splits.append(pattern[(i - start + speaker) % len(pattern)])
    return splits


def _deal_keywords(
    group: _Group, seed: int, slots: list[tuple[int, str, str | None]], splits: list[str]
) -> list[str | None]:
    words = grammar.KEYWORDS[group.language]
    dealt: list[str | None] = [None] * len(slots)
    for split_code, split in enumerate(sorted(set(splits))):
        rng = np.random.default_rng([seed, _SEED_KEYWORDS, group.code, split_code])
        deck: list[str] = []
        for i, ((_, kind, _), s) in enumerate(zip(slots, splits, strict=True)):
            if kind != "keyword" or s != split:
                continue
            if not deck:
                deck = [words[j] for j in rng.permutation(len(words))]
            dealt[i] = deck.pop()
    return dealt


def _snr_json(snr: SnrSetting) -> float | list[float] | None:
    return list(snr) if isinstance(snr, tuple) else snr


def _snr_for(snr: SnrSetting, seed: int, code: int, index: int) -> float | None:
    if snr is None or isinstance(snr, float):
        return snr
    rng = np.random.default_rng([seed, _SEED_SNR, code, index])
    return round(float(rng.uniform(snr[0], snr[1])), 2)


def _manifest_of(group: _Group, split: str) -> str:
    return split if group.name == "probe" else group.name


@dataclasses.dataclass(frozen=True)
class CorpusSpec:
    """What corpus to make: same spec, same corpus (checked when it is planned).

    ``minutes`` is the target amount of audio; ``languages[0]`` is the main language
    (pretrain, probe and unseen-speaker manifests) and each further language gets an
    ``ood_XX.jsonl`` corpus. ``snr_db`` is ``None`` (clean), a number or a ``(low, high)``
    range in dB; ``noise`` is ``white`` or ``pink``. ``probe_speakers`` sets how many
    speakers the probe manifests have (default: by the amount of audio).
    ``pretrain_snr_db`` sets the pretraining clips' noise apart: ``None`` (the default)
    renders them clean, for the default pretraining recipe, which adds its own noise to the
    encoder's input and takes its targets from the clean audio; ``"same"`` uses ``snr_db``
    (what speechrank 0.1 did). ``probe_splits`` weighs train:dev:test of the closed-set clips
    (see the module docstring).
    """

    minutes: float = 30.0
    languages: Sequence[str] = ("en", "de")
    seed: int = 0
    snr_db: SnrSetting = DEFAULT_SNR_DB
    noise: str = "white"
    probe_speakers: int | None = None
    pretrain_snr_db: SnrSetting | Literal["same"] = None
    probe_splits: tuple[int, int, int] = DEFAULT_PROBE_SPLITS

    def settings(self) -> dict[str, Any]:
        """What ``corpus.json`` records of the spec (checked)."""
        return {
            "seed": int(self.seed),
            "minutes": float(self.minutes),
            "languages": _check_languages(self.languages),
            "snr": _check_snr(self.snr_db),
            "pretrain_snr": _check_snr(self.snr_db) if self.pretrain_snr_db == "same"
            else _check_snr(self.pretrain_snr_db),
            "noise": self.noise,
            "probe_splits": _check_probe_splits(self.probe_splits),
        }


def plan_corpus(spec: CorpusSpec | None = None) -> CorpusPlan:
    """Decide every clip of the corpus (no audio is made); see the module docstring."""
    spec = spec or CorpusSpec()
    minutes, seed, noise, probe_speakers = (spec.minutes, spec.seed, spec.noise,
                                            spec.probe_speakers)
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)):
        raise SpeechrankError(f"minutes must be a number, got {minutes!r}")
    if not (math.isfinite(minutes) and 0 < minutes <= _MAX_MINUTES):
        raise SpeechrankError(f"minutes must be in (0, {_MAX_MINUTES:g}], got {minutes!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SpeechrankError(f"seed must be a non-negative integer, got {seed!r}")
    if noise not in NOISE_KINDS:
        raise SpeechrankError(f"noise must be one of {', '.join(NOISE_KINDS)}, got {noise!r}")
    if probe_speakers is not None and (
        isinstance(probe_speakers, bool) or not isinstance(probe_speakers, int)
        or probe_speakers < 2
    ):  # fmt: skip
        raise SpeechrankError(f"probe_speakers must be an integer >= 2, got {probe_speakers!r}")
    langs = _check_languages(spec.languages)
    pattern = split_pattern(_check_probe_splits(spec.probe_splits))
    snr = _check_snr(spec.snr_db)
    pretrain_snr = snr if spec.pretrain_snr_db == "same" else _check_snr(spec.pretrain_snr_db)
    seed = int(seed)
    groups, seen, held_out = _groups(float(minutes), langs, seed, probe_speakers)
    jobs: list[Job] = []
    for group in groups:
        slots = _slots(group, np.random.default_rng([seed, _SEED_TEXT, group.code]))
        splits = _splits(group, slots, pattern)
        keywords = _deal_keywords(group, seed, slots, splits)
        for j, ((s, kind, text), split, keyword) in enumerate(
            zip(slots, splits, keywords, strict=True)
        ):
            speaker = group.speakers[s]
            jitter = np.random.default_rng([seed, _SEED_VOICE, group.code, j])
            voice = speaker.voice(jitter)
            onset = float(jitter.random())
            pad = (float(jitter.uniform(0.05, 0.25)), float(jitter.uniform(0.05, 0.25)))
            manifest = _manifest_of(group, split)
            index = len(jobs)
            spoken = keyword if kind == "keyword" else text
            assert spoken is not None
            jobs.append(
                Job(
                    index=index,
                    path=f"wav/{manifest}/{speaker.id}/{kind}-{index:05d}.wav",
                    manifest=manifest,
                    split=split,
                    kind=kind,
                    language=group.language,
                    accent=speaker.accent,
                    speaker=speaker.id,
                    text=spoken,
                    keyword=keyword if kind == "keyword" else None,
                    voice=voice,
                    snr_db=_snr_for(pretrain_snr if group.name == "pretrain" else snr, seed,
                                    group.code, j),
                    noise=noise,
                    onset=onset,
                    pad=pad,
                    noise_seed=(seed, _SEED_NOISE, group.code, j),
                )
            )
    return CorpusPlan(tuple(jobs), tuple(groups), tuple(seen), tuple(held_out))


# ------------------------------------------------------------------------------------------
# generation
# ------------------------------------------------------------------------------------------
def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SpeechrankError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        marker = out / "corpus.json"
        if not overwrite:
            raise SpeechrankError(
                f"{out} is not empty; choose a new directory or overwrite the corpus there"
            )
        if not marker.is_file():
            raise SpeechrankError(
                f"{out} is not empty and holds no corpus.json; refusing to overwrite it"
            )
        try:
            old = json.loads(marker.read_text(encoding="utf-8"))
            old_manifests = [m["file"] for m in old.get("manifests", {}).values()]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            old_manifests = []
        for name in old_manifests:
            path = out / Path(str(name)).name
            if path.suffix == ".jsonl" and path.is_file():
                path.unlink()
        shutil.rmtree(out / "wav", ignore_errors=True)
        marker.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _reporter(report: Progress) -> Callable[[CorpusProgress], None]:
    """Clips done as stage ``corpus`` of the :class:`~speechrank.progress.Progress` protocol."""
    state = {"done": -1}

    def show(p: CorpusProgress) -> None:
        if state["done"] < 0:
            report.start("corpus", p.total, "clips")
            state["done"] = 0
        report.advance("corpus", p.done - state["done"],
                       note=f"{p.audio_seconds / 60:.1f} min of audio")
        state["done"] = p.done
        if p.done >= p.total:
            report.end("corpus")

    return show


def _records(jobs: Sequence[Job], root: str, workers: int) -> Iterator[dict[str, Any]]:
    """Records of ``jobs`` in order, rendered here or by ``workers`` worker processes.

    In-process rendering needs an eSpeak that no other code in this process has loaded (see
    :mod:`.synthetic_espeak`); otherwise fresh worker processes do the work.
    """
    if workers <= 1 and engine().isolated():
        for job in jobs:
            yield render_to_file(job, root)
        return
    yield from _worker_records(jobs, root, max(1, workers))


def _worker_records(jobs: Sequence[Job], root: str, workers: int) -> Iterator[dict[str, Any]]:
    """Render in ``python -c`` subprocesses (job ``i`` goes to worker ``i % workers``).

    Plain subprocesses rather than :mod:`multiprocessing`, whose ``spawn`` start method
    re-imports the caller's ``__main__`` (a script without a main guard would recurse) and
    whose ``fork`` is unsafe in a process with threads.
    """
    import speechrank

    package_root = str(Path(speechrank.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    code = (
        "import sys; from speechrank.audio.synthetic_render import worker_main; "
        "worker_main(sys.argv[1])"
    )
    lines: queue.Queue[tuple[int, str | None]] = queue.Queue()

    def pump(k: int, stream: Any) -> None:
        for line in stream:
            lines.put((k, line))
        lines.put((k, None))

    with contextlib.ExitStack() as stack:
        procs: list[tuple[subprocess.Popen[str], Any]] = []
        for k in range(workers):
            errors = stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8"))
            proc = stack.enter_context(
                subprocess.Popen(
                    [sys.executable, "-c", code, root],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=errors,
                    text=True,
                    encoding="utf-8",
                    env=env,
                )
            )
            stack.callback(proc.kill)  # runs first on the way out; a no-op once it exited
            procs.append((proc, errors))
            threading.Thread(target=pump, args=(k, proc.stdout), daemon=True).start()
        for k, (proc, _) in enumerate(procs):
            assert proc.stdin is not None
            proc.stdin.writelines(render_json(job) + "\n" for job in jobs[k::workers])
            proc.stdin.close()
        done: dict[int, dict[str, Any]] = {}
        received = [0] * workers
        order = [job.index for job in jobs]
        emitted = 0
        while emitted < len(order):
            k, line = lines.get()
            if line is not None:
                message = json.loads(line)
                done[int(message["index"])] = message["record"]
                received[k] += 1
                while emitted < len(order) and order[emitted] in done:
                    yield done.pop(order[emitted])
                    emitted += 1
                continue
            proc, errors = procs[k]
            if proc.wait() != 0 or received[k] != len(order[k::workers]):
                errors.seek(0)
                raise RuntimeError(
                    f"corpus worker {k} failed (exit {proc.returncode}):\n{errors.read()[-2000:]}"
                )


def _group_manifests(group: _Group) -> list[str]:
    return ["train", "dev", "test"] if group.name == "probe" else [group.name]


def _purpose(group: _Group, name: str) -> str:
    if group.name == "pretrain":
        return "SSL pretraining; its speakers occur in no other manifest"
    if group.name == "probe":
        return (
            f"probe {name} split: closed speaker set shared by train/dev/test (speaker ID); "
            "unseen utterances of seen speakers for keywords and phones"
        )
    if group.name == "test_unseen":
        return (
            "keyword and phone probes on unseen speakers with held-out voice variants; "
            "not for speaker ID"
        )
    return f"out-of-domain language {group.language}: closed-set train/dev/test in 'split'"


def _manifest_info(plan: CorpusPlan) -> dict[str, dict[str, Any]]:
    info: dict[str, dict[str, Any]] = {}
    for group in plan.groups:
        for name in _group_manifests(group):
            info[name] = {
                "file": f"{name}.jsonl",
                "language": group.language,
                "domain": "ood" if group.name.startswith("ood_") else "in",
                "splits": sorted({j.split for j in plan.jobs if j.manifest == name}),
                "purpose": _purpose(group, name),
            }
    return info


def _library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in ("numpy", "soxr", "espeakng-loader"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover - all are dependencies
            versions[name] = "unknown"
    return versions


def make_corpus(
    out: str | os.PathLike[str],
    spec: CorpusSpec | None = None,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    progress: ProgressArg | Callable[[CorpusProgress], Any] = None,
) -> CorpusSummary:
    """Generate the synthetic corpus of ``spec`` (:class:`CorpusSpec`; default: its defaults)
    into ``out``; see the module docstring for its design.

    ``workers`` processes render clips (default: 1 for small corpora, else up to 2).
    ``overwrite`` replaces an earlier corpus in ``out`` (never a directory that holds
    something else). ``progress`` is a :class:`speechrank.progress.Progress` (stage
    ``corpus``, in clips), a callable taking :class:`CorpusProgress`, or silence (``None``,
    ``False`` and ``True``, as everywhere in the library: it never draws or prints itself).
    """
    spec = spec or CorpusSpec()
    plan = plan_corpus(spec)
    if workers is None:
        workers = 1 if float(spec.minutes) < 3 else max(1, min(2, os.cpu_count() or 1))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SpeechrankError(f"workers must be a positive integer, got {workers!r}")
    callback: Callable[[CorpusProgress], Any] | None
    if progress is None or isinstance(progress, bool):
        callback = None
    elif isinstance(progress, Progress):
        callback = _reporter(progress)
    elif callable(progress):
        callback = progress
    else:
        raise SpeechrankError(f"progress must be a bool or a callable, got {progress!r}")

    root = Path(out)
    created = not root.exists()
    _prepare_out(root, overwrite)
    settings = spec.settings()
    try:
        version = espeak_version()
        start = time.perf_counter()
        records: list[dict[str, Any]] = []
        audio_s = 0.0
        for job, record in zip(plan.jobs, _records(plan.jobs, str(root), workers), strict=True):
            records.append({"path": job.path, **record})
            audio_s += float(record["duration"])  # type: ignore[arg-type]
            if callback is not None:
                elapsed = time.perf_counter() - start
                callback(CorpusProgress(len(records), len(plan.jobs), audio_s, elapsed))
        wall = time.perf_counter() - start
        return _write_outputs(root, plan, records, version, wall, workers, settings)
    except BaseException:
        _remove_partial(root, plan, created)
        raise


def _remove_partial(root: Path, plan: CorpusPlan, created: bool) -> None:
    """Undo a failed or interrupted run (the directory was empty or an old corpus before)."""
    shutil.rmtree(root / "wav", ignore_errors=True)
    for name in [*plan.manifests, "corpus"]:
        for path in (root / f"{name}.jsonl", root / f"{name}.json"):
            path.unlink(missing_ok=True)
    if created:
        with contextlib.suppress(OSError):
            root.rmdir()


def _write_outputs(
    root: Path,
    plan: CorpusPlan,
    records: list[dict[str, Any]],
    version: str,
    wall: float,
    workers: int,
    settings: dict[str, Any],
) -> CorpusSummary:
    by_manifest: dict[str, list[dict[str, Any]]] = {name: [] for name in plan.manifests}
    for job, record in zip(plan.jobs, records, strict=True):
        by_manifest[job.manifest].append(record)
    for name, rows in by_manifest.items():
        with (root / f"{name}.jsonl").open("w", encoding="utf-8", newline="\n") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")

    counts = {
        name: dict(sorted(Counter(r["kind"] for r in rows).items()))
        for name, rows in by_manifest.items()
    }
    seconds = {name: round(sum(r["duration"] for r in rows), 3) for name, rows in
               by_manifest.items()}  # fmt: skip
    speakers = {name: sorted({r["speaker"] for r in rows}) for name, rows in by_manifest.items()}
    languages: tuple[str, ...] = settings["languages"]
    keywords = {
        lang: sorted({r["keyword"] for r in records if r["language"] == lang and r["keyword"]})
        for lang in languages
    }
    phones = {
        lang: sorted({p[2] for r in records if r["language"] == lang for p in r["phones"]})
        for lang in languages
    }
    summary = CorpusSummary(
        out=str(root),
        seed=settings["seed"],
        minutes_requested=settings["minutes"],
        languages=languages,
        snr_db=settings["snr"],
        noise=settings["noise"],
        counts=counts,
        seconds=seconds,
        speakers=speakers,
        keywords=keywords,
        phones=phones,
        manifests={name: f"{name}.jsonl" for name in by_manifest},
        espeak_version=version,
        wall_s=round(wall, 3),
        workers=workers,
    )
    speaker_rows = [
        {**speaker.to_dict(), "group": group.name} for group in plan.groups
        for speaker in group.speakers
    ]  # fmt: skip
    corpus = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "seed": summary.seed,
        "settings": {
            "minutes": summary.minutes_requested,
            "languages": list(languages),
            "main_language": languages[0],
            "snr_db": summary.to_dict()["snr_db"],
            "pretrain_snr_db": _snr_json(settings["pretrain_snr"]),
            "probe_splits": list(settings["probe_splits"]),
            "noise": summary.noise,
            "sample_rate": SAMPLE_RATE,
            "keyword_frame_s": KEYWORD_FRAME_S,
        },
        "manifests": _manifest_info(plan),
        "summary": {k: v for k, v in summary.to_dict().items() if k not in _NOT_IN_SUMMARY},
        "generation": {
            "wall_s": summary.wall_s,
            "workers": workers,
            "realtime_factor": round(summary.realtime_factor, 1),
        },
        "keywords": {lang: list(grammar.KEYWORDS[lang]) for lang in languages},
        "phones": phones,
        "speakers": speaker_rows,
        "variants": {
            "seen": list(plan.seen_variants),
            "held_out": list(plan.held_out_variants),
        },
        "espeak": {"version": version, "libraries": _library_versions()},
    }
    (root / "corpus.json").write_text(
        json.dumps(corpus, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    return summary
