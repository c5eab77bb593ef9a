"""One encoder pass shared by rank and probes (FrameMemo), layer fits in worker processes,
the corpus's train:dev:test weights and per-split probe caps."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from speechrank.audio import load_dataset
from speechrank.audio.synthetic import CorpusSpec, plan_corpus, split_pattern
from speechrank.encoders import load_encoder
from speechrank.errors import SpeechrankError
from speechrank.extract import FrameMemo, Reading, iter_encoded, plan_utterances
from speechrank.probes import ProbeRun, run_probe
from speechrank.probes.config import LogisticConfig
from speechrank.probes.linear import (
    fit_logistic_probe,
    fit_logistic_probes,
    problem_digest,
    rescore,
)
from speechrank.rank import run_rank
from speechrank.spec import MeasureSpec
from speechrank.store import ResultStore
from speechrank.sweep import SweepConfig, probe_recipe, sweep

from .conftest import write_csv_manifest, write_tone


def _tones(root: Path, n: int = 30) -> Path:
    """``n`` labelled tones of different lengths, with a split column."""
    rows = []
    for i in range(n):
        label = ("low", "mid", "high")[i % 3]
        freq = {"low": 200.0, "mid": 500.0, "high": 1100.0}[label] + 5 * i
        path = write_tone(root / "audio" / f"t{i:02d}.wav", 0.3 + 0.03 * i, freq=freq, seed=i)
        rows.append({"path": str(path.relative_to(root)), "pitch": label,
                     "split": ("train", "train", "train", "dev", "test")[i % 5]})
    return write_csv_manifest(root / "tones.csv", rows)


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> Path:
    return _tones(tmp_path_factory.mktemp("tones"))


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("random:tiny")


class _Counting:
    """Counts the utterances an encoder's ``encode`` sees."""

    def __init__(self, encoder, monkeypatch):
        self.utterances = 0
        original = encoder.encode

        def encode(waveforms, *args, **kwargs):
            self.utterances += waveforms.shape[0]
            return original(waveforms, *args, **kwargs)

        monkeypatch.setattr(encoder, "encode", encode)


def test_second_pass_replays_the_first_without_the_encoder(encoder, tones, monkeypatch,
                                                          one_torch_thread):
    dataset = load_dataset(str(tones))
    memo = FrameMemo()
    first = list(iter_encoded(encoder, dataset.utterances, memo=memo, reading=Reading(2.0)))
    assert memo.misses == len(dataset) and memo.hits == 0 and len(memo) == len(dataset)
    counter = _Counting(encoder, monkeypatch)
    seconds: list[float] = []
    second = list(iter_encoded(encoder, dataset.utterances, memo=memo, reading=Reading(2.0),
                               progress=seconds.append))
    assert counter.utterances == 0
    assert memo.hits == len(dataset)
    planned = plan_utterances(encoder, dataset.utterances)
    assert sum(seconds) == pytest.approx(sum(p.num_samples for p in planned) / 16_000)

    def frames_by_uid(batches):
        out = {}
        for batch in batches:
            for row, utt in enumerate(batch.utterances):
                n = int(batch.output.lengths[row])
                out[utt.uid] = {name: t[row, :n] for name, t in batch.output.layers.items()}
                # padding stays zero and never reaches a consumer as a valid frame
                assert all(t.shape[1] >= n for t in batch.output.layers.values())
        return out

    a, b = frames_by_uid(first), frames_by_uid(second)
    assert a.keys() == b.keys()
    for uid in a:
        for name in a[uid]:
            assert torch.equal(a[uid][name], b[uid][name])


