"""Speech Commands v0.01 and v0.02 (Warden, arXiv 1804.03209).

Layout: ``PATH/<word>/<speaker-hash>_nohash_<n>.wav``, ``PATH/validation_list.txt`` and
``PATH/testing_list.txt`` (paths relative to ``PATH``) and ``PATH/_background_noise_/*.wav``.

Labels: ``keyword`` (the raw word, 30 in v1, 35 in v2), ``speaker`` (the hash) and
``keyword12``, the 12-class SUPERB task (Yang et al., Interspeech 2021): the ten words in
:data:`CORE_WORDS` kept, every other word ``_unknown_``, and ``_silence_`` for 1 s crops of the
background-noise recordings.

Splits: the two list files give dev and test, everything else is train. Where neither list
exists, the corpus's own hash rule decides (Warden 2018, section 3: the SHA-1 of the speaker
hash, as a percentage, below 10 is dev, below 20 test), which is how the lists were made.

Silence: each split gets ``round(n * f / (1 - f))`` crops for its ``n`` word utterances, so
that silence is the fraction ``f`` (default 1/12, one class in twelve, ``silence_fraction``
option) of the split. Every background file is cut in time into three disjoint parts, the
first 80 % for train crops, the next 10 % for dev and the last 10 % for test, so no noise is
shared across splits. A seeded generator (``seed`` option; one stream per split) spreads the
crops evenly over the files and draws distinct start samples within each part. SUPERB draws
its silence crops afresh at every access; here they are fixed, so results repeat.

Not handled: the separate SUPERB v0.01 test archive (``speech_commands_test_set_v0.01``, with
``_silence_``/``_unknown_`` folders); describe it with a manifest instead.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from speechrank.audio.io import probe_audio
from speechrank.audio.layouts._common import (
    PROBE_SPLITS,
    abspath,
    make_dataset,
    rel_uid,
    require_dir,
)
from speechrank.audio.utterance import Dataset, Utterance
from speechrank.errors import AudioError, SpeechrankError

#: The ten command words the SUPERB keyword-spotting task keeps as classes.
CORE_WORDS: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off",
                               "stop", "go")
UNKNOWN = "_unknown_"
SILENCE = "_silence_"
BACKGROUND = "_background_noise_"
#: Words that exist only in v0.02.
V2_WORDS = frozenset({"backward", "forward", "follow", "learn", "visual"})

#: Where in each background recording the crops of each split come from.
SILENCE_PARTS: dict[str, tuple[float, float]] = {
    "train": (0.0, 0.8), "dev": (0.8, 0.9), "test": (0.9, 1.0)}
SILENCE_SECONDS = 1.0

_NAME = re.compile(r"^(?P<speaker>[0-9a-f]+)_nohash_(?P<n>\d+)\.wav$", re.IGNORECASE)
_MAX_WAVS_PER_CLASS = 2**27 - 1  # the constant of the corpus's split rule


def keyword12(word: str) -> str:
    """The SUPERB 12-class label of a raw word."""
    return word if word in CORE_WORDS else UNKNOWN


def hash_split(filename: str, dev_percent: float = 10.0, test_percent: float = 10.0) -> str:
    """The corpus's own split rule (Warden 2018): a stable function of the speaker hash.

    The part of the name before ``_nohash_`` is hashed with SHA-1; the hash modulo 2^27, as a
    percentage of 2^27 - 1, below ``dev_percent`` is dev, below ``dev + test`` is test.
    """
    speaker = re.sub(r"_nohash_.*$", "", Path(filename).name)
    value = int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16)
    percent = (value % (_MAX_WAVS_PER_CLASS + 1)) * (100.0 / _MAX_WAVS_PER_CLASS)
    if percent < dev_percent:
        return "dev"
    if percent < dev_percent + test_percent:
        return "test"
    return "train"


def _read_list(path: Path) -> set[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpeechrankError(f"speechcommands: cannot read {path} ({err.strerror})") from None
    return {line.strip().replace("\\", "/") for line in text.splitlines() if line.strip()}


def _word_utterances(root: Path) -> tuple[list[Utterance], int, str, str]:
    dev_list, test_list = root / "validation_list.txt", root / "testing_list.txt"
    if dev_list.is_file() != test_list.is_file():
        present, absent = (dev_list, test_list) if dev_list.is_file() else (test_list, dev_list)
        raise SpeechrankError(f"speechcommands: found {present.name} but not {absent.name} "
                              f"in {root}")
    lists = dev_list.is_file()
    dev, test = (_read_list(dev_list), _read_list(test_list)) if lists else (set(), set())
    utterances: list[Utterance] = []
    ignored = 0
    words = sorted(p for p in root.iterdir()
                   if p.is_dir() and not p.name.startswith(("_", ".")))
    for folder in words:
        for file in sorted(folder.iterdir()):
            match = _NAME.match(file.name)
            if match is None:
                if file.suffix.lower() == ".wav":
                    ignored += 1
                continue
            uid = rel_uid(file, root)
            if lists:
                split = "dev" if uid in dev else "test" if uid in test else "train"
            else:
                split = hash_split(file.name)
            utterances.append(Utterance(
                uid=uid, path=abspath(file),
                labels={"keyword": folder.name, "keyword12": keyword12(folder.name),
                        "speaker": match["speaker"]},
                split=split))
    if lists:
        source, rule = "corpus", "validation_list.txt dev, testing_list.txt test, rest train"
    else:
        source, rule = "rule", "SHA-1 speaker-hash rule of the corpus: 10 % dev, 10 % test"
    return utterances, ignored, source, rule


def silence_crops(root: Path, counts: dict[str, int], seed: int) -> list[Utterance]:
    """Fixed 1 s crops of ``_background_noise_/*.wav``, ``counts[split]`` per split."""
    folder = root / BACKGROUND
    files = sorted(folder.glob("*.wav")) if folder.is_dir() else []
    infos = []
    for file in files:
        try:
            infos.append(probe_audio(file))
        except AudioError:
            continue
    crops: list[Utterance] = []
    for index, split in enumerate(PROBE_SPLITS):
        wanted = counts.get(split, 0)
        ranges = []
        for info in infos:
            lo, hi = SILENCE_PARTS[split]
            first = int(lo * info.frames)
            last = int(hi * info.frames) - round(SILENCE_SECONDS * info.sample_rate)
            if last >= first:
                ranges.append((info, first, last))
        if wanted <= 0 or not ranges:
            continue
        rng = np.random.default_rng([seed, index])
        per_file = rng.multinomial(wanted, np.full(len(ranges), 1.0 / len(ranges)))
        for (info, first, last), count in zip(ranges, per_file, strict=True):
            positions = last - first + 1
            starts = first + rng.choice(positions, size=min(int(count), positions),
                                        replace=False)
            uid_base = rel_uid(Path(info.path), root)
            length = round(SILENCE_SECONDS * info.sample_rate)
            for start in sorted(int(s) for s in starts):
                begin, end = start / info.sample_rate, (start + length) / info.sample_rate
                crops.append(Utterance(
                    uid=f"{uid_base}@{begin:.6f}-{end:.6f}", path=abspath(info.path),
                    labels={"keyword": SILENCE, "keyword12": SILENCE,
                            "noise": Path(info.path).stem},
                    split=split, start=begin, end=end))
    return crops


def load(path: Path, spec: str, *, silence_fraction: float = 1 / 12, seed: int = 0) -> Dataset:
    """Read a Speech Commands copy (v0.01 or v0.02) with fixed, seeded silence crops."""
    require_dir(path, "speechcommands")
    if not 0.0 <= silence_fraction < 1.0:
        raise SpeechrankError(f"speechcommands: silence_fraction={silence_fraction} is not in "
                              "[0, 1)")
    words, ignored, source, rule = _word_utterances(path)
    if not words:
        raise SpeechrankError(f"speechcommands: no <word>/<hash>_nohash_<n>.wav files under "
                              f"{path}")
    per_split = {s: sum(u.split == s for u in words) for s in PROBE_SPLITS}
    wanted = {s: round(n * silence_fraction / (1.0 - silence_fraction))
              for s, n in per_split.items()}
    silence = silence_crops(path, wanted, seed) if silence_fraction > 0 else []
    vocabulary = sorted({u.labels["keyword"] for u in words})
    return make_dataset(
        spec, "speechcommands", path, sorted(words + silence, key=lambda u: u.uid),
        labels=["keyword", "keyword12", "speaker"],
        label_source="word folders, speaker hash from file names, SUPERB 12-class map",
        split_source=source,
        split_rule=rule,
        version="v0.02" if V2_WORDS & set(vocabulary) else "v0.01",
        words=len(vocabulary),
        silence={"fraction": silence_fraction, "seed": seed, "seconds": SILENCE_SECONDS,
                 "parts": SILENCE_PARTS,
                 "crops": {s: sum(u.split == s for u in silence) for s in PROBE_SPLITS}},
        ignored_files=ignored,
    )
