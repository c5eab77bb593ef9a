"""`rank` with cluster metrics, convergence, protocols and dominance."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from speechrank.errors import SpeechrankError
from speechrank.rank import run_rank
from speechrank.spec import MeasureSpec

from .conftest import write_tone


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> Path:
    """Sixteen tones of different lengths (0.5 .. 2 s) and pitches."""
    root = tmp_path_factory.mktemp("tones14")
    for i in range(16):
        write_tone(root / f"t{i:02d}.wav", 0.5 + 0.1 * i, freq=180.0 + 35 * i, seed=i)
    return root


def _rows(result, metric, pooling="frames"):
    return {r.layer: r for r in result.rows if r.metric == metric and r.pooling == pooling}


def test_cluster_metrics_for_every_layer_independent_of_batching(tones):
    a = run_rank("random:tiny", str(tones), MeasureSpec(
        metrics="rankme,kmeans_inertia,davies_bouldin", poolings="frames", n_clusters=16,
        max_frames=400, batch_seconds=0.01))
    b = run_rank("random:tiny", str(tones), MeasureSpec(
        metrics="kmeans_inertia,davies_bouldin", poolings="sum,frames", n_clusters=16,
        max_frames=400, batch_seconds=100))
    layers = set(a.info["layers"])
    for metric in ("kmeans_inertia", "davies_bouldin"):
        rows_a, rows_b = _rows(a, metric), _rows(b, metric)
        assert set(rows_a) == layers
        for layer, row in rows_a.items():
            assert row.n_rows == 400 and row.conventions["n_clusters"] == 16
            assert math.isfinite(row.value) and row.value > 0
            # same rows in the same (key) order; padding moves the frames by ~1e-7
            assert row.value == pytest.approx(rows_b[layer].value, rel=1e-5)
    assert all(0 < r.value < 1 for r in _rows(a, "kmeans_inertia").values())
    assert not [r for r in b.rows if r.pooling == "sum" and r.metric == "kmeans_inertia"]


def test_cluster_metrics_need_the_frames_pooling(tones):
    with pytest.raises(SpeechrankError, match="add frames to the poolings"):
        run_rank("random:tiny", str(tones), MeasureSpec(metrics="kmeans_inertia", poolings="sum"))


def test_every_spectral_row_carries_its_convergence(tones):
    result = run_rank("random:tiny", str(tones),
                      MeasureSpec(metrics="rankme,stable_rank", max_frames=300))
    for row in result.rows:
        record = row.conventions["convergence"]
        assert record["n_rows"][-1] == row.n_rows and record["values"][-1] == row.value
        assert record["n_rows"] == sorted(record["n_rows"])  # nested prefixes
        if record["converged"] is not None:
            assert record["converged"] == (record["last_change"] <= 0.02)
    small = run_rank("random:tiny", str(tones),
                     MeasureSpec(metrics="rankme", max_frames=300, batch_seconds=0.01))
    sizes = {(r.layer, r.pooling): r.conventions["convergence"]["n_rows"] for r in result.rows
             if r.metric == "rankme"}
    for row in small.rows:  # the prefixes do not depend on batching
        assert row.conventions["convergence"]["n_rows"] == sizes[(row.layer, row.pooling)]


def test_rankme_rows_carry_dominance_and_the_table_marks_flags(tones):
    from speechrank.cli import rows_tables

    result = run_rank("random:tiny", str(tones),
                      MeasureSpec(metrics="rankme,erank_cov", max_frames=300))
    for row in result.rows:
        if row.metric != "rankme":
            assert "dominance" not in row.conventions
            continue
        record = row.conventions["dominance"]
        assert 0 < record["first_direction_share"] <= 1 and 0 <= record["mean_share"] <= 1
        assert record == result.info["dominance"][row.layer][row.pooling]
    flagged = [r for r in result.rows if r.conventions.get("dominance", {}).get("dominated")]
    tables = rows_tables(result.rows, "t")
    if flagged:
        assert any(t.caption and "one direction" in t.caption for t in tables)


def test_protocol_aldeneh2025_fills_defaults_and_explicit_options_win(tones):
    result = run_rank("random:tiny", str(tones), MeasureSpec(protocol="aldeneh2025"))
    assert {(r.pooling, r.metric) for r in result.rows} == {("sum", "rankme")}
    layers = set(result.info["layers"])
    assert {r.layer for r in result.rows} == layers
    for row in result.rows:
        assert row.conventions["protocol"] == "aldeneh2025"
        assert row.conventions["eps"] == 1e-7 and row.conventions.get("centered") in (False,
                                                                                       None)
    record = result.info["protocol"]
    assert "poolings" in record["filled"] and record["overridden"] == {}
    assert "arXiv 2409.10787" in record["citation"] and record["inferred"]
    mine = run_rank("random:tiny", str(tones),
                    MeasureSpec(protocol="aldeneh2025", poolings="sum,frames"))
    assert {r.pooling for r in mine.rows} == {"sum", "frames"}
    assert mine.info["protocol"]["overridden"]["poolings"] == {"protocol": ["sum"],
                                                                "used": ["sum", "frames"]}


def test_protocol_whetten2025_clusters_and_convergence(tones):
    result = run_rank("random:tiny", str(tones),
                      MeasureSpec(protocol="whetten2025", total_seconds=8.0, n_clusters=8))
    assert result.info["counts"]["audio_seconds"] >= 8.0
    assert result.info["counts"]["utterances_used"] < 16
    layers = set(result.info["layers"])
    for metric in ("kmeans_inertia", "davies_bouldin"):
        assert set(_rows(result, metric)) == layers
    assert set(_rows(result, "rankme", "sum")) == layers
    frames = _rows(result, "rankme", "frames")
    assert all(r.conventions["max_frames"] is None for r in frames.values())
    for row in result.rows:
        if row.metric == "rankme":
            assert len(row.conventions["convergence"]["values"]) == 4
    assert set(result.info["protocol"]["overridden"]) == {"total_seconds", "n_clusters"}


def test_unknown_protocol_is_one_line(tones):
    with pytest.raises(SpeechrankError, match="protocol = 'nope': Input should be"):
        MeasureSpec(protocol="nope")
