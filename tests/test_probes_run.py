"""`run_probe` end to end: FSDD keyword and speaker probes, the feature cache, phone probes on
the synthetic corpus, skipped files and every task's error messages."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from speechrank.audio.datasets import load_dataset
from speechrank.audio.utterance import Dataset, Utterance
from speechrank.encoders import load_encoder
from speechrank.errors import AudioError, SpeechrankError
from speechrank.probes import (
    CTCProbeConfig,
    FrameProbeConfig,
    ProbeRun,
    resolve_cache_dir,
    resolve_task,
    run_probe,
)
from speechrank.probes.features import CACHE_ENV, data_fingerprint
from speechrank.results import dumps_json

from .conftest import write_tone

# FSDD indices kept for the small test version of the usual split (0-4 test, 5-9 dev, rest
# train): two per split, three speakers, all ten digits -> 180 recordings.
_INDICES = {0, 1, 5, 6, 10, 11}
_SPEAKERS = {"jackson", "theo", "nicolas"}


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("random:tiny")


@pytest.fixture(scope="module")
def fsdd_small(fsdd_root) -> Dataset:
    full = load_dataset(f"fsdd:{fsdd_root}")
    keep = [u for u in full.utterances
            if int(Path(u.path).stem.split("_")[2]) in _INDICES and u.speaker in _SPEAKERS]
    return dataclasses.replace(full, utterances=keep)


class _Counting:
    """Counts calls to an encoder's ``encode``."""

    def __init__(self, encoder, monkeypatch):
        self.calls = 0
        original = encoder.encode

        def encode(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(encoder, "encode", encode)


@pytest.fixture(scope="module")
def fsdd_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="module")
def ks_result(encoder, fsdd_small, fsdd_cache):
    return run_probe(encoder, fsdd_small, "ks", run=ProbeRun(cache_dir=fsdd_cache), progress=False)


@pytest.mark.slow
def test_fsdd_keyword_probe_per_layer(ks_result, encoder, capsys):
    result = ks_result
    layers = [n for n in encoder.layer_names if n != "cnn"]
    assert result.info["layers"] == layers
    assert result.info["counts"]["train"] == result.info["counts"]["dev"] == 60
    assert result.info["counts"]["test"] == 60
    assert result.info["classes"] == [str(d) for d in range(10)]
    assert result.info["chance"]["test"]["uniform"] == pytest.approx(0.1)
    assert result.info["splits"]["source"] == "rule"
    assert len(result.rows) == len(layers) * 3 * 2  # layer x split x {accuracy, macro_f1}
    for row in result.rows:
        assert row.task == "ks" and row.pooling == "mean" and row.dim == encoder.dim
        assert row.metric in ("accuracy", "macro_f1") and 0.0 <= row.value <= 1.0
        assert row.n_rows == result.info["counts"][row.split]
        assert row.conventions["C"] in row.conventions["c_grid"]
        assert row.conventions["standardised"] is True and row.conventions["seed"] == 0
        assert row.conventions["split_source"] == "rule"
    test_acc = result.scores("test")
    print("FSDD ks (subset) test accuracy per layer:",
          {k: round(v, 3) for k, v in test_acc.items()})
    # Random features of real speech still beat chance on ten digits.
    assert max(test_acc.values()) > 0.2
    payload = json.loads(dumps_json(result.to_json()))
    assert payload["results"][0]["split"] in ("train", "dev", "test")
    assert payload["command"] == "probe" and payload["task"] == "ks"


@pytest.mark.slow
def test_cache_hit_skips_the_encoder_and_is_shared_across_tasks(
        ks_result, encoder, fsdd_small, fsdd_cache, monkeypatch):
    counter = _Counting(encoder, monkeypatch)
    again = run_probe(encoder, fsdd_small, "ks", run=ProbeRun(cache_dir=fsdd_cache), progress=False)
    assert counter.calls == 0
    assert again.info["cache"]["hit"] is True
    assert [r.value for r in again.rows] == [r.value for r in ks_result.rows]
    sid = run_probe(encoder, fsdd_small, "sid", run=ProbeRun(cache_dir=fsdd_cache), progress=False)
    assert counter.calls == 0  # the same recordings: the same features
    assert sid.info["label"] == "speaker" and len(sid.info["classes"]) == 3
    assert {r.task for r in sid.rows} == {"sid"}
    print("FSDD sid (subset) test accuracy per layer:",
          {k: round(v, 3) for k, v in sid.scores("test").items()})


