"""The built-in synthetic corpus written by ``speechrank corpus OUT``.

``OUT`` holds one JSONL manifest per group of the corpus: ``pretrain``, ``train``, ``dev`` and
``test`` (the main language), ``test_unseen`` (held-out speakers) and ``ood_XX`` (one closed-set
corpus per further language, whose ``split`` column says train/dev/test). They are read with
the generic manifest reader: paths relative to the manifest, every column but
``path``/``id``/``uid``/``split``/``start``/``end`` kept as a label (``speaker``, ``keyword``,
``transcript``, ``phones``, ``language`` ...), plus a ``manifest`` label naming the file each
utterance came from, so groups can be told apart after merging.

Which manifests (option ``manifest``): by default the main ones present (``pretrain``,
``train``, ``dev``, ``test``), or every manifest when none of those exists;
``#manifest=test_unseen``, ``#manifest=ood_de`` or ``#manifest=train,test_unseen`` pick
others, ``#manifest=all`` takes everything. The held-out group's split value ``test_unseen``
becomes ``test``; a row without a ``split`` takes the manifest's name when that names a split.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from speechrank.audio.layouts._common import (
    make_dataset,
    normalize_split,
    require_dir,
)
from speechrank.audio.layouts.manifest import manifest_utterances
from speechrank.audio.utterance import Dataset, Utterance
from speechrank.errors import SpeechrankError

#: Manifests read when no ``manifest`` option is given.
MAIN_MANIFESTS: tuple[str, ...] = ("pretrain", "train", "dev", "test")
#: Group names used as split values, and the split they stand for.
GROUP_SPLITS: dict[str, str] = {"test_unseen": "test"}


def _split_from_name(path: Path) -> str | None:
    try:
        return normalize_split(GROUP_SPLITS.get(path.stem, path.stem))
    except ValueError:
        return None


def _choose(available: dict[str, Path], manifest: str | None, root: Path) -> list[Path]:
    if manifest is None:
        main = [available[name] for name in MAIN_MANIFESTS if name in available]
        return main or list(available.values())
    names = [n.strip() for n in manifest.split(",") if n.strip()]
    if names == ["all"]:
        return list(available.values())
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise SpeechrankError(f"synthetic: no manifest {', '.join(unknown) or repr(manifest)} "
                              f"in {root} (have: {', '.join(available)}, or 'all')")
    return [available[n] for n in dict.fromkeys(names)]


def load(path: Path, spec: str, *, manifest: str | None = None) -> Dataset:
    """Read a synthetic corpus's JSONL manifests (the main ones by default) into one dataset."""
    require_dir(path, "synthetic")
    available = {m.stem: m for m in sorted(path.glob("*.jsonl"))}
    if not available:
        raise SpeechrankError(f"synthetic: no *.jsonl manifests in {path} "
                              "(write a corpus with `speechrank corpus OUT`)")
    chosen = _choose(available, manifest, path)
    utterances: list[Utterance] = []
    columns: dict[str, None] = {}
    seen: dict[str, Path] = {}
    for file in chosen:
        found, labels = manifest_utterances(file, default_split=_split_from_name(file),
                                            split_aliases=GROUP_SPLITS)
        for utt in found:
            if utt.uid in seen:
                raise SpeechrankError(f"synthetic: utterance id {utt.uid!r} is in both "
                                      f"{seen[utt.uid].name} and {file.name}")
            seen[utt.uid] = file
            utterances.append(dataclasses.replace(
                utt, labels={**utt.labels, "manifest": utt.labels.get("manifest", file.stem)}))
        columns.update(dict.fromkeys(labels))
    columns["manifest"] = None
    has_split = any(u.split for u in utterances)
    return make_dataset(
        spec, "synthetic", path, utterances,
        manifests=[m.stem for m in chosen],
        other_manifests=[name for name in available if available[name] not in chosen],
        labels=list(columns),
        label_source="manifest columns; 'manifest' = the file each utterance came from",
        split_source="manifest" if has_split else "none",
        split_rule="the manifests' split column ('test_unseen' read as test)",
    )
