"""Seeded splits (speaker-disjoint / stratified) and seeded subsets."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speechrank.audio import Dataset, Utterance, load_dataset
from speechrank.audio.splits import assign_splits, subset
from speechrank.errors import SpeechrankError


def make(utterances: list[Utterance], **info: object) -> Dataset:
    return Dataset(spec="test", format="manifest", root="/", utterances=utterances,
                   info=dict(info))


def corpus(n_speakers: int, per_speaker: int, n_words: int = 3, seed: int = 0) -> Dataset:
    rng = random.Random(seed)
    utts = [Utterance(uid=f"s{s:02d}/u{i:03d}", path=f"/x/s{s}_{i}.wav",
                      labels={"speaker": f"s{s:02d}", "keyword": f"w{rng.randrange(n_words)}"})
            for s in range(n_speakers) for i in range(per_speaker)]
    return make(utts, split_source="none")


def splits_of(dataset: Dataset) -> dict[str, str | None]:
    return {u.uid: u.split for u in dataset.utterances}


def speakers_by_split(dataset: Dataset) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for u in dataset.utterances:
        out[u.split].add(u.speaker)
    return out


def test_corpus_split_is_kept(fsdd_root: Path) -> None:
    data = load_dataset(f"fsdd:{fsdd_root}")
    kept = assign_splits(data, "keyword", seed=5)
    assert splits_of(kept) == splits_of(data)
    assert kept.info["split_source"] == "rule"
    assert kept.info["assign_splits"]["kept"] == "rule"


def test_fsdd_speaker_disjoint_when_splits_are_dropped(fsdd_root: Path) -> None:
    data = load_dataset(f"fsdd:{fsdd_root}")
    bare = dataclasses.replace(data, utterances=[dataclasses.replace(u, split=None)
                                                 for u in data.utterances])
    out = assign_splits(bare, "keyword", seed=0)
    by_split = speakers_by_split(out)
    assert [len(by_split[s]) for s in ("train", "dev", "test")] == [4, 1, 1]
    assert out.info["split_source"] == "seeded"
    assert out.info["assign_splits"]["method"] == "speaker_disjoint"
    sid = assign_splits(bare, "speaker", seed=0)
    assert sid.info["splits"] == {"train": 2400, "dev": 300, "test": 300}
    assert all(len(v) == 6 for v in speakers_by_split(sid).values())


@settings(max_examples=60, deadline=None)
@given(n_speakers=st.integers(3, 25), per_speaker=st.integers(1, 12), seed=st.integers(0, 2**31))
def test_speaker_disjoint_properties(n_speakers: int, per_speaker: int, seed: int) -> None:
    data = corpus(n_speakers, per_speaker, seed=seed % 7)
    out = assign_splits(data, "keyword", seed=seed)
    assert len(out) == len(data)
    assert {u.split for u in out.utterances} == {"train", "dev", "test"}
    by_split = speakers_by_split(out)
    assert not (by_split["train"] & by_split["dev"] or by_split["train"] & by_split["test"]
                or by_split["dev"] & by_split["test"])
    # Deterministic, and independent of the input order.
    shuffled = list(data.utterances)
    random.Random(seed).shuffle(shuffled)
    again = assign_splits(make(shuffled), "keyword", seed=seed)
    assert splits_of(again) == splits_of(out)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 30), min_size=1, max_size=15),
       seed=st.integers(0, 2**31))
def test_stratified_properties(sizes: list[int], seed: int) -> None:
    utts = [Utterance(uid=f"u{k}-{i}", path="/x.wav", labels={"speaker": f"k{k}"})
            for k, size in enumerate(sizes) for i in range(size)]
    out = assign_splits(make(utts), "speaker", seed=seed)
    per_label: dict[str, Counter] = defaultdict(Counter)
    for u in out.utterances:
        per_label[u.labels["speaker"]][u.split] += 1
    for k, size in enumerate(sizes):
        counts = per_label[f"k{k}"]
        if size >= 3:
            assert min(counts["train"], counts["dev"], counts["test"]) >= 1
            assert counts["dev"] == max(1, round(0.1 * size)) or size < 5
        else:
            assert counts == {"train": size}
    assert out.info["assign_splits"]["labels_train_only"] == sum(s < 3 for s in sizes)
    shuffled = list(utts)
    random.Random(seed).shuffle(shuffled)
    assert splits_of(assign_splits(make(shuffled), "speaker", seed=seed)) == splits_of(out)


def test_seed_changes_the_split() -> None:
    data = corpus(30, 4)
    assert splits_of(assign_splits(data, "keyword", seed=0)) != splits_of(
        assign_splits(data, "keyword", seed=1))


def test_fractions_roughly_followed_and_no_dev() -> None:
    data = corpus(100, 2)
    out = assign_splits(data, "keyword", fractions=(0.6, 0.2, 0.2))
    assert out.info["assign_splits"]["speakers"] == {"train": 60, "dev": 20, "test": 20}
    no_dev = assign_splits(data, "keyword", fractions=(0.7, 0.0, 0.3))
    assert no_dev.info["assign_splits"]["speakers"] == {"train": 70, "dev": 0, "test": 30}


def test_unlabelled_and_pretrain_are_left_out() -> None:
    utts = corpus(5, 4).utterances
    utts[0] = dataclasses.replace(utts[0], labels={"speaker": "s00"})
    utts[1] = dataclasses.replace(utts[1], split="pretrain")
    out = assign_splits(make(utts), "keyword")
    assert len(out) == 18
    assert out.info["assign_splits"]["dropped"] == {"no_label": 1, "pretrain": 1}


def test_partial_corpus_split_is_replaced() -> None:
    utts = corpus(6, 5).utterances
    utts[0] = dataclasses.replace(utts[0], split="test")
    out = assign_splits(make(utts, split_source="manifest"), "keyword")
    assert out.info["split_source"] == "seeded"
    assert out.info["assign_splits"]["replaced"] == "manifest"


def test_speakerless_utterances_are_their_own_groups() -> None:
    utts = [Utterance(uid=f"u{i}", path="/x.wav", labels={"keyword": "a"}) for i in range(20)]
    out = assign_splits(make(utts), "keyword")
    assert out.info["assign_splits"]["utterances_without_speaker"] == 20
    assert Counter(u.split for u in out.utterances) == {"train": 16, "dev": 2, "test": 2}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"task_label": "speaker", "speaker_disjoint": True}, "speaker identification"),
    ({"task_label": "emotion"}, "no utterance has the label 'emotion'"),
    ({"task_label": "keyword", "fractions": (0.5, 0.5)}, "three values"),
    ({"task_label": "keyword", "fractions": (0.5, 0.3, 0.3)}, "summing to 1"),
    ({"task_label": "keyword", "fractions": (0.9, 0.1, 0.0)}, "test > 0"),
])
def test_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(SpeechrankError) as excinfo:
        assign_splits(corpus(5, 3), **kwargs)
    assert message in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_too_few_speakers() -> None:
    with pytest.raises(SpeechrankError) as excinfo:
        assign_splits(corpus(2, 10), "keyword")
    assert "at least 3 speakers, found 2" in str(excinfo.value)
    assert len(assign_splits(corpus(2, 10), "keyword", fractions=(0.5, 0, 0.5))) == 20


@settings(max_examples=50, deadline=None)
@given(total=st.integers(0, 60), n=st.integers(0, 70), seed=st.integers(0, 2**31))
def test_subset_properties(total: int, n: int, seed: int) -> None:
    data = corpus(1, total) if total else make([])
    picked = subset(data, n, seed)
    uids = [u.uid for u in picked.utterances]
    assert len(uids) == min(n, total) and uids == sorted(uids) and len(set(uids)) == len(uids)
    shuffled = list(data.utterances)
    random.Random(seed).shuffle(shuffled)
    assert [u.uid for u in subset(make(shuffled), n, seed).utterances] == uids
    smaller = {u.uid for u in subset(data, n // 2, seed).utterances}
    assert smaller <= set(uids)
    assert picked.info["subset"] == {"n": n, "seed": seed, "of": total}


def test_subset_seeds_differ_and_negative_refused() -> None:
    data = corpus(1, 100)
    assert subset(data, 10, 0).utterances != subset(data, 10, 1).utterances
    with pytest.raises(SpeechrankError):
        subset(data, -1)