def test_memo_keys_layers_crops_budget_and_owner(encoder, tones, monkeypatch):
    dataset = load_dataset(str(tones))
    utterances = dataset.utterances[:6]
    memo = FrameMemo()
    list(iter_encoded(encoder, utterances, layers=["1"], memo=memo))
    counter = _Counting(encoder, monkeypatch)
    list(iter_encoded(encoder, utterances, layers=["1", "2"], memo=memo))  # layer 2 missing
    assert counter.utterances == len(utterances)
    list(iter_encoded(encoder, utterances, layers=["2"], memo=memo))  # now stored
    assert counter.utterances == len(utterances)
    list(iter_encoded(encoder, utterances, layers=["1"], memo=memo,
                      reading=Reading(crop_seconds=0.2)))  # crop
    assert counter.utterances == 2 * len(utterances)

    empty = FrameMemo(max_bytes=0)
    list(iter_encoded(encoder, utterances, memo=empty))
    assert len(empty) == 0 and empty.refused == len(utterances) and empty.bytes == 0

    with pytest.raises(SpeechrankError, match="one model"):
        list(iter_encoded(load_encoder("random:tiny"), utterances, memo=memo))
    with pytest.raises(ValueError):
        FrameMemo(max_bytes=-1)


def test_rank_and_probe_share_one_pass(encoder, tones, tmp_path, monkeypatch, one_torch_thread):
    dataset = load_dataset(str(tones))
    memo = FrameMemo()
    counter = _Counting(encoder, monkeypatch)
    rank = run_rank(encoder, dataset, MeasureSpec(poolings="sum,frames", max_frames=300),
                    memo=memo, progress=False)
    encoded_by_rank = counter.utterances
    assert encoded_by_rank == len(dataset)
    shared = run_probe(encoder, dataset, "label:pitch",
                       run=ProbeRun(cache_dir=tmp_path / "a", memo=memo), progress=False)
    assert counter.utterances == encoded_by_rank  # the probe ran no forward pass
    fresh = run_probe(encoder, dataset, "label:pitch", run=ProbeRun(cache_dir=tmp_path / "b"),
                      progress=False)
    for got, want in zip(shared.rows, fresh.rows, strict=True):
        assert (got.layer, got.split, got.metric) == (want.layer, want.split, want.metric)
        assert got.value == pytest.approx(want.value, abs=1e-9, nan_ok=True)
    again = run_rank(encoder, dataset, MeasureSpec(poolings="sum,frames", max_frames=300),
                     memo=memo, progress=False)
    for got, want in zip(again.rows, rank.rows, strict=True):
        assert got.value == pytest.approx(want.value, rel=1e-5, nan_ok=True)


def _memo_sweep_config(tones: Path, tmp_path: Path, extra_probe: str = "") -> str:
    """A sweep config of RankMe plus a pitch probe on ``tones`` (and ``extra_probe``), with
    ``MODE`` and ``MEMO`` left for :func:`_sweep_with_and_without_memo`."""
    return f"""
[rank]
data = "{tones}"
poolings = ["sum"]
metrics = ["rankme"]

[[probe]]
name = "pitch"
task = "label:pitch"
data = "{tones}"
{extra_probe}
[options]
cache_dir = "{tmp_path / 'cache-MODE'}"
memo_gb = MEMO
"""


def _sweep_with_and_without_memo(config: str, tmp_path: Path
                                 ) -> tuple[dict[str, list[str]], dict[str, dict]]:
    """Sweep ``tmp_path/ckpts.txt`` with ``config`` (``MODE`` and ``MEMO`` filled in) once
    with a frame memo and once without; each run's log lines and stored values by key."""
    lines: dict[str, list[str]] = {}
    values: dict[str, dict] = {}
    for mode, gb in (("memo", "1.0"), ("none", "0")):
        path = tmp_path / f"{mode}.toml"
        path.write_text(config.replace("MODE", mode).replace("MEMO", gb))
        lines[mode] = []
        sweep(tmp_path / "ckpts.txt", path, tmp_path / f"{mode}.sqlite", progress=False,
              log=lines[mode].append)
        with ResultStore(tmp_path / f"{mode}.sqlite", create=False) as store:
            values[mode] = {(r.checkpoint, r.task, r.layer, r.split, r.metric): r.value
                            for r in store.rows()}
    return lines, values


def test_sweep_with_memo_matches_one_without(tones, tmp_path):
    (tmp_path / "ckpts.txt").write_text("random:tiny@0 0\nrandom:tiny@1 10\n")
    config = _memo_sweep_config(tones, tmp_path)
    lines, values = _sweep_with_and_without_memo(config, tmp_path)
    assert values["memo"].keys() == values["none"].keys()
    for key, value in values["none"].items():
        assert values["memo"][key] == pytest.approx(value, rel=1e-5, abs=1e-9, nan_ok=True), key
    replayed = [line for line in lines["memo"] if "replayed from memory" in line]
    assert len(replayed) == 2 and "30 replayed" in replayed[0]
    assert not any("replayed" in line for line in lines["none"])


