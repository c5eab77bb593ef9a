"""The synthetic corpus end to end: manifests, labels vs audio, speakers, SNR, determinism."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from speechrank.audio import synthetic_grammar as grammar
from speechrank.audio.synthetic import (
    CorpusProgress,
    CorpusSpec,
    CorpusSummary,
    make_corpus,
    plan_corpus,
)
from speechrank.audio.synthetic_render import SAMPLE_RATE, render, to_pcm16
from speechrank.errors import SpeechrankError

SETTINGS: dict[str, Any] = {
    "minutes": 1.0,
    "languages": ("en", "de"),
    "seed": 11,
    "snr_db": (0.0, 20.0),
}
MANIFESTS = ("pretrain", "train", "dev", "test", "test_unseen", "ood_de")
FIELDS = {
    "path", "split", "kind", "language", "accent", "speaker", "keyword", "transcript", "phones",
    "snr_db", "duration", "rate_wpm", "pitch",
}  # fmt: skip


def _read(root: Path, name: str) -> list[dict[str, Any]]:
    with (root / f"{name}.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "corpus.json"
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CorpusSummary]:
    root = tmp_path_factory.mktemp("corpus") / "out"
    events: list[CorpusProgress] = []
    summary = make_corpus(root, CorpusSpec(**SETTINGS), workers=1, progress=events.append)
    assert events and events[-1].done == events[-1].total == summary.total_clips
    assert [e.done for e in events] == list(range(1, len(events) + 1))
    assert events[-1].realtime_factor > 0
    return root, summary


def test_files_and_summary(corpus: tuple[Path, CorpusSummary]) -> None:
    root, summary = corpus
    assert tuple(summary.manifests) == MANIFESTS
    assert sorted(p.name for p in root.glob("*.jsonl")) == sorted(f"{m}.jsonl" for m in MANIFESTS)
    assert 40 <= summary.total_seconds <= 120  # a 1-minute target, with minimum sizes
    assert summary.realtime_factor > 0 and summary.espeak_version
    json.dumps(summary.to_dict())
    meta = json.loads((root / "corpus.json").read_text(encoding="utf-8"))
    assert meta["format"] == "speechrank-synthetic" and meta["seed"] == 11
    assert meta["settings"]["snr_db"] == [0.0, 20.0]
    assert meta["settings"]["languages"] == ["en", "de"]
    assert meta["keywords"]["en"] == list(grammar.KEYWORDS["en"])
    assert meta["espeak"]["version"] == summary.espeak_version
    assert set(meta["manifests"]) == set(MANIFESTS)
    assert meta["manifests"]["ood_de"]["splits"] == ["dev", "test", "train"]
    assert meta["manifests"]["ood_de"]["domain"] == "ood"
    assert set(meta["variants"]["held_out"]).isdisjoint(meta["variants"]["seen"])
    assert len(meta["speakers"]) == summary.n_speakers
    for name in MANIFESTS:
        rows = _read(root, name)
        assert summary.counts[name] == dict(sorted(Counter(r["kind"] for r in rows).items()))
        assert summary.seconds[name] == pytest.approx(sum(r["duration"] for r in rows), abs=1e-3)
    assert set(summary.phones["en"]) == {
        p for name in MANIFESTS[:5] for r in _read(root, name) for _, _, p in r["phones"]
    }


def test_labels_line_up_with_the_audio(corpus: tuple[Path, CorpusSummary]) -> None:
    root, _ = corpus
    for name in MANIFESTS:
        for row in _read(root, name):
            assert set(row) == FIELDS
            info = sf.info(str(root / row["path"]))
            assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
            assert info.frames / SAMPLE_RATE == pytest.approx(row["duration"], abs=1e-5)
            end = 0.0
            for start, stop, phone in row["phones"]:
                assert end <= start < stop <= row["duration"]
                assert phone and "ˈ" not in phone
                end = stop
            assert row["phones"], row
            assert row["split"] in ("pretrain", "train", "dev", "test", "test_unseen")
            if row["split"] == "pretrain":  # clean by default (the recipe adds its own noise)
                assert row["snr_db"] is None
            else:
                assert 0.0 <= row["snr_db"] <= 20.0
            if row["kind"] == "keyword":
                assert row["keyword"] == row["transcript"]
                assert row["keyword"] in grammar.KEYWORDS[row["language"]]
                assert 1.0 <= row["duration"] <= 1.5
            else:
                assert row["kind"] == "sentence" and row["keyword"] is None
                assert 0.8 < row["duration"] < 10 and len(row["transcript"].split()) >= 2


def test_speaker_design(corpus: tuple[Path, CorpusSummary]) -> None:
    root, summary = corpus
    rows = {name: _read(root, name) for name in MANIFESTS}
    speakers = {name: {r["speaker"] for r in rows[name]} for name in MANIFESTS}
    # closed set for speaker ID: every probe speaker is in train, dev and test
    assert speakers["train"] == speakers["dev"] == speakers["test"]
    assert len(speakers["train"]) >= 2
    # pretrain, probe, unseen and out-of-domain speakers are disjoint
    groups = [speakers["pretrain"], speakers["train"], speakers["test_unseen"], speakers["ood_de"]]
    assert sum(len(g) for g in groups) == len(set().union(*groups)) == summary.n_speakers
    meta = json.loads((root / "corpus.json").read_text(encoding="utf-8"))
    variant = {s["id"]: s["variant"] for s in meta["speakers"]}
    held_out = set(meta["variants"]["held_out"])
    assert all(variant[s] in held_out for s in speakers["test_unseen"])
    assert not any(variant[s] in held_out for s in speakers["train"] | speakers["pretrain"])
    by_split = defaultdict(set)
    for row in rows["ood_de"]:
        assert row["language"] == "de" and row["accent"] == "de"
        by_split[row["split"]].add(row["speaker"])
    assert by_split["train"] == by_split["dev"] == by_split["test"]
    assert all(r["language"] == "en" for name in MANIFESTS[:5] for r in rows[name])


def test_keywords_are_dealt_evenly_within_each_split(corpus: tuple[Path, CorpusSummary]) -> None:
    root, _ = corpus
    for name in ("train", "dev", "test", "test_unseen"):
        counts = Counter(r["keyword"] for r in _read(root, name) if r["kind"] == "keyword")
        assert max(counts.values()) - min(counts.values()) <= 1
        if sum(counts.values()) >= len(grammar.KEYWORDS["en"]):
            assert len(counts) == len(grammar.KEYWORDS["en"])


def test_wavs_are_the_rendered_jobs_and_the_snr_is_achieved(
    corpus: tuple[Path, CorpusSummary],
) -> None:
    root, _ = corpus
    plan = plan_corpus(CorpusSpec(**SETTINGS))
    rows = {r["path"]: r for name in MANIFESTS for r in _read(root, name)}
    assert set(rows) == {job.path for job in plan.jobs}
    for job in plan.jobs[:: max(1, len(plan.jobs) // 8)]:
        clip = render(job)
        written, _ = sf.read(str(root / job.path), dtype="int16")
        assert np.array_equal(written, to_pcm16(clip.audio))
        if rows[job.path]["snr_db"] is None:  # a clean pretraining clip
            assert np.array_equal(clip.audio, clip.clean)
            continue
        lo, hi = clip.speech
        noise = clip.audio - clip.clean
        measured = 10 * np.log10(np.mean(clip.clean[lo:hi] ** 2) / np.mean(noise[lo:hi] ** 2))
        assert measured == pytest.approx(rows[job.path]["snr_db"], abs=1e-6)
        # the same from the 16-bit file: the clean part is the least-squares fit
        audio = written.astype(np.float64)[lo:hi]
        clean = to_pcm16(clip.clean).astype(np.float64)[lo:hi]
        gain = float(audio @ clean / (clean @ clean))
        residual = audio - gain * clean
        from_file = 10 * np.log10(np.mean((gain * clean) ** 2) / np.mean(residual**2))
        assert from_file == pytest.approx(rows[job.path]["snr_db"], abs=0.5)


@pytest.mark.slow
def test_same_seed_same_bytes_whatever_the_workers(
    corpus: tuple[Path, CorpusSummary], tmp_path: Path
) -> None:
    root, _ = corpus
    again = make_corpus(tmp_path / "again", CorpusSpec(**SETTINGS), workers=2, progress=False)
    assert again.workers == 2
    assert _digest(tmp_path / "again") == _digest(root)
    first = json.loads((root / "corpus.json").read_text(encoding="utf-8"))
    second = json.loads((tmp_path / "again" / "corpus.json").read_text(encoding="utf-8"))
    first.pop("generation"), second.pop("generation")
    assert first == second
    other = plan_corpus(CorpusSpec(**{**SETTINGS, "seed": 12}))
    same = plan_corpus(CorpusSpec(**SETTINGS))
    assert [j.text for j in other.jobs] != [j.text for j in same.jobs]


def test_clean_corpus_and_pink_noise(tmp_path: Path) -> None:
    summary = make_corpus(tmp_path / "clean",
                          CorpusSpec(minutes=0.3, languages=("en",), snr_db=None), progress=False)
    assert list(summary.manifests) == ["pretrain", "train", "dev", "test", "test_unseen"]
    rows = _read(tmp_path / "clean", "train")
    assert all(r["snr_db"] is None for r in rows)
    pink = make_corpus(tmp_path / "pink",
                       CorpusSpec(minutes=0.3, languages=("en",), snr_db=5, noise="pink"),
                       progress=False)
    assert pink.noise == "pink" and pink.snr_db == 5.0
    assert all(r["snr_db"] == 5.0 for r in _read(tmp_path / "pink", "train"))


def test_enough_speakers_at_a_modest_size() -> None:
    plan = plan_corpus(CorpusSpec(minutes=20, languages=("en", "de", "es")))
    english = {j.speaker for j in plan.jobs if j.language == "en"}
    probe = {j.speaker for j in plan.jobs if j.split in ("train", "dev", "test")}
    probe_en = {j.speaker for j in plan.jobs if j.manifest in ("train", "dev", "test")}
    assert len(probe_en) >= 40 and len(english) >= len(probe_en) + 20  # + pretrain, unseen
    assert len(probe) > len(probe_en)  # the German and Spanish closed sets
    keywords = Counter(j.keyword for j in plan.jobs if j.manifest == "train" and j.keyword)
    assert len(keywords) == len(grammar.KEYWORDS["en"])
    assert min(keywords.values()) >= 8
    kinds = Counter((j.manifest, j.kind) for j in plan.jobs)
    for kind in ("keyword", "sentence"):
        assert kinds[("dev", kind)] == pytest.approx(kinds[("test", kind)], rel=0.1)
        assert kinds[("train", kind)] > 2 * kinds[("test", kind)]
    small = plan_corpus(CorpusSpec(minutes=0.5, probe_speakers=40, languages=("en",)))
    assert len({j.speaker for j in small.jobs if j.manifest == "train"}) == 40


def test_bad_settings_are_user_errors(tmp_path: Path) -> None:
    bad: list[dict[str, Any]] = [
        {"minutes": 0},
        {"minutes": float("nan")},
        {"minutes": "ten"},
        {"languages": ()},
        {"languages": ("en", "xx")},
        {"languages": ("en", "en")},
        {"snr_db": "loud"},
        {"snr_db": (10, 0)},
        {"snr_db": float("inf")},
        {"noise": "brown"},
        {"probe_speakers": 1},
        {"seed": -1},
    ]
    for options in bad:
        with pytest.raises(SpeechrankError):
            plan_corpus(CorpusSpec(**options))
    with pytest.raises(SpeechrankError, match="workers"):
        make_corpus(tmp_path / "w", CorpusSpec(minutes=0.1), workers=0, progress=False)
    with pytest.raises(SpeechrankError, match="progress"):
        make_corpus(tmp_path / "p", CorpusSpec(minutes=0.1),
                    progress="yes")  # type: ignore[arg-type]


def test_overwrite_rules(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SpeechrankError, match="not empty"):
        make_corpus(other, CorpusSpec(minutes=0.1), progress=False)
    with pytest.raises(SpeechrankError, match=r"no corpus\.json"):
        make_corpus(other, CorpusSpec(minutes=0.1), progress=False, overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"

    out = tmp_path / "corpus"
    make_corpus(out, CorpusSpec(minutes=0.1, languages=("en", "de")), progress=False)
    assert (out / "ood_de.jsonl").exists()
    with pytest.raises(SpeechrankError, match="not empty"):
        make_corpus(out, CorpusSpec(minutes=0.1), progress=False)
    make_corpus(out, CorpusSpec(minutes=0.1, languages=("en",)), progress=False, overwrite=True)
    assert not (out / "ood_de.jsonl").exists()
    assert not (out / "wav" / "ood_de").exists()
    listed = {row["path"] for name in ("pretrain", "train", "dev", "test", "test_unseen")
              for row in _read(out, name)}  # fmt: skip
    assert listed == {str(p.relative_to(out)) for p in (out / "wav").rglob("*.wav")}


def test_the_dataset_reader_reads_the_corpus(corpus: tuple[Path, CorpusSummary]) -> None:
    from speechrank.audio import load_dataset

    root, summary = corpus
    dataset = load_dataset(f"synthetic:{root}")
    expected = sum(sum(summary.counts[m].values()) for m in ("pretrain", "train", "dev", "test"))
    assert len(dataset) == expected
    assert {u.split for u in dataset.utterances} == {"pretrain", "train", "dev", "test"}
    assert all(Path(u.path).is_file() for u in dataset.utterances)


def test_a_failing_run_leaves_nothing_behind(tmp_path: Path) -> None:
    calls: list[int] = []

    def stop_midway(progress: CorpusProgress) -> None:
        calls.append(progress.done)
        if progress.done == 3:
            raise KeyboardInterrupt

    out = tmp_path / "new"
    with pytest.raises(KeyboardInterrupt):
        make_corpus(out, CorpusSpec(minutes=0.2, languages=("en",)), workers=1,
                    progress=stop_midway)
    assert calls == [1, 2, 3] and not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KeyboardInterrupt):
        make_corpus(empty, CorpusSpec(minutes=0.2, languages=("en",)), workers=1,
                    progress=stop_midway)
    assert empty.is_dir() and not any(empty.iterdir())


@pytest.mark.slow
def test_a_failing_worker_is_reported(tmp_path: Path) -> None:
    from speechrank.audio.synthetic import _worker_records
    from speechrank.audio.synthetic_espeak import Voice

    jobs = list(plan_corpus(CorpusSpec(minutes=0.1, languages=("en",))).jobs[:4])
    jobs[3] = dataclasses.replace(jobs[3], voice=Voice("xx-no-such-voice"))
    records = _worker_records(jobs, str(tmp_path), workers=2)
    with pytest.raises(RuntimeError, match="no voice named"):
        list(records)
    # Whether the other worker finished its clips before the failure stopped the pool is a
    # race between the two processes, so only the report itself is checked here.
