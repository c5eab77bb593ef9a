"""Pretraining data: which utterances, preloaded into memory, and seeded random crops.

- **Which audio.** A dataset with a ``pretrain`` split (the synthetic corpus) trains on that
  split only; otherwise on every utterance except the ``test`` split (so probes evaluated on
  ``test`` never score audio the encoder was trained on), or on everything when the dataset has
  nothing but ``test``.
- **Preloading.** All training audio is decoded once (soundfile, mono, soxr to 16 kHz; see
  :func:`speechrank.audio.io.load_utterance`) into one float32 array. The cap
  ``max_seconds`` (default two hours: 2 x 3600 x 16000 x 4 bytes = 461 MB) bounds memory: when
  the data is longer, utterances are taken in a seeded random order until the cap is reached
  and the rest are left out and counted. Files that cannot be read, or that are too short for
  one encoder frame, are skipped with a reason.
- **Normalisation statistics.** :func:`log_mel_statistics` measures the per-bin mean and
  standard deviation of the log-mels over all preloaded audio (float64 sums), which the encoder
  keeps for its ``global`` feature normalisation.
- **Crops.** Each epoch visits the utterances in a permutation drawn from ``(seed, epoch)``; a
  batch takes the next ``batch_size`` of them and, for each, a window of ``crop_samples`` at an
  offset drawn from ``(seed, step)`` (shorter utterances are taken whole). The batch is zero
  padded to its longest crop and comes with the valid lengths. Everything a batch draws is a
  function of the step number alone, so resuming at step ``s`` replays exactly the batches an
  uninterrupted run would see.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from speechrank.audio.utterance import Dataset, Utterance
from speechrank.encoders.bestrq import LogMelFrontend
from speechrank.errors import AudioError, SpeechrankError

__all__ = [
    "DEFAULT_MAX_PRELOAD_SECONDS",
    "AudioBank",
    "CropSampler",
    "log_mel_statistics",
    "preload_audio",
    "resolve_dataset",
    "select_pretraining",
]

#: Default cap on preloaded audio, in seconds (two hours, 461 MB as float32 at 16 kHz).
DEFAULT_MAX_PRELOAD_SECONDS = 7200.0

# Stream identifiers that keep the seeded draws of different purposes independent.
_STREAM_ORDER = 1
_STREAM_CROP = 2
_STREAM_PRELOAD = 3


def resolve_dataset(data: Dataset | str | os.PathLike[str]) -> Dataset:
    """``data`` as a :class:`Dataset`: a dataset object as is, or a DATA spec (a directory of
    audio, a manifest, ``FORMAT:PATH``) read with :func:`speechrank.audio.load_dataset`."""
    if isinstance(data, Dataset):
        return data
    from speechrank.audio import load_dataset

    return load_dataset(os.fspath(data))


def select_pretraining(dataset: Dataset) -> tuple[list[Utterance], str]:
    """The utterances to pretrain on and a short description of the rule that chose them."""
    utterances = list(dataset.utterances)
    pretrain = [u for u in utterances if u.split == "pretrain"]
    if pretrain:
        return pretrain, "split == 'pretrain'"
    not_test = [u for u in utterances if u.split != "test"]
    if not_test and len(not_test) < len(utterances):
        return not_test, "every split but 'test'"
    return utterances, "all utterances"


@dataclasses.dataclass
class AudioBank:
    """Preloaded waveforms: utterance ``i`` is ``samples[offsets[i]:offsets[i + 1]]``."""

    uids: list[str]
    offsets: np.ndarray  # int64, len(uids) + 1
    samples: np.ndarray  # float32, all waveforms end to end
    sample_rate: int
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
    left_out: int = 0  # utterances beyond the preload cap
    selection: str = ""

    def __len__(self) -> int:
        return len(self.uids)

    def length(self, index: int) -> int:
        return int(self.offsets[index + 1] - self.offsets[index])

    @property
    def seconds(self) -> float:
        return float(self.samples.size) / self.sample_rate

    def fingerprint(self) -> str:
        """BLAKE2b digest of the ids, lengths and samples: equal exactly when the training
        audio is."""
        hasher = hashlib.blake2b(digest_size=16)
        hasher.update(str(self.sample_rate).encode())
        for uid in self.uids:
            hasher.update(uid.encode() + b"\0")
        hasher.update(self.offsets.astype("<i8").tobytes())
        hasher.update(self.samples.astype("<f4").tobytes())
        return hasher.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"utterances": len(self), "seconds": round(self.seconds, 3),
                "selection": self.selection, "skipped": len(self.skipped),
                "left_out_by_cap": self.left_out}


def preload_audio(utterances: Sequence[Utterance], sample_rate: int, *, min_samples: int,
                  max_seconds: float = DEFAULT_MAX_PRELOAD_SECONDS, seed: int = 0,
                  selection: str = "",
                  on_progress: Callable[[int, int], None] | None = None) -> AudioBank:
    """Decode ``utterances`` into an :class:`AudioBank` (in their given order).

    Utterances are read in a seeded random order until ``max_seconds`` of audio is held; the
    rest are counted in ``left_out``. Unusable files are listed in ``skipped``.
    """
    from speechrank.audio.io import load_utterance

    if max_seconds <= 0:
        raise SpeechrankError(f"max preload seconds must be positive, got {max_seconds}")
    cap = int(max_seconds * sample_rate)
    order = np.random.default_rng([seed, _STREAM_PRELOAD]).permutation(len(utterances))
    kept: dict[int, np.ndarray] = {}
    skipped: list[dict[str, str]] = []
    total = 0
    left_out = 0
    for done, index in enumerate(order, start=1):
        if on_progress is not None:
            on_progress(done, len(order))
        if total >= cap:
            left_out += 1
            continue
        utt = utterances[int(index)]
        try:
            wave = load_utterance(utt, sample_rate, min_samples=min_samples)
        except AudioError as err:
            skipped.append({"path": err.path, "reason": err.reason, "detail": err.detail})
            continue
        wave = wave[:cap - total]
        if wave.size < min_samples:  # cut by the cap below one frame
            left_out += 1
            continue
        kept[int(index)] = wave
        total += wave.size
    if not kept:
        reasons = ", ".join(sorted({s["reason"] for s in skipped})) or "none usable"
        raise SpeechrankError(f"no usable audio to pretrain on ({len(skipped)} of "
                              f"{len(utterances)} files skipped: {reasons})")
    indices = sorted(kept)
    lengths = np.array([kept[i].size for i in indices], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    samples = np.concatenate([kept[i] for i in indices]).astype(np.float32, copy=False)
    return AudioBank(uids=[utterances[i].uid for i in indices], offsets=offsets,
                     samples=samples, sample_rate=sample_rate, skipped=skipped,
                     left_out=left_out, selection=selection)


class CropSampler:
    """Seeded random crops from an :class:`AudioBank`, a pure function of the step number."""

    def __init__(self, bank: AudioBank, batch_size: int, crop_samples: int, seed: int) -> None:
        if batch_size < 1:
            raise SpeechrankError(f"batch size must be at least 1, got {batch_size}")
        self.bank = bank
        self.batch_size = batch_size
        self.crop_samples = crop_samples
        self.seed = seed
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if len(self._orders) > 4:
                self._orders.pop(min(self._orders))
            rng = np.random.default_rng([self.seed, _STREAM_ORDER, epoch])
            self._orders[epoch] = rng.permutation(len(self.bank))
        return self._orders[epoch]

    def position(self, step: int) -> dict[str, int]:
        """Where the data order stands before ``step``: epoch and index within it."""
        epoch, index = divmod(step * self.batch_size, len(self.bank))
        return {"epoch": epoch, "index": index}

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number ``step`` (0-based): ``[B, S]`` float32 waveforms and ``[B]`` lengths."""
        n = len(self.bank)
        start = step * self.batch_size
        rng = np.random.default_rng([self.seed, _STREAM_CROP, step])
        crops = []
        for cursor in range(start, start + self.batch_size):
            epoch, index = divmod(cursor, n)
            utt = int(self._order(epoch)[index])
            begin, length = int(self.bank.offsets[utt]), self.bank.length(utt)
            if length > self.crop_samples:
                begin += int(rng.integers(0, length - self.crop_samples + 1))
                length = self.crop_samples
            crops.append(self.bank.samples[begin:begin + length])
        lengths = torch.tensor([c.size for c in crops], dtype=torch.int64)
        waves = torch.zeros(len(crops), int(lengths.max()), dtype=torch.float32)
        for row, crop in enumerate(crops):
            waves[row, :crop.size] = torch.from_numpy(crop)
        return waves, lengths