def test_probes_sharing_train_and_dev_share_the_fit(tones, tmp_path):
    """A second probe whose train and dev are another's (the demo's ks and ks-unseen) reuses
    its layer fits and scores only its own test clips, with the values of fitting again."""
    import csv

    with tones.open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] != "test"]
    for i in range(6):  # new test clips
        label = ("low", "mid", "high")[i % 3]
        freq = {"low": 230.0, "mid": 540.0, "high": 1150.0}[label]
        path = write_tone(tones.parent / "audio" / f"other{i}.wav", 0.4 + 0.05 * i, freq=freq,
                          seed=100 + i)
        rows.append({"path": str(path.relative_to(tones.parent)), "pitch": label,
                     "split": "test"})
    other = write_csv_manifest(tones.parent / "other-test.csv", rows)
    (tmp_path / "ckpts.txt").write_text("random:tiny@0 0\n")
    config = _memo_sweep_config(tones, tmp_path, extra_probe=f"""
[[probe]]
name = "pitch-other"
task = "label:pitch"
data = "{other}"
domain = "out"
""")
    lines, values = _sweep_with_and_without_memo(config, tmp_path)
    assert any("5 layer fits reused" in line for line in lines["memo"]), lines["memo"]
    assert not any("fits reused" in line for line in lines["none"])
    assert values["memo"].keys() == values["none"].keys()
    assert {key[3] for key in values["memo"] if key[1] == "pitch-other"} == {
        "train", "dev", "test"}
    for key, value in values["none"].items():
        assert values["memo"][key] == pytest.approx(value, rel=1e-5, abs=1e-9, nan_ok=True), key


def test_sweep_options_are_checked(tmp_path):
    for options, match in (("memo_gb = -1", "memo_gb"), ("fit_workers = 0", "fit_workers"),
                           ("fit_workers = 1.5", "fit_workers"), ("wat = 1", "wat")):
        path = tmp_path / "bad.toml"
        path.write_text(f"[rank]\ndata = 'x.csv'\n[options]\n{options}\n")
        with pytest.raises(SpeechrankError, match=match):
            SweepConfig.from_toml(path)


