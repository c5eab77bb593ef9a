"""VoxCeleb1 speaker identification (Nagrani et al., Interspeech 2017).

Layout: ``PATH/wav/idXXXXX/<youtube-id>/<n>.wav``. The dev and test archives may also be kept
apart as ``PATH/dev/wav`` and ``PATH/test/wav`` (s3prl's layout), ``PATH/vox1_dev_wav/wav``
and ``PATH/vox1_test_wav/wav``, or the speaker folders may sit directly in ``PATH``.

Split: the identification split file, lines ``<1|2|3> idXXXXX/<youtube-id>/<n>.wav`` (1 train,
2 dev, 3 test), looked for in ``PATH`` and ``PATH/meta`` as ``iden_split.txt`` or
``veri_test_class.txt`` (the name s3prl gives the same file). Files it lists that are not on
disk are counted in ``info["missing_audio"]``. Without a split file every ``.wav`` found is
read with no split (see :func:`speechrank.audio.splits.assign_splits`).

Labels: ``speaker`` (``idXXXXX``) and ``video`` (the YouTube id).
"""

from __future__ import annotations

from pathlib import Path

from speechrank.audio.layouts._common import abspath, make_dataset, require_dir
from speechrank.audio.utterance import Dataset, Utterance
from speechrank.errors import SpeechrankError

SPLIT_FILES: tuple[str, ...] = ("iden_split.txt", "veri_test_class.txt")
_WAV_ROOTS: tuple[str, ...] = ("wav", "dev/wav", "test/wav", "vox1_dev_wav/wav",
                               "vox1_test_wav/wav", ".")
_CODES = {"1": "train", "2": "dev", "3": "test"}


def find_split_file(path: Path) -> Path | None:
    """The identification split file in ``path`` or ``path/meta``, if any."""
    for folder in (path, path / "meta"):
        for name in SPLIT_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def _speaker_roots(path: Path) -> dict[str, Path]:
    """Which audio root holds each speaker folder (the first root listing it wins)."""
    roots: dict[str, Path] = {}
    for name in _WAV_ROOTS:
        root = path / name
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            if child.name.startswith("id") and child.is_dir():
                roots.setdefault(child.name, root)
    return roots


def read_split_file(split_file: Path) -> list[tuple[int, str, str]]:
    """``(line, split, relative path)`` for every line of an identification split file."""
    entries = []
    try:
        text = split_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpeechrankError(f"voxceleb1: cannot read {split_file} ({err})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[0] not in _CODES or fields[1].count("/") != 2:
            raise SpeechrankError(f"{split_file}:{number}: expected '<1|2|3> "
                                  f"idXXXXX/<video>/<n>.wav', got {line.strip()!r}")
        entries.append((number, _CODES[fields[0]], fields[1]))
    return entries


def load(path: Path, spec: str) -> Dataset:
    """Read VoxCeleb1 with its identification split (or none when the file is absent)."""
    require_dir(path, "voxceleb1")
    roots = _speaker_roots(path)
    if not roots:
        raise SpeechrankError(f"voxceleb1: no idXXXXX speaker folders under {path} "
                              f"(looked in {', '.join(_WAV_ROOTS)})")
    split_file = find_split_file(path)
    utterances: list[Utterance] = []
    missing = 0
    if split_file is not None:
        for _, split, rel in read_split_file(split_file):
            speaker, video, _ = rel.split("/")
            file = roots[speaker] / rel if speaker in roots else None
            if file is None or not file.is_file():
                missing += 1
                continue
            utterances.append(Utterance(uid=rel, path=abspath(file),
                                        labels={"speaker": speaker, "video": video},
                                        split=split))
    else:
        for speaker, root in sorted(roots.items()):
            for file in sorted((root / speaker).glob("*/*.wav")):
                rel = f"{speaker}/{file.parent.name}/{file.name}"
                utterances.append(Utterance(uid=rel, path=abspath(file),
                                            labels={"speaker": speaker,
                                                    "video": file.parent.name}))
    utterances.sort(key=lambda u: u.uid)
    return make_dataset(
        spec, "voxceleb1", path, utterances,
        labels=["speaker", "video"],
        label_source="speaker and video folder names",
        split_source="corpus" if split_file is not None else "none",
        split_rule=(f"{split_file.name}: 1 train, 2 dev, 3 test" if split_file is not None
                    else "no identification split file found"),
        split_file=abspath(split_file) if split_file is not None else None,
        missing_audio=missing,
    )
