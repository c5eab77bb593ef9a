"""RankMonitor with protocols, cluster metrics and convergence."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechrank.audio.utterance import Dataset, Utterance
from speechrank.errors import SpeechrankError
from speechrank.monitor import AlarmRule, RankMonitor, metric_key, pretrain_monitor
from speechrank.monitor import core as monitor_core
from speechrank.protocols import PROTOCOLS
from speechrank.rank import run_rank
from speechrank.spec import MONITOR_SPEC, MeasureSpec
from speechrank.store import ResultStore

from .test_monitor_core import SR, HalfNaN, toy_encoder, waves

CLUSTER = ("kmeans_inertia", "davies_bouldin")


@pytest.fixture(scope="module")
def wavs(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = tmp_path_factory.mktemp("monitor14")
    utterances = []
    for i, wave in enumerate(waves(14, seed=14)):
        path = root / f"u{i:02d}.wav"
        sf.write(path, wave, SR, subtype="FLOAT")
        utterances.append(Utterance(uid=path.name, path=str(path)))
    return Dataset(spec=str(root), format="directory", root=str(root), utterances=utterances)


def _by(rows, metric, pooling="frames"):
    return {r.layer: r for r in rows if r.metric == metric and r.pooling == pooling}


def test_whetten2025_monitor_measures_what_rank_measures(wavs: Dataset) -> None:
    encoder = toy_encoder()
    # An audio budget above the whole set: both take every file (rank draws until the budget
    # is reached, the monitor takes at most it; see speechrank.monitor.heldout).
    changes = {"protocol": "whetten2025", "total_seconds": 1e4, "n_clusters": 8,
               "batch_seconds": 3.0}
    reference = run_rank(encoder, wavs, MeasureSpec(**changes))
    monitor = RankMonitor(encoder, wavs, MeasureSpec.for_monitor(**changes))
    result = monitor.measure(step=4)
    layers = monitor.layers
    every_frame = sum(p.num_frames for p in monitor.heldout.planned)
    assert monitor.heldout.num_utterances == 14
    assert layers == reference.info["layers"] == ["0", "1", "2", "3"]
    for metric in CLUSTER:
        mine, theirs = _by(result.rows, metric), _by(reference.rows, metric)
        assert list(mine) == layers
        for layer, row in mine.items():
            assert math.isfinite(row.value) and row.value > 0
            assert row.n_rows == theirs[layer].n_rows == every_frame  # uncapped
            assert row.conventions["n_clusters"] == 8
            assert row.conventions["protocol"] == "whetten2025"
            assert row.value == pytest.approx(theirs[layer].value, rel=1e-6)
            assert result.values[metric_key(metric, "frames", layer)] == row.value
    spectral = [r for r in result.rows if r.metric not in CLUSTER]
    assert {(r.pooling, r.metric) for r in spectral} == {("sum", "rankme"), ("frames", "rankme")}
    expected = {(r.layer, r.pooling): r for r in reference.rows if r.metric == "rankme"}
    for row in spectral:
        record = row.conventions["convergence"]
        other = expected[(row.layer, row.pooling)].conventions["convergence"]
        assert record["n_rows"] == other["n_rows"] and record["n_rows"][-1] == row.n_rows
        assert np.allclose(record["values"], other["values"], rtol=1e-9)
        assert row.conventions["max_frames"] is None
        assert "dominance" in row.conventions
    record = monitor.describe()["protocol"]
    assert set(record["overridden"]) == {"total_seconds", "n_clusters"}
    assert record["overridden"]["total_seconds"] == {"protocol": 3600.0, "used": 1e4}
    assert "poolings" in record["filled"] and "arXiv 2501.05966" in record["citation"]
    assert monitor.describe()["convergence"] is True


def test_explicit_options_beat_the_protocol_and_are_recorded() -> None:
    # (a field equal to the monitor's default counts as left to the protocol, as in rank)
    spec = MeasureSpec.for_monitor(protocol="whetten2025", poolings="sum,frames",
                                   metrics="rankme,stable_rank", max_frames=200, layers=["1"])
    monitor = RankMonitor(toy_encoder(), waves(12), spec)
    result = monitor.measure(step=0)
    record = monitor.protocol
    # poolings equals the preset's (as a comma list): given, but not a departure.
    assert set(record["overridden"]) == {"metrics", "max_frames", "layers"}
    assert record["overridden"]["max_frames"] == {"protocol": None, "used": 200}
    assert "poolings" not in record["filled"] and "n_clusters" in record["filled"]
    assert {(r.layer, r.pooling, r.metric) for r in result.rows} == {
        (layer, pooling, metric) for layer in "1" for pooling in ("sum", "frames")
        for metric in ("rankme", "stable_rank")}
    frames = _by(result.rows, "rankme")["1"]
    assert frames.n_rows == 200 and frames.conventions["max_frames"] == 200
    for row in result.rows:
        assert row.conventions["protocol"] == "whetten2025"
        assert row.conventions["protocol_overridden"] == "layers,max_frames,metrics"
    assert monitor.describe()["protocol"] == record
    assert monitor.conventions["max_audio_seconds"] == 3600.0  # filled by the protocol


def test_aldeneh2025_conventions_are_recorded(tmp_path: Path) -> None:
    store = tmp_path / "m.sqlite"
    monitor = RankMonitor(toy_encoder(), waves(10),
                          MeasureSpec.for_monitor(protocol="aldeneh2025"), store=store,
                          run_name="run-a")
    values = monitor(step=3)
    monitor.close()
    assert monitor.poolings == ["sum"] and monitor.metrics == ["rankme"]
    assert monitor.layers == ["0", "1", "2", "3"]
    assert monitor.conventions["max_utterances"] == 10_000
    assert monitor.conventions["max_audio_seconds"] is None
    assert list(values) == [f"rankme_t/layer_{i}" for i in range(4)] + [
        f"collapse/layer_{i}" for i in range(4)]
    plain = RankMonitor(toy_encoder(), waves(10))(step=3)
    with ResultStore(store, create=False) as opened:
        rows = opened.rows(model="run-a")
    assert len(rows) == 4
    for row in rows:
        assert row.conventions["protocol"] == "aldeneh2025"
        assert "protocol_overridden" not in row.conventions
        assert row.conventions["eps"] == 1e-7 and not row.conventions.get("centered")
        assert len(row.conventions["convergence"]["values"]) == 4  # a protocol turns it on
        # the preset is RankMe-t's own defaults: the same numbers as the plain monitor
        assert row.value == pytest.approx(plain[f"rankme_t/layer_{row.layer}"], rel=1e-12)
    record = monitor.describe()["protocol"]
    assert record["overridden"] == {} and "arXiv 2409.10787" in record["citation"]
    assert record["stated"] and record["inferred"]


def test_the_protocol_fills_what_is_left_at_the_monitors_defaults() -> None:
    spec = MeasureSpec.for_monitor(protocol="aldeneh2025", num_utterances=5, seed=2)
    mine = RankMonitor(toy_encoder(), waves(9), spec)
    assert mine.spec.num_utterances == 5 and mine.spec.seed == 2
    assert mine.protocol["overridden"] == {"num_utterances": {"protocol": 10_000, "used": 5}}
    filled = RankMonitor(toy_encoder(), waves(9), MeasureSpec.for_monitor(protocol="aldeneh2025",
                                                                          seed=2))
    assert filled.spec.num_utterances == 10_000 and "num_utterances" in filled.protocol[
        "filled"]


def test_every_protocol_is_a_function_from_a_spec_to_a_spec() -> None:
    for protocol in PROTOCOLS.values():
        applied = protocol.apply(MONITOR_SPEC, MONITOR_SPEC)
        assert isinstance(applied, MeasureSpec) and applied.convergence
        for key in protocol.options:
            assert getattr(applied, key) == getattr(MeasureSpec().replace(
                **{key: protocol.options[key]}), key), (protocol.name, key)
        # applying it again changes nothing; an explicit field stays
        assert protocol.apply(applied, MONITOR_SPEC) == applied
        mine = protocol.apply(MONITOR_SPEC.replace(seed=3, n_clusters=7), MONITOR_SPEC)
        assert (mine.seed, mine.n_clusters) == (3, 7)


def test_without_a_protocol_nothing_changes() -> None:
    monitor = RankMonitor(toy_encoder(), waves(8))
    result = monitor.measure(step=0)
    assert monitor.protocol is None and monitor.describe()["protocol"] is None
    for row in result.rows:
        assert "protocol" not in row.conventions and "convergence" not in row.conventions
    on = RankMonitor(toy_encoder(), waves(8),
                     MeasureSpec.for_monitor(convergence=True)).measure(step=0)
    assert all(len(r.conventions["convergence"]["n_rows"]) == 4 for r in on.rows)
    assert [r.value for r in on.rows] == [r.value for r in result.rows]


def _rng_snapshot() -> tuple:
    return (random.getstate(), np.random.get_state()[1].tobytes(), torch.get_rng_state())


def test_cluster_metrics_opt_in_without_a_protocol() -> None:
    spec = MeasureSpec.for_monitor(metrics="rankme,kmeans_inertia", poolings="sum,frames",
                                   n_clusters=6, cluster_max_rows=300)
    monitor = RankMonitor(toy_encoder(), waves(12), spec)
    before = _rng_snapshot()
    result = monitor.measure(step=0)
    after = _rng_snapshot()
    assert before[0] == after[0] and before[1] == after[1] and torch.equal(before[2], after[2])
    rows = _by(result.rows, "kmeans_inertia")
    assert list(rows) == ["0", "1", "2", "3"]
    assert all(r.n_rows == 300 and r.conventions["rows_seen"] > 300 for r in rows.values())
    assert all(0 < r.value < 1 for r in rows.values())
    assert not _by(result.rows, "kmeans_inertia", "sum")
    assert monitor.alarm_on == "rankme_t"  # the alarm watches a rank, never a cluster value
    assert monitor(step=1) == {**result.values}  # same model, same seed, same numbers
    only = RankMonitor(toy_encoder(), waves(12), MeasureSpec.for_monitor(
        metrics=["davies_bouldin"], poolings=["frames"], n_clusters=4))
    values = only(step=0)
    assert list(values) == [f"davies_bouldin_frames/layer_{i}" for i in range(4)]


def test_cluster_metric_errors_are_one_line() -> None:
    with pytest.raises(SpeechrankError, match="add frames to the poolings"):
        RankMonitor(toy_encoder(), waves(4), MeasureSpec.for_monitor(metrics="kmeans_inertia"))
    with pytest.raises(SpeechrankError, match="n_clusters"):
        MeasureSpec.for_monitor(metrics="kmeans_inertia", poolings="frames", n_clusters=1)
    with pytest.raises(SpeechrankError, match="alarm_on"):
        RankMonitor(toy_encoder(), waves(4),
                    MeasureSpec.for_monitor(metrics="rankme,kmeans_inertia", poolings="frames"),
                    alarm=AlarmRule(on="kmeans_inertia_frames"))
    with pytest.raises(SpeechrankError, match="protocol = 'nope'"):
        MeasureSpec.for_monitor(protocol="nope")


def test_a_non_finite_layer_gives_nan_cluster_rows() -> None:
    spec = MeasureSpec.for_monitor(metrics="rankme,kmeans_inertia", poolings="frames",
                                   n_clusters=4, convergence=True)
    monitor = RankMonitor(toy_encoder(HalfNaN()), waves(8), spec, alarm=AlarmRule(warn=False))
    result = monitor.measure(step=0)
    bad = [r for r in result.rows if r.layer == "2"]
    assert {r.metric for r in bad} == {"rankme", "kmeans_inertia"}
    for row in bad:
        assert math.isnan(row.value) and row.conventions["non_finite_features"] is True
        assert "convergence" not in row.conventions and "dominance" not in row.conventions
    good = _by(result.rows, "kmeans_inertia")["1"]
    assert math.isfinite(good.value) and "non_finite_features" not in good.conventions


def test_a_distributed_monitor_refuses_cluster_metrics(monkeypatch) -> None:
    built = RankMonitor(toy_encoder(), waves(8), MeasureSpec.for_monitor(
        metrics="rankme,kmeans_inertia", poolings="frames", n_clusters=4))
    monkeypatch.setattr(monitor_core, "_distributed", lambda distributed, group: (0, 2))
    message = "cannot be measured across processes yet"
    with pytest.raises(SpeechrankError, match=message) as caught:
        RankMonitor(toy_encoder(), waves(8), MeasureSpec.for_monitor(protocol="whetten2025"))
    assert "\n" not in str(caught.value) and "distributed=False" in str(caught.value)
    assert "kmeans_inertia, davies_bouldin" in str(caught.value)
    # built in one process, called once a process group exists: refused at the call
    with pytest.raises(SpeechrankError, match=message):
        built(step=0)
    # convergence is left out (its prefix bins are not summed across processes)
    spectral = RankMonitor(toy_encoder(), waves(8),
                           MeasureSpec.for_monitor(protocol="aldeneh2025"))
    assert spectral.describe()["convergence"] is False


def test_pretrain_monitor_takes_the_protocol_budget() -> None:
    monitor = pretrain_monitor(waves(6), protocol="whetten2025")
    assert monitor.conventions["max_audio_seconds"] == 3600.0
    assert monitor.conventions["max_utterances"] is None
    assert monitor.checkpoint_format == "checkpoint-{step:06d}"
    values = monitor(toy_encoder(), step=0)
    assert "kmeans_inertia_frames/layer_3" in values
    mine = pretrain_monitor(waves(6), MeasureSpec.for_monitor(num_utterances=4),
                            protocol="aldeneh2025")
    assert mine.conventions["max_utterances"] == 4
    assert set(mine.protocol["overridden"]) == {"num_utterances"}
    plain = pretrain_monitor(waves(6))
    assert plain.conventions["max_utterances"] == 500 and plain.protocol is None


def test_pretrain_command_checks_the_monitor_protocol(tmp_path: Path, capsys) -> None:
    from speechrank.cli import main

    base = ["pretrain", str(tmp_path / "nowhere"), str(tmp_path / "run"), "--steps", "1",
            "--quiet"]
    assert main([*base, "--monitor-data", str(tmp_path / "held"),
                 "--monitor-protocol", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "protocol = 'nope'" in err[0]
    assert main([*base, "--monitor-data", "none", "--monitor-protocol", "whetten2025"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--monitor-data" in err[0]
    assert not (tmp_path / "run").exists()