@pytest.mark.slow
def test_same_seed_same_numbers_without_the_cache(ks_result, encoder, fsdd_small):
    fresh = run_probe(encoder, fsdd_small, "ks", run=ProbeRun(use_cache=False), progress=False)
    assert fresh.info["cache"]["hit"] is False
    assert [r.value for r in fresh.rows] == [r.value for r in ks_result.rows]
    assert [r.conventions["C"] for r in fresh.rows] == [r.conventions["C"]
                                                       for r in ks_result.rows]


def _tone_dataset(root: Path, n_per_split=(8, 4, 4)) -> Dataset:
    """Two 'keywords' (low and high tones), plus per-utterance speakers."""
    utterances = []
    for split, n in zip(("train", "dev", "test"), n_per_split, strict=True):
        for i in range(n):
            word = "low" if i % 2 == 0 else "high"
            path = write_tone(root / f"{split}{i}.wav", 0.4 + 0.05 * i,
                              freq=200.0 if word == "low" else 1500.0, seed=i)
            utterances.append(Utterance(uid=path.name, path=str(path),
                                        labels={"keyword": word, "speaker": f"s{i % 4}",
                                                "colour": ["red", "blue"][i % 2]},
                                        split=split))
    return Dataset(spec=str(root), format="manifest", root=str(root), utterances=utterances,
                   info={"split_source": "manifest"})


@pytest.mark.slow
def test_layer_subset_then_all_computes_only_missing_layers(encoder, tmp_path, monkeypatch):
    data = _tone_dataset(tmp_path / "audio")
    cache = tmp_path / "cache"
    first = run_probe(encoder, data, "ks", run=ProbeRun(layers="0,2", cache_dir=cache),
                      progress=False)
    assert first.info["cache"]["computed_layers"] == ["0", "2"]
    counter = _Counting(encoder, monkeypatch)
    second = run_probe(encoder, data, "ks", run=ProbeRun(cache_dir=cache), progress=False)
    assert second.info["cache"]["hit_layers"] == ["0", "2"]
    assert second.info["cache"]["computed_layers"] == ["1", "3", "4"]
    assert counter.calls > 0
    calls = counter.calls
    third = run_probe(encoder, data, "label:colour", run=ProbeRun(cache_dir=cache), progress=False)
    assert counter.calls == calls and third.info["cache"]["hit"] is True
    assert {r.task for r in third.rows} == {"label:colour"}
    # Rows of the layers both runs measured agree exactly.
    a = {(r.layer, r.split, r.metric): r.value for r in first.rows}
    b = {(r.layer, r.split, r.metric): r.value for r in second.rows}
    assert all(b[k] == v for k, v in a.items())


def test_linearly_separable_tones_score_near_the_top(encoder, tmp_path):
    result = run_probe(encoder, _tone_dataset(tmp_path, (16, 8, 8)), "ks",
                       run=ProbeRun(layers="0", use_cache=False), progress=False)
    assert result.scores("test")["0"] >= 0.85


