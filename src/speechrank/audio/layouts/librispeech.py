"""LibriSpeech (Panayotov et al., ICASSP 2015).

Layout: ``PATH/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` with one
``<speaker>-<chapter>.trans.txt`` per chapter (lines ``<utt-id> <TRANSCRIPT>``). ``PATH`` may
be the ``LibriSpeech`` folder holding the subsets or one subset folder itself.

Labels: ``speaker``, ``chapter``, ``transcript`` (as in the corpus: upper case) and ``subset``.
Split from the subset folder name: ``train-*`` train, ``dev-*`` dev, ``test-*`` test (other
names: no split). Audio converted to another format (``.wav`` ...) is found by its stem.
Transcript lines without an audio file are counted in ``info["missing_audio"]``.
"""

from __future__ import annotations

import re
from pathlib import Path

from speechrank.audio.io import is_audio_file
from speechrank.audio.layouts._common import abspath, make_dataset, rel_uid, require_dir
from speechrank.audio.utterance import Dataset, Utterance
from speechrank.errors import SpeechrankError

_SUBSET = re.compile(r"^(train|dev|test)-")
_TRANS = re.compile(r"^(?P<speaker>\d+)-(?P<chapter>\d+)\.trans\.txt$")


def subset_split(subset: str) -> str | None:
    """``train-clean-100`` -> ``train``, ``dev-other`` -> ``dev`` ...; ``None`` otherwise."""
    match = _SUBSET.match(subset)
    return None if match is None else match.group(1)


def _chapter_utterances(trans: Path, root: Path, subset: str) -> tuple[list[Utterance], int]:
    match = _TRANS.match(trans.name)
    if match is None:
        return [], 0
    audio: dict[str, Path] = {}
    # Prefer the corpus's own .flac where a converted copy sits beside it.
    for file in sorted(trans.parent.iterdir(), key=lambda p: (p.suffix.lower() != ".flac", p)):
        if is_audio_file(file):
            audio.setdefault(file.stem, file)
    utterances: list[Utterance] = []
    missing = 0
    with trans.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            if not utt_id.startswith(f"{match['speaker']}-{match['chapter']}-"):
                raise SpeechrankError(f"{trans}:{number}: utterance {utt_id!r} does not belong "
                                      "to this speaker and chapter")
            file = audio.get(utt_id)
            if file is None:
                missing += 1
                continue
            utterances.append(Utterance(
                uid=rel_uid(file, root), path=abspath(file),
                labels={"speaker": match["speaker"], "chapter": match["chapter"],
                        "transcript": text.strip(), "subset": subset},
                split=subset_split(subset)))
    return utterances, missing


def load(path: Path, spec: str) -> Dataset:
    """Read every chapter transcript under ``path`` and the audio it names."""
    require_dir(path, "librispeech")
    transcripts = sorted(path.glob("*/*/*.trans.txt"))
    if transcripts:  # path is one subset folder
        subset_of = {t: path.name for t in transcripts}
    else:
        transcripts = sorted(path.glob("*/*/*/*.trans.txt"))
        subset_of = {t: t.parents[2].name for t in transcripts}
    if not transcripts:
        raise SpeechrankError(f"librispeech: no <speaker>-<chapter>.trans.txt files under {path}")
    utterances: list[Utterance] = []
    missing = 0
    for trans in transcripts:
        found, lost = _chapter_utterances(trans, path, subset_of[trans])
        utterances.extend(found)
        missing += lost
    utterances.sort(key=lambda u: u.uid)
    subsets = sorted(set(subset_of.values()))
    has_split = any(u.split for u in utterances)
    return make_dataset(
        spec, "librispeech", path, utterances,
        labels=["speaker", "chapter", "transcript", "subset"],
        label_source="folder names and <speaker>-<chapter>.trans.txt",
        split_source="corpus" if has_split else "none",
        split_rule="subset folder: train-* train, dev-* dev, test-* test",
        subsets=subsets,
        missing_audio=missing,
    )