@torch.no_grad()
def log_mel_statistics(bank: AudioBank, frontend: LogMelFrontend,
                       chunk_seconds: float = 30.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and standard deviation of the log-mels of every frame the encoder would
    use, over all of ``bank`` (utterances are cut into ``chunk_seconds`` pieces to bound
    memory, which drops at most one frame per cut). Sums are float64; ``std`` includes the
    front end's ``norm_eps`` (``sqrt(var + eps)``)."""
    config = frontend.config
    chunk = max(int(chunk_seconds * bank.sample_rate), config.n_fft)
    total = torch.zeros(config.n_mels, dtype=torch.float64)
    squares = torch.zeros(config.n_mels, dtype=torch.float64)
    count = 0
    for index in range(len(bank)):
        start, end = int(bank.offsets[index]), int(bank.offsets[index + 1])
        for begin in range(start, end, chunk):
            piece = torch.from_numpy(bank.samples[begin:min(begin + chunk, end)])
            logmel, frames = frontend.log_mel(piece[None], torch.tensor([piece.numel()]))
            used = logmel[0, :int(frames[0]) * config.stack].double()
            total += used.sum(0)
            squares += used.square().sum(0)
            count += used.shape[0]
    if count == 0:
        raise SpeechrankError("no audio frame to measure normalisation statistics on")
    mean = total / count
    var = (squares / count - mean.square()).clamp(min=0.0)
    return mean.float(), torch.sqrt(var + config.norm_eps).float()
