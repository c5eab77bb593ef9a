"""From eSpeak output to a corpus clip: resample, trim, pad, level, add noise, write a WAV.

Every step is a pure function of the :class:`Job` (which carries its own seeds), so a clip is
the same whichever worker process renders it and in whatever order.

Signal chain, in this order:

1. eSpeak's 22,050 Hz int16 audio is resampled to 16 kHz with soxr (``HQ``, linear phase, no
   delay in whole-array mode), so the phone times in seconds carry over unchanged.
2. The audio is trimmed to the speech (first phone start to last phone end) plus a 30 ms margin,
   then padded with digital silence: keyword clips are placed at a seeded onset inside a 1 s
   frame (the Speech Commands clip length; a word longer than that keeps its length), sentences
   get 50-250 ms of silence before and after.
3. The clip is scaled so that the speech region has an RMS of :data:`SPEECH_RMS` (-26 dBFS):
   eSpeak's voices differ in level by more than 15 dB, which would otherwise be a free speaker
   cue.
4. With ``snr_db`` set, white or pink Gaussian noise is added over the whole clip and scaled so
   that, over the speech region, ``10 log10(P_speech / P_noise) = snr_db`` exactly.
5. If the peak would exceed :data:`PEAK_LIMIT` the whole mixture is scaled down (the SNR does
   not change), then it is rounded to 16-bit PCM.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from speechrank.audio.synthetic_espeak import Synthesis, Voice, engine

SAMPLE_RATE = 16_000
KEYWORD_FRAME_S = 1.0
TRIM_MARGIN_S = 0.03
SPEECH_RMS = 0.05  # -26 dBFS
PEAK_LIMIT = 0.99
NOISE_KINDS = ("white", "pink")


@dataclasses.dataclass(frozen=True)
class Job:
    """Everything needed to render and write one clip (planned by :mod:`.synthetic`)."""

    index: int
    path: str  # relative to the corpus root
    manifest: str
    split: str
    kind: str  # "sentence" | "keyword"
    language: str
    accent: str
    speaker: str
    text: str
    keyword: str | None
    voice: Voice
    snr_db: float | None
    noise: str
    onset: float  # keywords: fraction of the free space in the 1 s frame before the word
    pad: tuple[float, float]  # sentences: silence before and after, seconds
    noise_seed: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Clip:
    """A rendered clip: 16 kHz float audio in [-1, 1] and phone labels in seconds."""

    audio: np.ndarray  # float64, before 16-bit rounding
    phones: list[tuple[float, float, str]]
    speech: tuple[int, int]  # sample range of the speech region
    clean: np.ndarray  # the same clip without noise (same gain)


def resample(audio: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Float64 resampling with soxr's high-quality linear-phase filter."""
    if rate_in == rate_out:
        return audio.astype(np.float64)
    return np.asarray(soxr.resample(audio, rate_in, rate_out, quality="HQ"), dtype=np.float64)


