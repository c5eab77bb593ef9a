"""Reading audio: soundfile to decode, mean over channels to mix, soxr to resample.

Every waveform speechrank feeds to an encoder comes through :func:`load_audio`, so the
conventions are in one place and recorded in :data:`AUDIO_CONVENTIONS` for the JSON output:

- decoding with soundfile (libsndfile): WAV, FLAC, OGG (Vorbis and Opus), MP3 and the other
  formats the installed libsndfile reads; integer PCM is scaled to [-1, 1) by libsndfile;
- mixing to mono by the mean over channels (computed in float64, returned as float32);
- resampling with python-soxr at quality ``HQ`` (its default: 20-bit precision, linear phase,
  95 % passband), whose output has exactly ``round(n * target / source)`` samples;
- cropping before decoding: only the frames of the requested region are read (a 10-minute
  file read with ``max_seconds=10`` decodes 10 s). MP3 is the exception for regions that do
  not start at 0: libsndfile's MP3 seek (and even a second read call) is not sample-accurate
  for VBR files, so the file is decoded from its start up to the region's end in one call and
  the head dropped.

Refusals raise :class:`~speechrank.errors.AudioError` with a short ``reason``:
``unreadable`` (missing, not audio, corrupt or truncated beyond repair), ``empty`` (no
samples, or a region past the end of the file), ``non_finite`` (NaN or Inf samples),
``bad_region`` (a negative or reversed start/end) and, only when ``min_samples`` is given,
``too_short``. Silent files are valid audio and are returned as zeros: the caller decides.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from speechrank.audio.utterance import Utterance
from speechrank.errors import AudioError

__all__ = [
    "AUDIO_CONVENTIONS",
    "AUDIO_EXTENSIONS",
    "RESAMPLE_QUALITY",
    "AudioInfo",
    "is_audio_file",
    "load_audio",
    "load_utterance",
    "probe_audio",
    "probe_duration",
]

#: python-soxr quality preset used for every resampling (``"HQ"``: soxr's default).
RESAMPLE_QUALITY = "HQ"

#: How waveforms are read; goes into the ``conventions`` of the JSON output.
AUDIO_CONVENTIONS: Mapping[str, Any] = {
    "reader": "soundfile",
    "dtype": "float32",
    "integer_pcm": "scaled to [-1, 1) by libsndfile",
    "mono": "mean over channels",
    "resampler": "soxr",
    "resample_quality": RESAMPLE_QUALITY,
    "crop": "region [start, end) first, then the first max_seconds of it",
}

# File extensions per libsndfile major format, kept only where the installed libsndfile
# reads that format (``soundfile.available_formats``).
_FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "WAV": (".wav", ".wave"),
    "WAVEX": (".wav",),
    "RF64": (".rf64",),
    "W64": (".w64",),
    "FLAC": (".flac",),
    "OGG": (".ogg", ".oga"),
    "MP3": (".mp3",),
    "AIFF": (".aif", ".aiff", ".aifc"),
    "AU": (".au", ".snd"),
    "CAF": (".caf",),
}


def _supported_extensions() -> frozenset[str]:
    formats = sf.available_formats()
    extensions = {ext for fmt, exts in _FORMAT_EXTENSIONS.items() if fmt in formats
                  for ext in exts}
    if "OGG" in formats and "OPUS" in sf.available_subtypes("OGG"):
        extensions.add(".opus")
    return frozenset(extensions)


#: Lower-case extensions (with the dot) that the installed libsndfile can decode.
AUDIO_EXTENSIONS: frozenset[str] = _supported_extensions()

# Raised by soundfile/libsndfile for missing, unreadable or corrupt files.
# TypeError: libsndfile formats that need caller-given parameters (headerless RAW).
_READ_ERRORS = (sf.SoundFileError, RuntimeError, OSError, ValueError, EOFError, TypeError)


def is_audio_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` has an extension of a format the installed libsndfile reads."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, read without decoding.

    ``frames`` is an estimate for MP3 (from the header or the bit rate).
    """

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Length in seconds (``frames / sample_rate``)."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _unreadable(path: str, err: BaseException | str) -> AudioError:
    if isinstance(err, BaseException):
        detail = " ".join(str(err).split()) or type(err).__name__
    else:
        detail = err
    return AudioError(path, "unreadable", detail)


def _check_exists(path: str) -> os.stat_result:
    """``path``'s ``stat``, or an :class:`AudioError` when it is missing or a directory."""
    try:
        status = os.stat(path)
    except OSError:  # as os.path.exists: anything that cannot be stat'ed is not there
        raise AudioError(path, "unreadable", "no such file") from None
    if stat.S_ISDIR(status.st_mode):
        raise AudioError(path, "unreadable", "is a directory")
    return status


def probe_audio(path: str | os.PathLike[str]) -> AudioInfo:
    """Read a file's header (sample rate, channels, frames, format) without decoding it.

    Headers are remembered in this process by path, size, inode and modification time (a
    changed file is read again): a sweep plans the same files for every unit of every
    checkpoint, and a ``stat`` costs a small part of opening the file and parsing its
    header."""
    path = os.fspath(path)
    status = _check_exists(path)
    return _read_header(path, status.st_size, status.st_ino, status.st_mtime_ns)