def _problem(seed: int, n: int = 240, dim: int = 24, classes: int = 5):
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(dim, classes))
    out = {}
    for name, size in (("train", n), ("dev", n // 3), ("test", n // 3)):
        x = rng.normal(size=(size, dim)).astype(np.float32)
        y = (x @ weights + 2.0 * rng.normal(size=(size, classes))).argmax(axis=1)
        out[name] = (x, y)
    return out


def test_fits_in_worker_processes_equal_the_serial_fits():
    problems = [_problem(seed) for seed in range(3)]
    config = LogisticConfig(c_grid=(0.1, 1.0), max_iter=200, solver="sklearn")
    serial = [fit_logistic_probe(p, config) for p in problems]
    parallel = fit_logistic_probes(problems, config, workers=2)
    for a, b in zip(serial, parallel, strict=True):
        assert a.scores == b.scores and a.chosen_c == b.chosen_c
        assert a.dev_curve == b.dev_curve and a.converged == b.converged
        for name in a.correct:
            assert np.array_equal(a.correct[name], b.correct[name])


@pytest.mark.parametrize("solver", ["torch", "sklearn"])
@pytest.mark.parametrize("fit_dtype", ["float64", "float32"])
def test_a_shared_fit_rescored_equals_fitting_again(fit_dtype, solver):
    config = LogisticConfig(c_grid=(0.1, 1.0), max_iter=200, fit_dtype=fit_dtype,
                            solver=solver)
    first = _problem(0)
    second = {**first, "test": _problem(7)["test"]}  # same train and dev, other test clips
    assert problem_digest(first, config) == problem_digest(second, config)
    fit = fit_logistic_probe(first, config)
    again, reused = fit_logistic_probe(second, config), rescore(fit, second)
    assert reused.scores == again.scores and reused.chosen_c == again.chosen_c
    assert reused.n_rows == again.n_rows and reused.dev_curve == again.dev_curve
    for name in again.correct:
        assert np.array_equal(reused.correct[name], again.correct[name])
    x, y = first["train"]
    relabelled = {**first, "train": (x, np.roll(y, 1))}
    rescaled = {**first, "dev": (first["dev"][0] * 2, first["dev"][1])}
    other_recipe = dataclasses.replace(config, c_grid=(1.0,))
    assert len({problem_digest(first, config), problem_digest(relabelled, config),
                problem_digest(rescaled, config), problem_digest(first, other_recipe)}) == 4


def test_probe_rows_do_not_depend_on_fit_workers(encoder, tones, tmp_path):
    dataset = load_dataset(str(tones))
    one = run_probe(encoder, dataset, "label:pitch", run=ProbeRun(cache_dir=tmp_path),
                    progress=False)
    two = run_probe(encoder, dataset, "label:pitch",
                    run=ProbeRun(cache_dir=tmp_path, fit_workers=2), progress=False)
    assert [dataclasses.astuple(r) for r in one.rows] == [dataclasses.astuple(r)
                                                           for r in two.rows]
    assert one.info["fits"] == two.info["fits"]


@pytest.mark.parametrize("weights", [(3, 1, 1), (2, 1, 3), (1, 1, 1), (5, 2, 4), (1, 3, 1)])
def test_split_pattern_holds_each_split_as_often_as_its_weight(weights):
    pattern = split_pattern(weights)
    counts = Counter(pattern)
    assert [counts["train"], counts["dev"], counts["test"]] == list(weights)
    if weights == (3, 1, 1):  # the historical pattern: corpora of earlier versions unchanged
        assert pattern == ("train", "train", "dev", "train", "test")


def test_corpus_probe_splits_move_clips_to_test():
    def shares(weights):
        jobs = plan_corpus(CorpusSpec(minutes=20.0, languages=("en",), probe_splits=weights)).jobs
        counts = Counter(j.split for j in jobs if j.manifest in ("train", "dev", "test"))
        return {name: counts[name] / sum(counts.values()) for name in counts}

    default, demo = shares((3, 1, 1)), shares((2, 1, 3))
    assert default["train"] > 0.5 and default["test"] < 0.25
    assert demo["test"] > 0.4 and math.isclose(sum(demo.values()), 1.0)
    for bad in ((1, 1), (0, 1, 1), (1.5, 1, 1), "211"):
        with pytest.raises(SpeechrankError, match="probe_splits"):
            plan_corpus(CorpusSpec(minutes=5.0, languages=("en",), probe_splits=bad))


def test_probe_recipe_takes_a_table_per_split():
    recipe = probe_recipe("frames", {"max_frames": {"train": 100, "dev": 50, "test": 400}})
    assert recipe.max_frames == {"train": 100, "dev": 50, "test": 400}
    assert probe_recipe("frames", {"max_frames": 100}).max_frames == {
        "train": 100, "dev": 50, "test": 50}
    with pytest.raises(SpeechrankError, match="table"):
        probe_recipe("frames", {"max_frames": {"train": 100, "test": 5}})


def test_probe_recipe_names_the_fit_dtype():
    assert probe_recipe("utterance", {"fit_dtype": "float32"}).logistic.fit_dtype == "float32"
    assert probe_recipe("frames", {"max_iter": 50}).logistic.fit_dtype == "float64"
    with pytest.raises(SpeechrankError, match="fit_dtype"):
        probe_recipe("utterance", {"fit_dtype": "half"})
    with pytest.raises(SpeechrankError, match="do not apply"):
        probe_recipe("ctc", {"fit_dtype": "float32"})


def test_corpus_cli_rejects_bad_probe_splits_in_one_line(tmp_path, capsys):
    from speechrank.cli import main

    for bad in ("2:x:3", "2:1", "0:1:1"):
        assert main(["corpus", str(tmp_path / "c"), "--minutes", "1", "--probe-splits", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "probe" in err[0] and "splits" in err[0], err
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())
