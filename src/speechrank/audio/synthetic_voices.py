"""Synthetic speakers: eSpeak NG accents x voice variants x pitch, pitch range and rate.

A *speaker* is a fixed recipe: an accent (an eSpeak language voice such as ``en-us`` or
``en-gb-scotland``), a voice variant from ``espeak-ng-data/voices/!v`` (formant scaling, base
pitch, voicing, breath, the Klatt synthesiser, ...), and eSpeak's base pitch (0-100), pitch
range (0-100) and speaking rate (words per minute). Its id spells the recipe, e.g.
``en-us_m3_p42_r61_w160``, so it is stable across seeds and corpus sizes. Each utterance then
jitters rate (±4 %) and pitch (±3) a little around the speaker's values, as a person never says
two sentences the same way.

Variants that are not speech-like (robots, echo, whisper, a speed test) are left out; the list
of kept variants is the intersection of :data:`VARIANTS` with what the installed data holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from speechrank.audio.synthetic_espeak import Voice, variant_names
from speechrank.errors import SpeechrankError

#: eSpeak language voices used as accents of each corpus language.
ACCENTS: dict[str, tuple[str, ...]] = {
    "en": (
        "en-us", "en", "en-029", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
        "en-gb-x-rp", "en-us-nyc",
    ),
    "de": ("de",),
    "es": ("es", "es-419"),
}  # fmt: skip

#: Speech-like voice variants (the standard m1-m8 and f1-f5, the Klatt family and the named
#: contributed voices). Left out: Demonic, UniRobot, anikaRobot, robosoft*, RicishayMax* (heavy
#: echo), Tweaky, AnxiousAndy, "Mr serious", fast, whisper, whisperf.
VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6",
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "Denis", "Diogo", "Gene", "Gene2", "Henrique",
    "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen", "Reed", "Storm",
    "adam", "anika", "announcer", "antonio", "aunty", "belinda", "benjamin", "boris", "caleb",
    "croak", "david", "ed", "edward", "edward2", "grandma", "grandpa", "gustave", "ian", "iven",
    "iven2", "iven3", "iven4", "john", "kaukovalta", "linda", "marcelo", "max", "michel",
    "miguel", "mike2", "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "sandro",
    "shelby", "steph", "steph2", "steph3", "travis", "victor", "zac",
)  # fmt: skip

RATE_RANGE = (135, 205)  # words per minute, drawn per speaker
PITCH_RANGE = (20, 80)  # eSpeak's 0-100 base pitch
INTONATION_RANGE = (20, 80)  # eSpeak's 0-100 pitch range
RATE_JITTER = 0.04  # relative, per utterance
PITCH_JITTER = 3  # eSpeak pitch units, per utterance


@dataclasses.dataclass(frozen=True)
class Speaker:
    """A synthetic speaker (see the module docstring)."""

    language: str
    accent: str
    variant: str
    pitch: int
    pitch_range: int
    rate: int

    @property
    def id(self) -> str:
        return (
            f"{self.accent}_{self.variant}_p{self.pitch:02d}_r{self.pitch_range:02d}"
            f"_w{self.rate:03d}"
        )

    def voice(self, rng: np.random.Generator | None = None) -> Voice:
        """The eSpeak voice for one utterance, jittered by ``rng`` when given."""
        rate, pitch = self.rate, self.pitch
        if rng is not None:
            rate = round(rate * (1.0 + rng.uniform(-RATE_JITTER, RATE_JITTER)))
            pitch = int(np.clip(pitch + rng.integers(-PITCH_JITTER, PITCH_JITTER + 1), 0, 100))
        return Voice(f"{self.accent}+{self.variant}", rate, pitch, self.pitch_range)

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, **dataclasses.asdict(self)}


def available_variants() -> list[str]:
    """:data:`VARIANTS` that the installed eSpeak NG data provides, in :data:`VARIANTS` order."""
    present = set(variant_names())
    kept = [v for v in VARIANTS if v in present]
    if not kept:
        raise SpeechrankError("the eSpeak NG data has none of the expected voice variants")
    return kept


def draw_speakers(
    language: str,
    count: int,
    rng: np.random.Generator,
    variants: Sequence[str],
    taken: set[str],
) -> list[Speaker]:
    """``count`` new speakers of ``language`` with ids not in ``taken`` (which is updated).

    Accent-variant pairs are dealt from a shuffled deck so that speakers differ in timbre
    before two of them share a pair; pitch, range and rate are drawn uniformly.
    """
    if language not in ACCENTS:
        raise SpeechrankError(
            f"no synthetic voices for language {language!r}; choose from {sorted(ACCENTS)}"
        )
    if not variants:
        raise SpeechrankError("no voice variants to draw speakers from")
    pairs = [(a, v) for a in ACCENTS[language] for v in variants]
    deck: list[tuple[str, str]] = []
    speakers: list[Speaker] = []
    attempts = 0
    while len(speakers) < count:
        if not deck:
            deck = [pairs[i] for i in rng.permutation(len(pairs))]
        accent, variant = deck.pop()
        speaker = Speaker(
            language=language,
            accent=accent,
            variant=variant,
            pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
            pitch_range=int(rng.integers(INTONATION_RANGE[0], INTONATION_RANGE[1] + 1)),
            rate=int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
        )
        attempts += 1
        if speaker.id in taken:
            if attempts > 100 * (count + 1):  # pragma: no cover - needs an absurd count
                raise SpeechrankError(f"cannot draw {count} distinct {language} speakers")
            continue
        taken.add(speaker.id)
        speakers.append(speaker)
    return speakers