def test_data_fingerprint_tracks_files_and_settings(tmp_path):
    data = _tone_dataset(tmp_path, (2, 1, 1))
    base = data_fingerprint(data.utterances, sample_rate=16_000, max_seconds=None)
    assert base == data_fingerprint(data.utterances, sample_rate=16_000, max_seconds=None)
    assert base != data_fingerprint(data.utterances, sample_rate=8_000, max_seconds=None)
    assert base != data_fingerprint(data.utterances, sample_rate=16_000, max_seconds=1.0)
    assert base != data_fingerprint(data.utterances[1:], sample_rate=16_000, max_seconds=None)
    write_tone(Path(data.utterances[0].path), 0.9, seed=7)  # rewritten file
    assert base != data_fingerprint(data.utterances, sample_rate=16_000, max_seconds=None)
    content = data_fingerprint(data.utterances, sample_rate=16_000, max_seconds=None,
                               content_hash=True)
    assert content == data_fingerprint(data.utterances, sample_rate=16_000, max_seconds=None,
                                       content_hash=True)


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert resolve_cache_dir() == Path("~/.cache/speechrank/features").expanduser()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_skipped_files_are_reported_and_strict_raises(encoder, tmp_path):
    data = _tone_dataset(tmp_path / "audio")
    broken = tmp_path / "audio" / "broken.wav"
    broken.write_bytes(b"not audio at all")
    bad = Utterance(uid="broken.wav", path=str(broken), labels={"keyword": "low"},
                    split="train")
    data = dataclasses.replace(data, utterances=[*data.utterances, bad])
    cache = tmp_path / "cache"
    result = run_probe(encoder, data, "ks", run=ProbeRun(layers="1", cache_dir=cache),
                       progress=False)
    assert [s["path"] for s in result.info["skipped"]] == [str(broken)]
    assert result.info["counts"]["skipped_by_reason"] == {"unreadable": 1}
    assert result.info["counts"]["train"] == 8
    # A cache hit reports the same skips; in strict mode it fails as a fresh run would.
    again = run_probe(encoder, data, "ks", run=ProbeRun(layers="1", cache_dir=cache),
                      progress=False)
    assert again.info["skipped"] == result.info["skipped"]
    with pytest.raises(AudioError, match="unreadable"):
        run_probe(encoder, data, "ks", run=ProbeRun(layers="1", cache_dir=cache, strict=True),
                  progress=False)
    with pytest.raises(AudioError, match="unreadable"):
        run_probe(encoder, data, "ks", run=ProbeRun(layers="1", use_cache=False, strict=True),
                  progress=False)


# ----------------------------------------------------------------------------- errors


def test_task_errors(encoder, tmp_path):
    data = _tone_dataset(tmp_path, (2, 1, 1))
    with pytest.raises(SpeechrankError, match=r"has no 'emotion' labels; available: colour, "
                                              r"keyword, speaker"):
        run_probe(encoder, data, "er", progress=False)
    with pytest.raises(SpeechrankError, match="unknown task 'asr'; choose from ks, sid, er, pr"):
        run_probe(encoder, data, "asr", progress=False)
    with pytest.raises(SpeechrankError, match="has no 'accent' labels"):
        run_probe(encoder, data, "label:accent", progress=False)
    with pytest.raises(SpeechrankError, match="needs a column name"):
        run_probe(encoder, data, "label:", progress=False)
    with pytest.raises(SpeechrankError, match="has no 'phones' or 'transcript' labels"):
        run_probe(encoder, data, "pr", progress=False)
    with pytest.raises(SpeechrankError, match="unknown layer '9'"):
        run_probe(encoder, data, "ks", run=ProbeRun(layers="9"), progress=False)
    with pytest.raises(SpeechrankError, match="task ks needs a UtteranceProbeConfig, got "
                                              "FrameProbeConfig"):
        run_probe(encoder, data, "ks", run=ProbeRun(config=FrameProbeConfig()), progress=False)
    with pytest.raises(SpeechrankError, match="--max-seconds must be a positive number"):
        run_probe(encoder, data, "ks", max_seconds=0, progress=False)


def test_too_few_classes_or_examples(encoder, tmp_path):
    data = _tone_dataset(tmp_path, (4, 2, 2))
    one_class = dataclasses.replace(data, utterances=[
        dataclasses.replace(u, labels={**u.labels, "keyword": "low"}) if u.split == "train"
        else u for u in data.utterances])
    with pytest.raises(SpeechrankError, match="train split has only 'low' as 'keyword' class"):
        run_probe(encoder, one_class, "ks", progress=False)
    no_dev = dataclasses.replace(data, utterances=[
        dataclasses.replace(u, split="train") if u.split == "dev" else u
        for u in data.utterances])
    with pytest.raises(SpeechrankError, match=r"the dev split has no utterances with "
                                              r"'keyword' labels \(train 6, dev 0, test 2\)"):
        run_probe(encoder, no_dev, "ks", progress=False)


