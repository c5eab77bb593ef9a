"""load_audio / probe_duration: formats, mono mixing, resampling, cropping and refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from speechrank.audio import AUDIO_CONVENTIONS, Utterance, load_audio, probe_duration
from speechrank.audio.io import AUDIO_EXTENSIONS, is_audio_file, load_utterance, probe_audio
from speechrank.errors import AudioError, SpeechrankError


def _chirp(seconds: float, rate: int, f0: float = 200.0, f1: float = 1500.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return (0.5 * np.sin(phase)).astype(np.float32)


def _sine(seconds: float, rate: int, freq: float) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.fft.rfftfreq(wave.size, 1.0 / rate)[np.argmax(spectrum)])


def _reason(excinfo: pytest.ExceptionInfo[AudioError]) -> str:
    return excinfo.value.reason


@pytest.fixture
def float_wav(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """3 s chirp at 16 kHz stored as 32-bit float, so reads are bit-exact."""
    wave = _chirp(3.0, 16_000)
    path = tmp_path / "chirp.wav"
    sf.write(path, wave, 16_000, subtype="FLOAT")
    return path, wave


def test_conventions_and_extensions() -> None:
    assert AUDIO_CONVENTIONS["resampler"] == "soxr"
    assert AUDIO_CONVENTIONS["resample_quality"] in {"HQ", "VHQ"}
    assert AUDIO_CONVENTIONS["mono"] == "mean over channels"
    assert {".wav", ".flac", ".ogg"} <= AUDIO_EXTENSIONS
    assert is_audio_file("a/B.WAV") and not is_audio_file("notes.txt")


def test_same_rate_float_wav_is_bit_exact(float_wav: tuple[Path, np.ndarray]) -> None:
    path, wave = float_wav
    out = load_audio(path, 16_000)
    assert out.dtype == np.float32 and out.ndim == 1 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, wave)


def test_integer_pcm_is_scaled(tmp_path: Path) -> None:
    pcm = np.array([-32768, -16384, 0, 16384, 32767] * 100, dtype=np.int16)
    sf.write(tmp_path / "i16.wav", pcm, 8000, subtype="PCM_16")
    out = load_audio(tmp_path / "i16.wav", 8000)
    np.testing.assert_allclose(out[:5], pcm[:5] / 32768.0, atol=1e-7)
    assert out.min() == -1.0 and out.max() < 1.0


def test_stereo_is_mixed_by_mean(tmp_path: Path) -> None:
    left, right = _sine(1.0, 16_000, 300.0), _chirp(1.0, 16_000)
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16_000, subtype="FLOAT")
    out = load_audio(tmp_path / "stereo.wav", 16_000)
    assert out.shape == (16_000,)
    np.testing.assert_allclose(out, (left.astype(np.float64) + right) / 2, atol=1e-7)


def test_opposite_channels_cancel(tmp_path: Path) -> None:
    wave = _sine(0.5, 16_000, 500.0)
    sf.write(tmp_path / "anti.wav", np.stack([wave, -wave], axis=1), 16_000, subtype="FLOAT")
    assert np.abs(load_audio(tmp_path / "anti.wav", 16_000)).max() == 0.0


@pytest.mark.parametrize("source_rate", [8000, 22_050, 44_100, 48_000])
def test_resampling_keeps_frequency_and_length(tmp_path: Path, source_rate: int) -> None:
    wave = _sine(1.0, source_rate, 440.0)
    sf.write(tmp_path / "sine.wav", wave, source_rate, subtype="FLOAT")
    out = load_audio(tmp_path / "sine.wav", 16_000)
    assert out.size == round(wave.size * 16_000 / source_rate) == 16_000
    assert abs(_peak_hz(out, 16_000) - 440.0) <= 1.0
    # Amplitude is kept away from the edges (soxr's filter is linear phase, unity gain).
    assert abs(np.abs(out[2000:-2000]).max() - 0.5) < 0.01


def test_downsampling_removes_content_above_new_nyquist(tmp_path: Path) -> None:
    wave = _sine(1.0, 48_000, 12_000.0)  # above 8 kHz: must be filtered, not aliased
    sf.write(tmp_path / "high.wav", wave, 48_000, subtype="FLOAT")
    out = load_audio(tmp_path / "high.wav", 16_000)
    assert np.sqrt(np.mean(out[1000:-1000] ** 2)) < 1e-3


def test_max_seconds_reads_only_what_is_needed(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    rate = 8000
    long = np.tile(_chirp(1.0, rate), 600)  # 10 minutes
    path = tmp_path / "long.wav"
    sf.write(path, long, rate, subtype="FLOAT")
    decoded: list[int] = []
    original = sf.SoundFile.read

    def spy(self: sf.SoundFile, frames: int = -1, *args: object, **kwargs: object) -> np.ndarray:
        out = original(self, frames, *args, **kwargs)
        decoded.append(len(out))
        return out

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    out = load_audio(path, rate, max_seconds=10.0)
    assert sum(decoded) == 10 * rate
    np.testing.assert_array_equal(out, long[: 10 * rate])
    decoded.clear()
    out = load_audio(path, rate, start=300.0, end=302.0)
    assert sum(decoded) == 2 * rate
    np.testing.assert_array_equal(out, long[300 * rate: 302 * rate])


def test_region_then_max_seconds(float_wav: tuple[Path, np.ndarray]) -> None:
    path, wave = float_wav
    out = load_audio(path, 16_000, start=0.5, end=2.5, max_seconds=1.25)
    np.testing.assert_array_equal(out, wave[8000: 8000 + 20_000])
    out = load_audio(path, 16_000, start=2.0)
    np.testing.assert_array_equal(out, wave[32_000:])
    out = load_audio(path, 16_000, end=10.0)  # an end past the file stops at the file's end
    np.testing.assert_array_equal(out, wave)


@settings(max_examples=40, deadline=None)
@given(start=st.floats(0.0, 2.9), length=st.floats(0.01, 3.0))
def test_region_matches_slice(tmp_path_factory: pytest.TempPathFactory, start: float,
                              length: float) -> None:
    path = tmp_path_factory.getbasetemp() / "region.wav"
    if not path.exists():
        sf.write(path, _chirp(3.0, 16_000), 16_000, subtype="FLOAT")
    wave = sf.read(path, dtype="float32")[0]
    end = start + length
    out = load_audio(path, 16_000, start=start, end=end)
    np.testing.assert_array_equal(out, wave[round(start * 16_000): round(end * 16_000)])


def _write_format(path: Path, wave: np.ndarray, rate: int) -> Path:
    suffix = path.suffix
    if suffix == ".opus":
        sf.write(path, wave, rate, format="OGG", subtype="OPUS")
    else:
        sf.write(path, wave, rate)
    return path


_FORMATS = [
    pytest.param(".wav", id="wav"),
    pytest.param(".flac", id="flac"),
    pytest.param(".ogg", id="ogg-vorbis"),
    pytest.param(".mp3", id="mp3", marks=pytest.mark.skipif(
        "MP3" not in sf.available_formats(), reason="this libsndfile cannot handle MP3")),
    pytest.param(".opus", id="opus", marks=pytest.mark.skipif(
        "OPUS" not in sf.available_subtypes("OGG"), reason="this libsndfile has no Opus")),
]


@pytest.mark.parametrize("suffix", _FORMATS)
def test_compressed_formats_decode(tmp_path: Path, suffix: str) -> None:
    wave = _sine(2.0, 16_000, 440.0)
    path = _write_format(tmp_path / f"tone{suffix}", wave, 16_000)
    assert suffix in AUDIO_EXTENSIONS
    assert probe_duration(path) == pytest.approx(2.0, abs=0.05)
    out = load_audio(path, 16_000)
    assert abs(out.size - wave.size) <= 0.05 * 16_000
    assert abs(_peak_hz(out, 16_000) - 440.0) <= 2.0
    assert 0.4 < np.abs(out[1000:-1000]).max() < 0.6  # codecs may ring at the very ends


@pytest.mark.parametrize("suffix", _FORMATS)
def test_region_in_compressed_formats_matches_full_decode(tmp_path: Path, suffix: str) -> None:
    # Sample-accurate even for MP3, whose libsndfile seek is not: frames before the region
    # are decoded and dropped there.
    path = _write_format(tmp_path / f"chirp{suffix}", _chirp(3.0, 16_000), 16_000)
    full = load_audio(path, 16_000)
    out = load_audio(path, 16_000, start=1.25, end=2.0)
    np.testing.assert_allclose(out, full[20_000:32_000], atol=1e-6)


def test_probe_duration_reads_the_header(float_wav: tuple[Path, np.ndarray]) -> None:
    path, wave = float_wav
    assert probe_duration(path) == wave.size / 16_000
    info = probe_audio(path)
    assert (info.sample_rate, info.channels, info.frames, info.format) == (16_000, 1, 48_000,
                                                                           "WAV")


def test_a_rewritten_file_is_probed_again(tmp_path: Path) -> None:
    import os

    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(8000, np.int16), 16_000)
    assert probe_duration(path) == 0.5
    assert probe_audio(path) is probe_audio(path)  # the header is read once
    sf.write(path, np.zeros(24_000, np.int16), 16_000)  # same path, new content
    assert probe_duration(path) == 1.5
    stat = os.stat(path)
    sf.write(path, np.ones(24_000, np.int16), 8_000)  # same size: a new modification time
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert probe_audio(path).sample_rate == 8_000
    path.unlink()
    with pytest.raises(AudioError, match="no such file"):
        probe_audio(path)


def test_silent_file_is_returned(tmp_path: Path) -> None:
    sf.write(tmp_path / "silent.wav", np.zeros(8000, np.int16), 8000)
    out = load_audio(tmp_path / "silent.wav", 16_000)
    assert out.size == 16_000 and not out.any()


@pytest.mark.parametrize("loader", [lambda p: load_audio(p, 16_000), probe_duration])
def test_missing_and_non_audio_files_are_unreadable(tmp_path: Path, loader) -> None:
    (tmp_path / "text.wav").write_text("not audio at all " * 20)
    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "folder.wav").mkdir()
    for name in ("missing.wav", "text.wav", "zero.wav", "folder.wav"):
        with pytest.raises(AudioError) as excinfo:
            loader(tmp_path / name)
        assert _reason(excinfo) == "unreadable", name
        assert "\n" not in str(excinfo.value)
        assert isinstance(excinfo.value, SpeechrankError)


def test_empty_file_and_empty_region(tmp_path: Path, float_wav: tuple[Path, np.ndarray]) -> None:
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16_000)
    with pytest.raises(AudioError) as excinfo:
        load_audio(tmp_path / "empty.wav", 16_000)
    assert _reason(excinfo) == "empty"
    assert probe_duration(tmp_path / "empty.wav") == 0.0
    with pytest.raises(AudioError) as excinfo:
        load_audio(float_wav[0], 16_000, start=5.0)
    assert _reason(excinfo) == "empty"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path: Path, bad: float) -> None:
    wave = _sine(0.5, 16_000, 300.0)
    wave[1234] = bad
    sf.write(tmp_path / "bad.wav", wave, 16_000, subtype="FLOAT")
    with pytest.raises(AudioError) as excinfo:
        load_audio(tmp_path / "bad.wav", 16_000)
    assert _reason(excinfo) == "non_finite"
    # A region that avoids the bad sample is fine.
    assert load_audio(tmp_path / "bad.wav", 16_000, end=0.05).size == 800


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_truncated_file_gives_its_samples_or_unreadable(tmp_path: Path, suffix: str) -> None:
    wave = _chirp(2.0, 16_000)
    path = tmp_path / f"whole{suffix}"
    sf.write(path, wave, 16_000, subtype="PCM_16")
    reference = load_audio(path, 16_000)
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    try:
        out = load_audio(cut, 16_000)
    except AudioError as err:
        assert err.reason == "unreadable"
    else:
        assert 0 < out.size < reference.size
        np.testing.assert_array_equal(out, reference[: out.size])


def test_min_samples_and_bad_regions(float_wav: tuple[Path, np.ndarray]) -> None:
    path, _ = float_wav
    with pytest.raises(AudioError) as excinfo:
        load_audio(path, 16_000, max_seconds=0.01, min_samples=400)
    assert _reason(excinfo) == "too_short"
    assert load_audio(path, 16_000, max_seconds=0.025, min_samples=400).size == 400
    for kwargs in ({"start": -1.0}, {"start": 2.0, "end": 1.0}, {"max_seconds": 0.0},
                   {"end": float("nan")}):
        with pytest.raises(AudioError) as excinfo:
            load_audio(path, 16_000, **kwargs)
        assert _reason(excinfo) == "bad_region", kwargs


def test_load_utterance_uses_the_region(float_wav: tuple[Path, np.ndarray]) -> None:
    path, wave = float_wav
    utt = Utterance(uid="x", path=str(path), start=1.0, end=1.5)
    np.testing.assert_array_equal(load_utterance(utt, 16_000), wave[16_000:24_000])


def test_real_fsdd_file(fsdd_root: Path) -> None:
    path = fsdd_root / "recordings" / "7_jackson_32.wav"
    info = probe_audio(path)
    assert info.sample_rate == 8000 and info.channels == 1
    out = load_audio(path, 16_000)
    assert out.size == 2 * info.frames
    assert np.isfinite(out).all() and 0.01 < np.abs(out).max() <= 1.0
