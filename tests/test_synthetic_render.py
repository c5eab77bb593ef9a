"""Rendering a clip: resampling, padding, levelling, noise at an exact SNR, WAV output."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from speechrank.audio.synthetic_espeak import Voice
from speechrank.audio.synthetic_render import (
    KEYWORD_FRAME_S,
    SAMPLE_RATE,
    SPEECH_RMS,
    TRIM_MARGIN_S,
    Job,
    add_noise,
    job_from_json,
    job_to_json,
    make_noise,
    render,
    to_pcm16,
    write_wav,
)


def _job(**changes: object) -> Job:
    base = Job(
        index=0,
        path="wav/x.wav",
        manifest="train",
        split="train",
        kind="keyword",
        language="en",
        accent="en-us",
        speaker="en-us_m3_p50_r50_w175",
        text="seven",
        keyword="seven",
        voice=Voice("en-us+m3"),
        snr_db=None,
        noise="white",
        onset=0.5,
        pad=(0.1, 0.2),
        noise_seed=(0, 4, 1, 0),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _snr(signal: np.ndarray, noise: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(signal**2) / np.mean(noise**2)))


@settings(max_examples=30, deadline=None)
@given(
    snr=st.floats(-10, 40),
    kind=st.sampled_from(["white", "pink"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_add_noise_hits_the_snr_over_the_region(snr: float, kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    clean = np.sin(np.linspace(0, 300, 4000)) * rng.uniform(0.01, 1)
    clean[:500] = 0.0
    noise = add_noise(clean, snr, rng, kind, region=(500, 3500))
    assert noise.shape == clean.shape
    assert _snr(clean[500:3500], noise[500:3500]) == pytest.approx(snr, abs=1e-9)


def test_noise_spectra() -> None:
    n = 2**16
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    band = (freqs > 100) & (freqs < 4000)
    for kind, slope in (("white", 0.0), ("pink", -1.0)):
        noise = make_noise(kind, n, np.random.default_rng(0))
        assert np.std(noise) == pytest.approx(1.0, rel=0.05)
        power = np.abs(np.fft.rfft(noise)) ** 2
        fit = np.polyfit(np.log(freqs[band]), np.log(power[band]), 1)[0]
        assert fit == pytest.approx(slope, abs=0.1)
    with pytest.raises(ValueError, match="unknown noise"):
        make_noise("brown", 10, np.random.default_rng(0))


def test_keyword_clip_is_one_second_with_labels_inside() -> None:
    for onset in (0.0, 0.5, 0.999):
        clip = render(_job(onset=onset))
        assert clip.audio.shape[0] == round(KEYWORD_FRAME_S * SAMPLE_RATE)
        starts = [s for s, _, _ in clip.phones]
        assert starts == sorted(starts)
        assert clip.phones[0][0] >= 0 and clip.phones[-1][1] <= KEYWORD_FRAME_S
        assert [p for *_, p in clip.phones] == ["s", "ɛ", "v", "ə", "n"]
        region = clip.audio[clip.speech[0] : clip.speech[1]]
        assert np.sqrt(np.mean(region**2)) == pytest.approx(SPEECH_RMS, rel=1e-9)
        padding = clip.audio[: max(0, clip.speech[0] - round(TRIM_MARGIN_S * SAMPLE_RATE) - 1)]
        assert np.all(padding == 0.0)
        assert (padding.size > 0.2 * SAMPLE_RATE) == (onset > 0.4)


def test_sentence_clip_is_padded() -> None:
    clip = render(_job(kind="sentence", text="Seven birds fly home.", keyword=None))
    first, last = clip.phones[0][0], clip.phones[-1][1]
    assert first >= 0.1 and clip.audio.shape[0] / SAMPLE_RATE - last >= 0.2
    assert np.all(clip.audio[: int(0.1 * SAMPLE_RATE)] == 0.0)


@pytest.mark.parametrize("snr", [-5.0, 0.0, 10.0, 30.0])
def test_rendered_noise_has_the_requested_snr(snr: float) -> None:
    clip = render(_job(snr_db=snr, noise_seed=(1, 2, 3, int(snr) + 10)))
    lo, hi = clip.speech
    noise = clip.audio - clip.clean
    assert np.all(noise[:lo] != 0.0)  # noise fills the padding too
    assert _snr(clip.clean[lo:hi], noise[lo:hi]) == pytest.approx(snr, abs=1e-6)
    assert np.max(np.abs(clip.audio)) <= 0.99 + 1e-12
    again = render(_job(snr_db=snr, noise_seed=(1, 2, 3, int(snr) + 10)))
    assert np.array_equal(clip.audio, again.audio)


def test_wav_round_trip(tmp_path: Path) -> None:
    audio = np.sin(np.linspace(0, 100, 1600)) * 0.5
    path = tmp_path / "a" / "b.wav"
    write_wav(path, audio)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (
        SAMPLE_RATE,
        1,
        "PCM_16",
        1600,
    )
    back, _ = sf.read(str(path), dtype="int16")
    assert np.array_equal(back, to_pcm16(audio))
    assert to_pcm16(np.array([2.0, -2.0])).tolist() == [32767, -32768]


def test_job_json_round_trip() -> None:
    job = _job(snr_db=3.5, pad=(0.07, 0.11))
    assert job_from_json(job_to_json(job)) == job