def make_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian noise: ``white``, or ``pink`` (power ~ 1/f above DC)."""
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    if kind != "pink":
        raise ValueError(f"unknown noise kind {kind!r}; choose from {NOISE_KINDS}")
    spectrum = np.fft.rfft(white)
    freqs = np.arange(spectrum.shape[0], dtype=np.float64)
    scale = np.zeros_like(freqs)
    scale[1:] = 1.0 / np.sqrt(freqs[1:])
    pink = np.fft.irfft(spectrum * scale, n)
    return pink / max(float(np.std(pink)), 1e-12)


def add_noise(
    clean: np.ndarray,
    snr_db: float,
    rng: np.random.Generator,
    kind: str = "white",
    region: tuple[int, int] | None = None,
) -> np.ndarray:
    """Noise for ``clean`` whose power over ``region`` is ``snr_db`` below the signal's there.

    Returns the noise alone (the caller adds it), so that it can be measured.
    """
    start, end = region if region is not None else (0, clean.shape[0])
    if end <= start:
        raise ValueError("empty speech region")
    noise = make_noise(kind, clean.shape[0], rng)
    signal_power = float(np.mean(clean[start:end] ** 2))
    noise_power = float(np.mean(noise[start:end] ** 2))
    target = signal_power / (10.0 ** (snr_db / 10.0))
    return noise * np.sqrt(target / max(noise_power, 1e-30))


def _trim_and_pad(
    audio: np.ndarray, phones: list[tuple[float, float, str]], job: Job
) -> tuple[np.ndarray, list[tuple[float, float, str]], tuple[int, int]]:
    sr = SAMPLE_RATE
    n = audio.shape[0]
    first, last = phones[0][0], phones[-1][1]
    lo = max(0, int(np.floor((first - TRIM_MARGIN_S) * sr)))
    hi = min(n, int(np.ceil((last + TRIM_MARGIN_S) * sr)))
    core = audio[lo:hi]
    if job.kind == "keyword":
        frame = max(round(KEYWORD_FRAME_S * sr), core.shape[0])
        before = int(np.floor(job.onset * (frame - core.shape[0])))
        after = frame - core.shape[0] - before
    else:
        before = round(job.pad[0] * sr)
        after = round(job.pad[1] * sr)
    out = np.concatenate([np.zeros(before), core, np.zeros(after)])
    shift = before / sr - lo / sr
    moved = [(s + shift, e + shift, p) for s, e, p in phones]
    speech = (int(np.floor(moved[0][0] * sr)), int(np.ceil(moved[-1][1] * sr)))
    return out, moved, (max(speech[0], 0), min(speech[1], out.shape[0]))


def render(job: Job, synthesis: Synthesis | None = None) -> Clip:
    """Synthesise (unless given) and post-process one clip; see the module docstring."""
    syn = synthesis if synthesis is not None else engine().synthesize(job.text, job.voice)
    if not syn.phones:
        raise RuntimeError(f"eSpeak produced no phones for {job.text!r} with {job.voice}")
    audio = resample(syn.audio.astype(np.float64) / 32768.0, syn.sample_rate)
    # Phones without duration are not in the audio: the labels leave them out.
    phones = [(s / syn.sample_rate, e / syn.sample_rate, p) for s, e, p in syn.phones if e > s]
    audio, phones, speech = _trim_and_pad(audio, phones, job)
    level = float(np.sqrt(np.mean(audio[speech[0] : speech[1]] ** 2)))
    clean = audio * (SPEECH_RMS / max(level, 1e-9))
    mix = clean
    if job.snr_db is not None:
        rng = np.random.default_rng(list(job.noise_seed))
        mix = clean + add_noise(clean, job.snr_db, rng, job.noise, speech)
    peak = float(np.max(np.abs(mix))) if mix.size else 0.0
    if peak > PEAK_LIMIT:
        gain = PEAK_LIMIT / peak
        mix, clean = mix * gain, clean * gain
    return Clip(mix, phones, speech, clean)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Round [-1, 1] float audio to int16 (symmetric scale 32767, clipped)."""
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Mono 16-bit PCM WAV with the standard library writer (a byte-stable header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(to_pcm16(audio).tobytes())


def render_to_file(job: Job, root: str) -> dict[str, object]:
    """Render ``job``, write its WAV under ``root`` and return its manifest record."""
    clip = render(job)
    write_wav(Path(root) / job.path, clip.audio)
    duration = clip.audio.shape[0] / SAMPLE_RATE
    return {
        "split": job.split,
        "kind": job.kind,
        "language": job.language,
        "accent": job.accent,
        "speaker": job.speaker,
        "keyword": job.keyword,
        "transcript": job.text,
        "phones": [[round(s, 5), round(e, 5), p] for s, e, p in clip.phones],
        "snr_db": job.snr_db,
        "duration": round(duration, 5),
        "rate_wpm": job.voice.rate,
        "pitch": job.voice.pitch,
    }


def job_to_json(job: Job) -> str:
    """One line of the worker protocol."""
    return json.dumps(dataclasses.asdict(job), ensure_ascii=False)


def job_from_json(line: str) -> Job:
    data: dict[str, Any] = json.loads(line)
    data["voice"] = Voice(**data["voice"])
    data["pad"] = tuple(data["pad"])
    data["noise_seed"] = tuple(data["noise_seed"])
    return Job(**data)


def worker_main(root: str) -> None:
    """A rendering worker process: jobs as JSON lines on stdin, records as JSON lines out.

    Run by :mod:`.synthetic` with ``python -c`` (not ``multiprocessing``, which would re-import
    the caller's ``__main__``); each output line is ``{"index": i, "record": {...}}``.
    """
    jobs = [job_from_json(line) for line in sys.stdin if line.strip()]
    for job in jobs:
        record = render_to_file(job, root)
        sys.stdout.write(json.dumps({"index": job.index, "record": record}) + "\n")
        sys.stdout.flush()