def test_resolve_task_picks_the_label():
    def ds(labels):
        return Dataset(spec="x", format="manifest", root="/", utterances=[
            Utterance(uid="a", path="/a.wav", labels=labels)])

    assert resolve_task("ks", ds({"keyword": "yes", "keyword12": "_unknown_"})).label == \
        "keyword12"
    assert resolve_task("ks", ds({"keyword": "yes"})).label == "keyword"
    assert resolve_task("pr", ds({"phones": [[0, 1, "a"]], "transcript": "a"})).kind == "frames"
    assert resolve_task("pr", ds({"transcript": "a"})).kind == "ctc"
    both = ds({"phones": [[0, 1, "a"]], "transcript": "a"})
    assert resolve_task("pr", both, pr_kind="ctc").label == "transcript"
    with pytest.raises(SpeechrankError, match="has no 'transcript' labels; available: phones"):
        resolve_task("pr", ds({"phones": [[0, 1, "a"]]}), pr_kind="ctc")
    assert resolve_task("sid", ds({"speaker": "s1"})).metrics == ("accuracy", "macro_f1")
    with pytest.raises(SpeechrankError, match=r"has no 'keyword12' or 'keyword' labels; "
                                              r"available: none"):
        resolve_task("ks", ds({"keyword": ""}))


# ----------------------------------------------------------------------------- phones


@pytest.fixture(scope="module")
def synthetic_corpus(tmp_path_factory) -> Path:
    from speechrank.audio.synthetic import CorpusSpec, make_corpus

    out = tmp_path_factory.mktemp("synthetic") / "corpus"
    make_corpus(out, CorpusSpec(minutes=1.0, languages=("en",)), progress=False)
    return out


def rows_c(result, layer):
    return next(r.conventions["C"] for r in result.rows if r.layer == layer)


@pytest.mark.slow
def test_phone_frame_probe_on_the_synthetic_corpus(encoder, synthetic_corpus, tmp_path):
    config = FrameProbeConfig(max_frames={"train": 600, "dev": 200, "test": 200})
    result = run_probe(encoder, f"synthetic:{synthetic_corpus}", "pr",
                       run=ProbeRun(layers="0,4", cache_dir=tmp_path, config=config),
                       progress=False)
    assert result.info["probe"] == "frames" and result.info["label"] == "phones"
    assert "sil" in result.info["classes"] and len(result.info["classes"]) > 5
    counts = result.info["counts"]
    assert counts["train"] <= 600 + 40 and counts["dev"] <= 200 + 40  # cap (+1 per utt)
    assert {r.metric for r in result.rows} == {"frame_accuracy"}
    assert {r.pooling for r in result.rows} == {"frames"}
    for row in result.rows:
        assert 0.0 <= row.value <= 1.0 and row.n_rows == counts[row.split]
        assert row.conventions["frame_time"].startswith("centre")
    assert set(result.info["fits"]) == {"0", "4"}
    assert result.info["fits"]["0"]["C"] == rows_c(result, "0")
    print("synthetic pr frame accuracy (test):", result.scores("test"))


@pytest.mark.slow
def test_phone_ctc_probe_from_transcripts(encoder, synthetic_corpus, tmp_path):
    manifest = tmp_path / "no_phones.jsonl"
    with manifest.open("w") as out:
        for name in ("train", "dev", "test"):
            for line in (synthetic_corpus / f"{name}.jsonl").read_text().splitlines():
                record = json.loads(line)
                record.pop("phones")
                record["path"] = str(synthetic_corpus / record["path"])
                record["split"] = name
                out.write(json.dumps(record) + "\n")
    config = CTCProbeConfig(steps=30, eval_every=10)
    result = run_probe(encoder, str(manifest), "pr",
                       run=ProbeRun(layers="4", cache_dir=tmp_path / "c", config=config),
                       progress=False)
    assert result.info["probe"] == "ctc" and result.info["label"] == "transcript"
    assert {r.metric for r in result.rows} == {"per"}
    rows = {r.split: r for r in result.rows}
    assert set(rows) == {"train", "dev", "test"}
    assert all(np.isfinite(r.value) and r.value >= 0 for r in rows.values())
    assert rows["dev"].conventions["steps"] == 30
    assert rows["dev"].conventions["best_step"] in (0, 10, 20, 30)
    assert len(result.info["classes"]) > 5  # phone inventory from eSpeak NG
