"""The built-in synthetic corpus written by ``speechrank corpus OUT``.

Reads every ``OUT/*.jsonl`` manifest (one per split: ``pretrain``, ``train``, ``dev``,
``test``, or whichever are present) with the generic manifest reader into one dataset: paths
relative to the manifest, every column but ``path``/``id``/``uid``/``split``/``start``/``end``
kept as a label (``speaker``, ``keyword``, ``transcript``, ``phones``, ``language`` ...). A row
without a ``split`` takes the manifest's file name when that names a split (``dev.jsonl``).
"""

from __future__ import annotations

from pathlib import Path

from speechrank.audio.layouts._common import (
    abspath,
    make_dataset,
    normalize_split,
    require_dir,
)
from speechrank.audio.layouts.manifest import manifest_utterances
from speechrank.audio.utterance import Dataset, Utterance
from speechrank.errors import SpeechrankError


def _split_from_name(path: Path) -> str | None:
    try:
        return normalize_split(path.stem)
    except ValueError:
        return None


def load(path: Path, spec: str) -> Dataset:
    """Read all of a synthetic corpus's JSONL manifests into one dataset."""
    require_dir(path, "synthetic")
    manifests = sorted(path.glob("*.jsonl"))
    if not manifests:
        raise SpeechrankError(f"synthetic: no *.jsonl manifests in {path} "
                              "(write a corpus with `speechrank corpus OUT`)")
    utterances: list[Utterance] = []
    columns: dict[str, None] = {}
    seen: dict[str, Path] = {}
    for manifest in manifests:
        found, labels = manifest_utterances(manifest, default_split=_split_from_name(manifest))
        for utt in found:
            if utt.uid in seen:
                raise SpeechrankError(f"synthetic: utterance id {utt.uid!r} is in both "
                                      f"{seen[utt.uid].name} and {manifest.name}")
            seen[utt.uid] = manifest
        utterances.extend(found)
        columns.update(dict.fromkeys(labels))
    has_split = any(u.split for u in utterances)
    return make_dataset(
        spec, "synthetic", path, utterances,
        manifests=[abspath(m) for m in manifests],
        labels=list(columns),
        label_source="manifest columns",
        split_source="manifest" if has_split else "none",
    )