@functools.lru_cache(maxsize=1 << 16)
def _read_header(path: str, size: int, inode: int, mtime_ns: int) -> AudioInfo:
    """The header of ``path`` as it is at ``(size, inode, mtime_ns)`` (the cache key only)."""
    try:
        info = sf.info(path)
    except _READ_ERRORS as err:
        raise _unreadable(path, err) from err
    return AudioInfo(path=path, sample_rate=int(info.samplerate), channels=int(info.channels),
                     frames=max(int(info.frames), 0), format=str(info.format),
                     subtype=str(info.subtype))


def probe_duration(path: str | os.PathLike[str]) -> float:
    """The file's length in seconds from its header (no decoding); used to batch by length.

    Raises :class:`AudioError` (``unreadable``) when the header cannot be read.
    """
    return probe_audio(path).duration


def _region_frames(path: str, sample_rate: int, start: float | None, end: float | None,
                   max_seconds: float | None) -> tuple[int, int | None]:
    """First frame and frame count (``None`` = to the end) of the requested region."""
    for name, value in (("start", start), ("end", end), ("max_seconds", max_seconds)):
        if value is not None and not math.isfinite(value):
            raise AudioError(path, "bad_region", f"{name}={value} is not a finite number")
    if start is not None and start < 0:
        raise AudioError(path, "bad_region", f"start={start} is negative")
    if end is not None and end <= (start or 0.0):
        raise AudioError(path, "bad_region", f"end={end} is not after start={start or 0.0}")
    if max_seconds is not None and max_seconds <= 0:
        raise AudioError(path, "bad_region", f"max_seconds={max_seconds} is not positive")
    first = round((start or 0.0) * sample_rate)
    count = None if end is None else round(end * sample_rate) - first
    if max_seconds is not None:
        limit = round(max_seconds * sample_rate)
        count = limit if count is None else min(count, limit)
    return first, count


def _read_region(path: str, start: float | None, end: float | None,
                 max_seconds: float | None) -> tuple[np.ndarray, int]:
    _check_exists(path)
    try:
        with sf.SoundFile(path) as f:
            native_rate = int(f.samplerate)
            first, count = _region_frames(path, native_rate, start, end, max_seconds)
            known_frames = int(f.frames)
            if first and f.format != "MP3" and 0 <= known_frames <= first:
                raise AudioError(path, "empty", f"region starts at {first / native_rate:.3f} s, "
                                 f"after the end of the file ({known_frames / native_rate:.3f} s)")
            if f.format == "MP3":
                # One read from the start, then drop the head: libsndfile's MP3 seek, and even
                # consecutive reads, are not sample-consistent for VBR files.
                data = f.read(frames=-1 if count is None else first + count, dtype="float32",
                              always_2d=True)[first:]
            else:
                if first:
                    f.seek(first)
                data = f.read(frames=-1 if count is None else count, dtype="float32",
                              always_2d=True)
    except AudioError:
        raise
    except _READ_ERRORS as err:
        raise _unreadable(path, err) from err
    return data, native_rate


def load_audio(path: str | os.PathLike[str], sample_rate: int, *, start: float | None = None,
               end: float | None = None, max_seconds: float | None = None,
               min_samples: int | None = None) -> np.ndarray:
    """Read a file as a mono float32 waveform at ``sample_rate``.

    Args:
        path: any file libsndfile reads (see :data:`AUDIO_EXTENSIONS`).
        sample_rate: the rate to resample to (the encoder's, usually 16000).
        start, end: the region ``[start, end)`` in seconds (``None``: the file's start/end).
        max_seconds: keep at most this many seconds from the region's start.
        min_samples: refuse (``too_short``) results shorter than this, after resampling.

    Returns:
        A contiguous 1-D ``float32`` array; all zeros for a silent file.

    Raises:
        AudioError: ``unreadable``, ``empty``, ``non_finite``, ``bad_region`` or ``too_short``.
    """
    path = os.fspath(path)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    data, native_rate = _read_region(path, start, end, max_seconds)
    if data.shape[0] == 0:
        where = "the requested region" if start or end else "the file"
        raise AudioError(path, "empty", f"{where} has no samples")
    if not np.isfinite(data).all():
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        raise AudioError(path, "non_finite", f"{bad} NaN or Inf samples")
    if data.shape[1] == 1:
        wave = data[:, 0]
    else:
        wave = data.mean(axis=1, dtype=np.float64).astype(np.float32)
    if native_rate != sample_rate:
        wave = soxr.resample(wave, native_rate, sample_rate, quality=RESAMPLE_QUALITY)
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if wave.size == 0:
        raise AudioError(path, "empty", "no samples after resampling")
    if min_samples is not None and wave.size < min_samples:
        raise AudioError(path, "too_short",
                         f"{wave.size} samples at {sample_rate} Hz, fewer than {min_samples}")
    return wave


def load_utterance(utterance: Utterance, sample_rate: int, *, max_seconds: float | None = None,
                   min_samples: int | None = None) -> np.ndarray:
    """:func:`load_audio` for an :class:`Utterance` (its path and ``start``/``end`` region)."""
    return load_audio(utterance.path, sample_rate, start=utterance.start, end=utterance.end,
                      max_seconds=max_seconds, min_samples=min_samples)
