"""Train/dev/test splits for probing, and seeded subsets.

:func:`assign_splits` keeps the corpus's split where every utterance has one. Otherwise it
draws a seeded split and records it in ``Dataset.info``:

- speaker-disjoint (the default for every task but speaker identification): utterances are
  grouped by their ``speaker`` label (an utterance without one is its own group) and whole
  speakers go to train, dev or test with scikit-learn's ``GroupShuffleSplit``; the fractions
  are fractions of *speakers*, so utterance counts follow only roughly;
- stratified (speaker identification, ``task_label="speaker"``): every label is split on its
  own with the fractions, at least one utterance in each split, so every speaker is in train,
  dev and test; labels with too few utterances for that go to train only (counted in info).

Both sort utterances by id first, so the result depends on the set of utterances and the seed,
not on their order. Utterances without the task label, and ``pretrain`` ones, are left out
(counted in ``info["assign_splits"]["dropped"]``).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from speechrank.audio.layouts._common import PROBE_SPLITS, split_counts
from speechrank.audio.utterance import Dataset, Utterance
from speechrank.errors import SpeechrankError

__all__ = ["assign_splits", "subset"]

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3:
        raise SpeechrankError(f"split fractions need three values (train, dev, test), got "
                              f"{len(fractions)}")
    train, dev, test = (float(f) for f in fractions)
    if min(train, dev, test) < 0 or train <= 0 or test <= 0 or not math.isclose(
            train + dev + test, 1.0, abs_tol=1e-9):
        raise SpeechrankError(f"split fractions {tuple(fractions)} must be >= 0 with train "
                              "and test > 0, summing to 1")
    return train, dev, test


def _has_label(utt: Utterance, label: str) -> bool:
    value = utt.labels.get(label)
    return value is not None and value != ""


def _speaker_disjoint(utts: list[Utterance], fractions: tuple[float, float, float],
                      seed: int) -> tuple[list[str], dict[str, Any]]:
    groups = [u.speaker if u.speaker is not None else f"\0{u.uid}" for u in utts]
    n_groups = len(set(groups))
    _, dev_frac, test_frac = fractions
    needed = 3 if dev_frac > 0 else 2
    if n_groups < needed:
        raise SpeechrankError(f"a speaker-disjoint split needs at least {needed} speakers, "
                              f"found {n_groups}")
    # Whole groups per split: ceil of the held-out fraction, at least one group each.
    n_held = max(needed - 1, math.ceil((dev_frac + test_frac) * n_groups - 1e-9))
    n_held = min(n_held, n_groups - 1)
    index = np.arange(len(utts))
    outer = GroupShuffleSplit(n_splits=1, test_size=n_held, random_state=seed)
    train_idx, held_idx = next(outer.split(index, groups=groups))
    splits = np.empty(len(utts), dtype=object)
    splits[train_idx] = "train"
    splits[held_idx] = "test"
    if dev_frac > 0:
        n_test = min(max(1, round(test_frac / (dev_frac + test_frac) * n_held)), n_held - 1)
        held_groups = [groups[i] for i in held_idx]
        inner = GroupShuffleSplit(n_splits=1, test_size=n_test, random_state=seed)
        dev_part, test_part = next(inner.split(held_idx, groups=held_groups))
        splits[held_idx[dev_part]] = "dev"
        splits[held_idx[test_part]] = "test"
    speakers = {name: len({g for g, s in zip(groups, splits, strict=True) if s == name})
                for name in PROBE_SPLITS}
    return list(splits), {"method": "speaker_disjoint", "group": "speaker",
                          "sklearn": "GroupShuffleSplit", "speakers": speakers,
                          "utterances_without_speaker": sum(u.speaker is None for u in utts)}


def _stratified(utts: list[Utterance], label: str, fractions: tuple[float, float, float],
                seed: int) -> tuple[list[str], dict[str, Any]]:
    _, dev_frac, test_frac = fractions
    by_label: dict[str, list[int]] = collections.defaultdict(list)
    for i, u in enumerate(utts):
        by_label[str(u.labels[label])].append(i)
    splits = ["train"] * len(utts)
    needed = 1 + (dev_frac > 0) + (test_frac > 0)
    train_only = 0
    rng = np.random.RandomState(seed)  # one stream, consumed label by label in sorted order
    for value in sorted(by_label):
        members = by_label[value]
        if len(members) < needed:
            train_only += 1
            continue
        n_dev = max(1, round(dev_frac * len(members))) if dev_frac > 0 else 0
        n_test = max(1, round(test_frac * len(members)))
        n_dev, n_test = _fit(len(members), n_dev, n_test)
        _, held = train_test_split(members, test_size=n_dev + n_test, random_state=rng)
        for k, i in enumerate(held):
            splits[i] = "dev" if k < n_dev else "test"
    return splits, {"method": "stratified", "by": label, "sklearn": "train_test_split",
                    "labels": len(by_label), "labels_train_only": train_only}


def _fit(n: int, n_dev: int, n_test: int) -> tuple[int, int]:
    """Shrink dev/test counts (largest first, never below 1) until train keeps one."""
    while n - n_dev - n_test < 1:
        if n_dev >= n_test and n_dev > 1:
            n_dev -= 1
        elif n_test > 1:
            n_test -= 1
        else:
            break
    return n_dev, n_test


def assign_splits(dataset: Dataset, task_label: str, *, seed: int = 0,
                  fractions: Sequence[float] = DEFAULT_FRACTIONS,
                  speaker_disjoint: bool | None = None) -> Dataset:
    """A dataset whose utterances all carry a train/dev/test split for probing ``task_label``.

    Args:
        dataset: the utterances; those without ``task_label`` or in ``pretrain`` are left out.
        task_label: the label the probe predicts (``keyword``, ``speaker``, ``emotion`` ...).
        seed: seeds the random split (ignored when the corpus split is kept).
        fractions: train, dev and test fractions of a drawn split (of speakers when
            speaker-disjoint, of each label's utterances when stratified).
        speaker_disjoint: group by speaker (``True``) or stratify by ``task_label``
            (``False``); ``None`` picks stratified for ``task_label == "speaker"``, else
            speaker-disjoint.

    Raises:
        SpeechrankError: no utterance has the label, too few speakers, bad fractions, or a
            speaker-disjoint split asked for speaker identification.
    """
    fractions = _check_fractions(fractions)
    if speaker_disjoint is None:
        speaker_disjoint = task_label != "speaker"
    if speaker_disjoint and task_label == "speaker":
        raise SpeechrankError("speaker identification cannot use a speaker-disjoint split "
                              "(test speakers would be unseen classes)")
    labelled = [u for u in dataset.utterances if _has_label(u, task_label)]
    usable = [u for u in labelled if u.split != "pretrain"]
    dropped = {"no_label": len(dataset.utterances) - len(labelled),
               "pretrain": len(labelled) - len(usable)}
    if not labelled:
        raise SpeechrankError(f"{dataset.spec}: no utterance has the label {task_label!r}")
    if not usable:
        raise SpeechrankError(f"{dataset.spec}: every utterance with the label {task_label!r} "
                              "is in the pretrain split")
    record: dict[str, Any] = {"task_label": task_label, "dropped": dropped}
    if all(u.split in PROBE_SPLITS for u in usable):
        utterances = usable
        record.update(kept=dataset.info.get("split_source", "corpus"))
        split_source = dataset.info.get("split_source", "corpus")
    else:
        ordered = sorted(usable, key=lambda u: u.uid)
        if speaker_disjoint:
            splits, how = _speaker_disjoint(ordered, fractions, seed)
        else:
            splits, how = _stratified(ordered, task_label, fractions, seed)
        new_split = {u.uid: s for u, s in zip(ordered, splits, strict=True)}
        utterances = [dataclasses.replace(u, split=new_split[u.uid]) for u in usable]
        record.update(how, seed=seed, fractions=list(fractions),
                      replaced=dataset.info.get("split_source", "none"))
        split_source = "seeded"
    info = {**dataset.info, "n_utterances": len(utterances), "splits": split_counts(utterances),
            "split_source": split_source, "assign_splits": record}
    return dataclasses.replace(dataset, utterances=utterances, info=info)


def subset(dataset: Dataset, n: int, seed: int = 0) -> Dataset:
    """A seeded random subset of ``n`` utterances (all of them when ``n >= len(dataset)``).

    Utterances are sorted by id, permuted by ``numpy.random.default_rng(seed)`` and the first
    ``n`` kept, in id order: the same ``(n, seed)`` gives the same subset whatever the input
    order, and a smaller ``n`` gives a subset of a larger one.
    """
    if n < 0:
        raise SpeechrankError(f"subset size must be >= 0, got {n}")
    ordered = sorted(dataset.utterances, key=lambda u: u.uid)
    if n >= len(ordered):
        chosen = ordered
    else:
        order = np.random.default_rng(seed).permutation(len(ordered))[:n]
        chosen = [ordered[i] for i in sorted(order)]
    info = {**dataset.info, "n_utterances": len(chosen), "splits": split_counts(chosen),
            "subset": {"n": n, "seed": seed, "of": len(ordered)}}
    return dataclasses.replace(dataset, utterances=chosen, info=info)
