"""The monitor's fixed held-out set: chosen, read, resampled and batched once.

A training monitor runs the same audio through the model at every check, so everything that
does not depend on the weights is done once, at the monitor's first call:

- the utterances are chosen (a DATA spec, a :class:`~speechrank.audio.utterance.Dataset`, a
  list of audio paths, or a list of waveforms already at the encoder's rate), cut to the budget
  (a seeded subset of ``num_utterances``, as ``speechrank rank --num-utterances`` picks it,
  then at most ``total_seconds`` of audio, chosen by
  :func:`speechrank.extract.select_within_seconds` as the phone probes choose theirs);
- each file's duration is read from its header and the utterances are grouped into batches by
  length exactly as :func:`speechrank.extract.iter_encoded` groups them, so the monitor sees the
  same batches, hence bit-for-bit the same features, as ``speechrank rank`` on the same data;
- the audio is decoded and resampled once and kept as padded ``[B, S]`` float32 tensors (and,
  after the first check, a copy on the encoder's device).

Under ``torch.distributed`` the batches, not the utterances, are dealt out to the processes
(batch ``i`` goes to rank ``i % world``): every utterance then meets the same batch-mates as in
a single process, so each process computes exactly the features one process would, and the
summed accumulators equal the single-process ones up to the order of float64 additions. Each
process decodes only the batches it needs, when it first needs them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from speechrank.audio.utterance import Dataset, Utterance
from speechrank.encoders.base import SpeechEncoder
from speechrank.errors import AudioError, SpeechrankError
from speechrank.extract import (
    PlannedUtterance,
    SkipLog,
    group_by_length,
    load_planned,
    pad_waveforms,
    plan_utterances,
    runs_of_equal_length,
    select_within_seconds,
)
from speechrank.spec import MeasureSpec

__all__ = ["CachedBatch", "HeldOutSet"]

#: Path given to in-memory waveforms (never opened).
_MEMORY = "<waveform {}>"


@dataclasses.dataclass
class CachedBatch:
    """One batch of decoded audio, zero padded to its longest utterance."""

    utterances: list[Utterance]
    waveforms: torch.Tensor  # [B, S] float32
    lengths: torch.Tensor  # [B] int64, samples
    num_samples: list[int]

    def to(self, device: torch.device) -> CachedBatch:
        if self.waveforms.device == device:
            return self
        return dataclasses.replace(self, waveforms=self.waveforms.to(device),
                                   lengths=self.lengths.to(device))


def _is_waveform(item: Any) -> bool:
    return isinstance(item, (torch.Tensor, np.ndarray))


def _as_wave(item: Any, index: int) -> np.ndarray:
    wave = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
    wave = np.squeeze(wave)
    if wave.ndim != 1:
        raise SpeechrankError(f"held-out waveform {index} must be 1-D, got shape {wave.shape}")
    return np.ascontiguousarray(wave, dtype=np.float32)


def _as_dataset(data: Any) -> tuple[Dataset, dict[str, np.ndarray]]:
    """A dataset plus the in-memory waveforms by uid (empty for files)."""
    if isinstance(data, Dataset):
        return data, {}
    if isinstance(data, (str, os.PathLike)):
        from speechrank.audio.datasets import load_dataset

        return load_dataset(data), {}
    if _is_waveform(data) and getattr(data, "ndim", 0) == 2:
        data = list(data)
    if not isinstance(data, Sequence) or isinstance(data, (bytes, bytearray)):
        raise SpeechrankError(
            f"held-out data must be a DATA spec, a Dataset, a list of paths or a list of "
            f"waveforms, not {type(data).__name__}")
    items = list(data)
    if not items:
        raise SpeechrankError("the held-out set is empty")
    if all(_is_waveform(item) for item in items):
        waves = {f"waveform-{i:06d}": _as_wave(item, i) for i, item in enumerate(items)}
        utterances = [Utterance(uid=uid, path=_MEMORY.format(i))
                      for i, uid in enumerate(waves)]
        return Dataset(f"waveforms:{len(items)}", "waveforms", "", utterances), waves
    if all(isinstance(item, (str, os.PathLike)) for item in items):
        paths = [os.fspath(item) for item in items]
        utterances = [Utterance(uid=path, path=path) for path in paths]
        return Dataset(f"files:{len(paths)}", "files", "", utterances), {}
    raise SpeechrankError("held-out data must be all paths or all waveforms, not a mixture")


def _plan_waveforms(encoder: SpeechEncoder, utterances: Sequence[Utterance],
                    waves: dict[str, np.ndarray], crop_seconds: float | None,
                    skips: SkipLog) -> list[PlannedUtterance]:
    planned = []
    limit = None if crop_seconds is None else round(crop_seconds * encoder.sample_rate)
    for utt in utterances:
        wave = waves[utt.uid]
        samples = wave.size if limit is None else min(wave.size, limit)
        frames = int(encoder.frame_lengths(torch.tensor([samples]))[0]) if samples else 0
        if not np.isfinite(wave[:samples]).all():
            skips.add(utt.path, "non_finite", "NaN or Inf samples")
        elif frames < 1:
            skips.add(utt.path, "too_short" if samples else "empty",
                      f"{samples} samples give no output frame")
        elif not np.any(wave[:samples]):
            skips.add(utt.path, "silent", "every sample is zero")
        else:
            planned.append(PlannedUtterance(utt, samples, frames))
    return planned


class HeldOutSet:
    """Chosen, decoded and batched held-out audio (see the module docstring).

    Args:
        data: a DATA spec, a :class:`Dataset`, a list of audio paths, or a list (or a 2-D
            tensor) of 1-D waveforms already at ``encoder.sample_rate``.
        encoder: gives the sample rate, the frame formula and the padding rule.
        spec: the budget and reading: ``num_utterances`` (a seeded random subset),
            ``total_seconds`` (most audio in total), ``crop_seconds``, ``batch_seconds``,
            ``seed`` and ``strict`` of a :class:`~speechrank.spec.MeasureSpec`.
        rank, world: the share of the batches to decode now (see :meth:`batches_for`).
        name: what to call the set in results (default: the DATA spec, ``files:N`` or
            ``waveforms:N``).
    """

    def __init__(self, data: Any, encoder: SpeechEncoder, spec: MeasureSpec, *,
                 rank: int = 0, world: int = 1, name: str | None = None) -> None:
        max_utterances, max_audio_seconds = spec.num_utterances, spec.total_seconds
        crop_seconds, batch_seconds = spec.crop_seconds, spec.batch_seconds
        seed, strict = spec.seed, spec.strict
        dataset, waves = _as_dataset(data)
        self.files_found = len(dataset)
        if max_utterances is not None and max_utterances < len(dataset):
            from speechrank.audio.splits import subset

            dataset = subset(dataset, max_utterances, seed=seed)
        self.spec = name or dataset.spec
        self.dataset = dataset
        self.sample_rate = int(encoder.sample_rate)
        self.skips = SkipLog()
        if waves:
            planned = _plan_waveforms(encoder, dataset.utterances, waves, crop_seconds,
                                      self.skips)
        else:
            planned = plan_utterances(encoder, dataset.utterances, max_seconds=crop_seconds,
                                      strict=strict, skips=self.skips)
        if max_audio_seconds is not None:
            planned = select_within_seconds(planned, max_audio_seconds, self.sample_rate, seed)
        if not planned:
            raise SpeechrankError(
                f"no usable audio in the held-out set {self.spec} ({self.skips.summary()})")
        self.planned = planned
        self._groups = group_by_length(planned, batch_seconds, self.sample_rate)
        self._waves = waves
        self._crop_seconds = crop_seconds
        self._strict = strict
        self._equal_length = encoder.equal_length_batches
        self._encoder = encoder
        self._loaded: dict[int, list[CachedBatch]] = {}
        self._on_device: dict[tuple[torch.device, int, int], list[CachedBatch]] = {}
        self.batches_for(rank, world)  # decode this process's share now

    @property
    def num_batches(self) -> int:
        """Length-sorted batches over all processes (before splitting equal-length runs)."""
        return len(self._groups)

    def _load_group(self, index: int) -> list[CachedBatch]:
        if index not in self._loaded:
            loaded = []
            for item in self._groups[index]:
                try:
                    wave = (self._waves[item.utterance.uid][: item.num_samples] if self._waves
                            else load_planned(self._encoder, item, self._crop_seconds))
                except AudioError as err:
                    if self._strict:
                        raise
                    self.skips.add(item.utterance.path, err.reason, err.detail)
                    continue
                loaded.append((item, wave))
            runs = runs_of_equal_length(loaded) if self._equal_length else [loaded]
            self._loaded[index] = [_pad(run) for run in runs if run]
        return self._loaded[index]

    def batches_for(self, rank: int = 0, world: int = 1) -> list[CachedBatch]:
        """The decoded batches of process ``rank`` of ``world`` (batch ``i`` goes to rank
        ``i % world``); each batch is decoded once, the first time a process needs it."""
        return [batch for index in range(rank, len(self._groups), world)
                for batch in self._load_group(index)]

    @property
    def num_utterances(self) -> int:
        """Utterances planned over all processes (before any decoding failure)."""
        return len(self.planned)

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio planned over all processes."""
        return sum(p.num_samples for p in self.planned) / self.sample_rate

    def batches_on(self, device: torch.device, rank: int = 0,
                   world: int = 1) -> list[CachedBatch]:
        """:meth:`batches_for` on ``device`` (copied there once, then reused)."""
        device = torch.device(device)
        batches = self.batches_for(rank, world)
        if device.type == "cpu":
            return batches
        key = (device, rank, world)
        if key not in self._on_device:
            self._on_device = {key: [batch.to(device) for batch in batches]}
        return self._on_device[key]

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "files_found": self.files_found,
                "utterances": self.num_utterances, "audio_seconds": round(self.audio_seconds, 3),
                "batches": self.num_batches, "skipped": len(self.skips),
                "skipped_by_reason": self.skips.counts}


def _pad(run: list[tuple[PlannedUtterance, np.ndarray]]) -> CachedBatch:
    waveforms, lengths = pad_waveforms([wave for _, wave in run])
    return CachedBatch(utterances=[item.utterance for item, _ in run], waveforms=waveforms,
                       lengths=lengths, num_samples=lengths.tolist())
