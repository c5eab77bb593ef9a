"""End-to-end behaviour of `rank`: one pass, every layer, poolings, skips, JSON."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechrank.cli import main
from speechrank.errors import SpeechrankError
from speechrank.rank import run_rank
from speechrank.spec import MeasureSpec

from .conftest import write_tone


def _values(result, pooling="sum", metric="rankme"):
    return {r.layer: r.value for r in result.rows if r.pooling == pooling and r.metric == metric}


@pytest.fixture(scope="module")
def tone_dir(tmp_path_factory) -> Path:
    """Twelve tones of different lengths (0.5 .. 1.6 s) and pitches."""
    root = tmp_path_factory.mktemp("tones")
    for i in range(12):
        write_tone(root / f"t{i:02d}.wav", 0.5 + 0.1 * i, freq=200.0 + 40 * i, seed=i)
    return root


def test_rank_random_tiny_every_layer(tone_dir):
    result = run_rank("random:tiny", str(tone_dir), MeasureSpec(metrics="rankme,erank_cov"))
    layers = {r.layer for r in result.rows}
    assert layers == {str(i) for i in range(result.info["encoder"]["num_layers"])}
    assert {r.pooling for r in result.rows} == {"sum", "mean", "frames"}
    for row in result.rows:
        n = row.n_rows
        assert 1.0 <= row.value <= min(n, row.dim) + 1e-6, row
        assert row.conventions["eps"] == 1e-7 or row.metric != "rankme"
    sums = [r for r in result.rows if r.pooling == "sum"]
    assert all(r.n_rows == 12 for r in sums)
    assert result.info["counts"]["utterances_used"] == 12


def test_same_seed_same_numbers(tone_dir):
    a = run_rank("random:tiny", str(tone_dir),
                 MeasureSpec(metrics="rankme", max_frames=50, seed=3))
    b = run_rank("random:tiny", str(tone_dir),
                 MeasureSpec(metrics="rankme", max_frames=50, seed=3))
    assert [r.value for r in a.rows] == [r.value for r in b.rows]


def test_batching_does_not_change_values(tone_dir):
    """Small batches (one utterance each) and large padded batches give the same metrics."""
    small = run_rank("random:tiny", str(tone_dir),
                     MeasureSpec(metrics="rankme", batch_seconds=0.01))
    large = run_rank("random:tiny", str(tone_dir),
                     MeasureSpec(metrics="rankme", batch_seconds=100))
    for pooling in ("sum", "mean", "frames"):
        a, b = _values(small, pooling), _values(large, pooling)
        for layer in a:
            assert a[layer] == pytest.approx(b[layer], rel=1e-4), (pooling, layer)


def test_sum_equals_mean_only_for_equal_lengths(tmp_path, tone_dir):
    for i in range(8):
        write_tone(tmp_path / f"e{i}.wav", 1.0, freq=250.0 + 50 * i, seed=i)
    equal = run_rank("random:tiny", str(tmp_path),
                     MeasureSpec(metrics="rankme", poolings="sum,mean"))
    s, m = _values(equal, "sum"), _values(equal, "mean")
    assert all(s[k] == pytest.approx(m[k], rel=1e-9) for k in s)
    unequal = run_rank("random:tiny", str(tone_dir),
                       MeasureSpec(metrics="rankme", poolings="sum,mean"))
    s, m = _values(unequal, "sum"), _values(unequal, "mean")
    assert any(abs(s[k] - m[k]) > 1e-6 * s[k] for k in s)


def test_frames_capped(tone_dir):
    result = run_rank("random:tiny", str(tone_dir),
                      MeasureSpec(metrics="rankme", poolings="frames", max_frames=40))
    assert {r.n_rows for r in result.rows} == {40}


def _bad_files(root: Path) -> None:
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    (root / "notaudio.flac").write_text("hello")
    sf.write(root / "empty.wav", np.zeros(0, dtype=np.float32), 16_000)
    sf.write(root / "silent.wav", np.zeros(16_000, dtype=np.float32), 16_000)
    sf.write(root / "short.wav", np.full(40, 0.1, dtype=np.float32), 16_000)
    nan = np.full(16_000, 0.1, dtype=np.float32)
    nan[100] = np.nan
    sf.write(root / "nan.wav", nan, 16_000, subtype="FLOAT")


def test_bad_files_skipped_and_good_values_unchanged(tmp_path, tone_dir):
    good = run_rank("random:tiny", str(tone_dir), MeasureSpec(metrics="rankme", max_frames=10**6))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for wav in tone_dir.glob("*.wav"):
        (mixed / wav.name).write_bytes(wav.read_bytes())
    # a stereo 8 kHz file is fine: mixed to mono and resampled, not skipped
    write_tone(mixed / "z_stereo8k.wav", 1.0, sample_rate=8_000, channels=2, seed=99)
    _bad_files(mixed)
    result = run_rank("random:tiny", str(mixed), MeasureSpec(metrics="rankme", max_frames=10**6))
    reasons = {Path(item["path"]).name: item["reason"] for item in result.info["skipped"]}
    assert set(reasons) == {"corrupt.wav", "notaudio.flac", "empty.wav", "silent.wav",
                            "short.wav", "nan.wav"}
    assert reasons["silent.wav"] == "silent"
    assert reasons["short.wav"] == "too_short"
    assert reasons["nan.wav"] == "non_finite"
    assert result.info["counts"]["utterances_used"] == 13
    # Without the stereo file the metrics equal the clean run's.
    (mixed / "z_stereo8k.wav").unlink()
    again = run_rank("random:tiny", str(mixed), MeasureSpec(metrics="rankme", max_frames=10**6))
    for pooling in ("sum", "mean", "frames"):
        a, b = _values(good, pooling), _values(again, pooling)
        assert a == pytest.approx(b, rel=1e-9)
    with pytest.raises(SpeechrankError):
        run_rank("random:tiny", str(mixed), MeasureSpec(metrics="rankme", strict=True))


def test_cli_rank_json(tone_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["rank", "random:tiny", str(tone_dir), "--num-utterances", "8", "--json",
                 str(out), "--quiet", "--metrics", "rankme,alpha_req"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "rankme" in printed
    payload = json.loads(out.read_text())
    for key in ("model", "encoder", "data", "counts", "skipped", "conventions", "versions",
                "wall_seconds", "results"):
        assert key in payload, key
    assert payload["counts"]["utterances_used"] == 8
    row = payload["results"][0]
    for key in ("model", "checkpoint", "step", "dataset", "layer", "pooling", "metric",
                "value", "n_rows", "dim", "conventions"):
        assert key in row, key
    values = [r["value"] for r in payload["results"]]
    assert all(v is None or math.isfinite(v) for v in values)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["rank", "random:nope", "."], "random"),
        (["rank", "random:tiny", "/no/such/dir"], "/no/such/dir"),
        (["rank", "random:tiny", "zzz:/tmp"], "zzz"),
        (["rank", "random:tiny", ".", "--pooling", "max"], "pooling"),
        (["rank", "random:tiny", ".", "--layers", "99"], "layer"),
        (["rank", "/no/such/model", "."], "/no/such/model"),
        (["rank", "random:tiny", ".", "--bogus"], "bogus"),
    ],
)
def test_cli_errors_are_one_line(args, needle, tone_dir, capsys):
    args = [str(tone_dir) if a == "." else a for a in args]
    assert main([*args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0]


def test_cli_error_in_a_real_process(tmp_path):
    """The installed entry point: exit code 2, one line, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "speechrank", "rank", "random:tiny",
                           str(tmp_path / "missing")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "missing" in proc.stderr


@pytest.mark.slow
def test_fsdd_hubert_base_13_layers(fsdd_root, tmp_path):
    """A real architecture end to end, scaled down: random:hubert-base on FSDD prints 13 layers."""
    out = tmp_path / "r.json"
    code = main(["rank", "random:hubert-base", f"fsdd:{fsdd_root}", "--num-utterances", "24",
                 "--metrics", "rankme", "--pooling", "sum", "--json", str(out), "--quiet"])
    assert code == 0
    payload = json.loads(out.read_text())
    assert sorted({r["layer"] for r in payload["results"]}, key=int) == [str(i)
                                                                          for i in range(13)]
    assert {r["dim"] for r in payload["results"]} == {768}
