"""Frames and time: which phone a frame belongs to, and which frames a capped probe keeps.

Frame ``i`` of an encoder with ``frame_rate`` frames per second is taken to sit at its centre
time ``(i + 0.5) / frame_rate`` seconds from the start of the utterance's audio. For the usual
wav2vec 2.0 / HuBERT front end (receptive field 400 samples, stride 320 at 16 kHz) the true
centre of frame ``i`` is ``(320 i + 200) / 16000 = 0.02 i + 0.0125`` s, 2.5 ms later than this
rule: far below the length of a phone (tens of milliseconds), and the same for every layer and
checkpoint, so comparisons between them are unaffected.

Time-aligned phones are ``[[start_s, end_s, phone], ...]`` (the synthetic corpus's ``phones``
label), in seconds from the start of the utterance's audio; a frame takes the phone whose
half-open interval ``[start, end)`` covers its centre, or the silence class if none does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["even_frame_indices", "frame_centres", "parse_phones", "phone_frame_labels"]


def frame_centres(num_frames: int, frame_rate: float) -> np.ndarray:
    """Centre times in seconds of frames ``0 .. num_frames - 1`` (float64)."""
    if frame_rate <= 0:
        raise ValueError(f"frame_rate must be positive, got {frame_rate}")
    return (np.arange(num_frames, dtype=np.float64) + 0.5) / float(frame_rate)


def parse_phones(phones: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Check and sort ``[[start, end, phone], ...]``; returns starts, ends and phone names.

    Raises ``ValueError`` for an entry that is not ``(number, number, name)`` or whose end is
    before its start.
    """
    starts: list[float] = []
    ends: list[float] = []
    names: list[str] = []
    for entry in phones:
        try:
            start, end, name = entry
            start, end = float(start), float(end)
        except (TypeError, ValueError) as err:
            raise ValueError(f"bad phone entry {entry!r}: expected [start_s, end_s, phone]"
                             ) from err
        if not (np.isfinite(start) and np.isfinite(end)) or end < start:
            raise ValueError(f"bad phone interval {entry!r}")
        starts.append(start)
        ends.append(end)
        names.append(str(name))
    order = np.argsort(np.asarray(starts), kind="stable")
    return (np.asarray(starts, dtype=np.float64)[order], np.asarray(ends, dtype=np.float64)[order],
            [names[i] for i in order])


def phone_frame_labels(phones: Sequence[Any], num_frames: int, frame_rate: float, *,
                       silence: str = "sil", frames: np.ndarray | None = None) -> list[str]:
    """The phone covering the centre of each frame (``silence`` where none does).

    Args:
        phones: ``[[start_s, end_s, phone], ...]``, seconds from the start of the audio.
        num_frames: valid frames of the utterance.
        frame_rate: frames per second.
        silence: label of frames that no phone covers.
        frames: label only these frame indices (default: all ``num_frames``).

    Where intervals overlap, the one that starts last before the centre wins.
    """
    starts, ends, names = parse_phones(phones)
    index = np.arange(num_frames) if frames is None else np.asarray(frames, dtype=np.int64)
    centres = (index.astype(np.float64) + 0.5) / float(frame_rate)
    if not names:
        return [silence] * len(index)
    # Last phone starting at or before the centre; it covers the centre if it ends after it.
    candidate = np.searchsorted(starts, centres, side="right") - 1
    covered = (candidate >= 0) & (centres < ends[np.clip(candidate, 0, None)])
    return [names[c] if ok else silence for c, ok in zip(candidate, covered, strict=True)]


def even_frame_indices(num_valid: int, quota: int | None, rng: np.random.Generator
                       ) -> np.ndarray:
    """``quota`` frame indices spread evenly over ``0 .. num_valid - 1`` with a random phase.

    Index ``k`` is ``floor((k + u) * num_valid / quota)`` with one ``u ~ U[0, 1)`` per
    utterance: consecutive picks are ``num_valid / quota`` frames apart (neighbouring frames
    are nearly duplicates, so spreading them out gives the probe more independent examples),
    and every frame has the same chance ``quota / num_valid`` of being picked. ``None`` or a
    quota of at least ``num_valid`` keeps every frame.
    """
    if quota is None or quota >= num_valid:
        return np.arange(num_valid, dtype=np.int64)
    if quota <= 0:
        return np.zeros(0, dtype=np.int64)
    phase = rng.random()
    picks = np.floor((np.arange(quota) + phase) * (num_valid / quota)).astype(np.int64)
    return np.clip(picks, 0, num_valid - 1)
