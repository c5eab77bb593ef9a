"""Free Spoken Digit Dataset (Jackson et al., Zenodo 10.5281/zenodo.1342401).

Layout: ``PATH/recordings/{digit}_{speaker}_{index}.wav`` or the files directly in ``PATH``.
Labels: ``keyword`` (the digit, a string) and ``speaker``.

Splits follow the authors' convention, index 0-4 of every digit and speaker is ``test``; a
fixed dev carve-out takes index 5-9 as ``dev``, the rest (10-49) is ``train``. The rule has no
randomness, and every speaker and digit is in every split (the usual FSDD tasks are keyword
spotting and closed-set speaker identification over the same six speakers).
"""

from __future__ import annotations

import re
from pathlib import Path

from speechrank.audio.layouts._common import abspath, make_dataset, rel_uid, require_dir
from speechrank.audio.utterance import Dataset, Utterance

_NAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>[^_]+)_(?P<index>\d+)\.wav$", re.IGNORECASE)

#: Recording indices of the test and dev splits; every other index is train.
TEST_INDICES = range(0, 5)
DEV_INDICES = range(5, 10)

SPLIT_RULE = "index 0-4 test (authors' convention), 5-9 dev, 10 and above train"


def fsdd_split(index: int) -> str:
    """The split of recording number ``index`` (see :data:`SPLIT_RULE`)."""
    if index in TEST_INDICES:
        return "test"
    if index in DEV_INDICES:
        return "dev"
    return "train"


def load(path: Path, spec: str) -> Dataset:
    """Read an FSDD copy; files whose names do not follow the pattern are counted and left out."""
    require_dir(path, "fsdd")
    folder = path / "recordings" if (path / "recordings").is_dir() else path
    utterances: list[Utterance] = []
    ignored = 0
    for file in sorted(folder.iterdir()):
        match = _NAME.match(file.name)
        if match is None or not file.is_file():
            if file.suffix.lower() == ".wav":
                ignored += 1
            continue
        index = int(match["index"])
        utterances.append(Utterance(
            uid=rel_uid(file, path), path=abspath(file),
            labels={"keyword": match["digit"], "speaker": match["speaker"]},
            split=fsdd_split(index)))
    utterances.sort(key=lambda u: u.uid)
    return make_dataset(
        spec, "fsdd", path, utterances,
        labels=["keyword", "speaker"],
        label_source="file names {digit}_{speaker}_{index}.wav",
        split_source="rule",
        split_rule=SPLIT_RULE,
        ignored_files=ignored,
    )
