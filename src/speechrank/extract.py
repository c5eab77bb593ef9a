"""One pass over a dataset: read audio, batch it by length, run an encoder.

Everything that needs encoder features (``rank``, ``probe``, ``sweep``, the monitor) goes through
:func:`iter_encoded`, so every part shares the same rules:

- audio is read with soundfile, mixed to mono and resampled to the encoder's rate
  (:func:`speechrank.audio.io.load_audio`);
- unusable files are skipped with a reason, counted and listed (:class:`SkipLog`), or fail the
  run in strict mode; a skipped file never changes the features of the others;
- utterances are sorted by duration and grouped into batches of at most ``batch_seconds`` of
  padded audio, so padding stays small; an encoder whose valid frames depend on padding
  (``equal_length_batches``: group-norm models trained without an attention mask) only ever
  sees batches of exactly equal length;
- the encoder runs in eval mode under ``torch.inference_mode`` (the adapter's job) and hands back
  the valid-frame lengths from its own convolution formula: padded frames never reach a
  consumer, and no frame is repeated;
- with a :class:`FrameMemo`, an utterance already encoded by the same model is replayed from
  memory instead of being decoded and encoded again, so that several consumers of the same
  audio (a sweep's rank data and its probes) share one forward pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from speechrank.audio.io import load_audio, probe_duration
from speechrank.audio.utterance import Utterance
from speechrank.encoders.base import EncoderOutput, SpeechEncoder
from speechrank.errors import AudioError, SpeechrankError
from speechrank.options import DEFAULT_BATCH_SECONDS

#: Default memory budget of a :class:`FrameMemo` (float32 frames of every kept layer).
DEFAULT_MEMO_BYTES = 2 * 1024**3


class SkipLog:
    """Files left out of a run, each with a short reason (``unreadable``, ``too_short`` ...)."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, path: str, reason: str, detail: str = "") -> None:
        self.items.append({"path": path, "reason": reason, "detail": detail})

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(item["reason"] for item in self.items).items()))

    def __len__(self) -> int:
        return len(self.items)

    def summary(self) -> str:
        """One line such as ``3 skipped: 2 unreadable, 1 too_short``."""
        if not self.items:
            return "0 skipped"
        parts = ", ".join(f"{n} {reason}" for reason, n in self.counts.items())
        return f"{len(self.items)} skipped: {parts}"


@dataclasses.dataclass
class EncodedBatch:
    """The encoder's output for a batch of utterances (CPU, float32)."""

    utterances: list[Utterance]
    output: EncoderOutput
    num_samples: list[int]

    @property
    def audio_seconds(self) -> float:
        return float(sum(self.num_samples))


@dataclasses.dataclass(frozen=True)
class PlannedUtterance:
    """An utterance whose duration is known before decoding, in encoder samples."""

    utterance: Utterance
    num_samples: int
    num_frames: int


def _effective_seconds(utt: Utterance, file_seconds: float, max_seconds: float | None) -> float:
    start = utt.start or 0.0
    end = file_seconds if utt.end is None else min(utt.end, file_seconds)
    seconds = max(0.0, end - start)
    if max_seconds is not None:
        seconds = min(seconds, max_seconds)
    return seconds


def plan_utterances(encoder: SpeechEncoder, utterances: Sequence[Utterance], *,
                    max_seconds: float | None = None, strict: bool = False,
                    skips: SkipLog | None = None) -> list[PlannedUtterance]:
    """Read each file's header (no decoding) and work out its samples and frames.

    Files whose header cannot be read, or that are too short for a single output frame, are
    skipped (or raise in strict mode). The result keeps the input order.
    """
    skips = skips if skips is not None else SkipLog()
    planned: list[PlannedUtterance] = []
    for utt in utterances:
        try:
            seconds = _effective_seconds(utt, probe_duration(utt.path), max_seconds)
        except AudioError as err:
            if strict:
                raise
            skips.add(utt.path, err.reason, err.detail)
            continue
        num_samples = round(seconds * encoder.sample_rate)
        num_frames = (int(encoder.frame_lengths(torch.tensor([num_samples]))[0])
                      if num_samples else 0)
        if num_frames < 1:
            err = AudioError(utt.path, "too_short" if num_samples else "empty",
                             f"{seconds:.3f} s gives no output frame")
            if strict:
                raise err
            skips.add(utt.path, err.reason, err.detail)
            continue
        planned.append(PlannedUtterance(utt, num_samples, num_frames))
    return planned


def _priority(seed: int, uid: str) -> tuple[int, str]:
    digest = hashlib.sha256(f"{seed}\0{uid}".encode()).digest()
    return int.from_bytes(digest[:8], "little"), uid


def select_within_seconds(planned: Sequence[PlannedUtterance],
                          max_seconds: float | Mapping[str, float],
                          sample_rate: int, seed: int, *,
                          group_of: Callable[[PlannedUtterance], str] | None = None
                          ) -> list[PlannedUtterance]:
    """A seeded random choice of utterances with at most ``max_seconds`` of audio (per group,
    when ``group_of`` names one, e.g. a split, and ``max_seconds`` may then map each group to
    its own budget): the one audio-budget rule of the probes and the training monitor.

    Utterances are visited in the order of ``sha256(seed, uid)``, so the choice depends neither
    on the dataset's order nor on the other groups; each is taken when it still fits the
    group's budget, else passed over. The result keeps the input order.
    """
    def budget(group: str) -> float:
        seconds = max_seconds[group] if isinstance(max_seconds, Mapping) else max_seconds
        return seconds * sample_rate

    used: dict[str, int] = {}
    kept: set[int] = set()
    order = sorted(range(len(planned)), key=lambda i: _priority(seed, planned[i].utterance.uid))
    for index in order:
        item = planned[index]
        group = group_of(item) if group_of is not None else ""
        total = used.get(group, 0)
        if total + item.num_samples <= budget(group):
            kept.add(index)
            used[group] = total + item.num_samples
    return [item for i, item in enumerate(planned) if i in kept]


def group_by_length(planned: Sequence[PlannedUtterance],
                     batch_seconds: float, sample_rate: int) -> list[list[PlannedUtterance]]:
    """Sort by length and cut into batches of at most ``batch_seconds`` of padded audio."""
    order = sorted(planned, key=lambda p: (p.num_samples, p.utterance.uid))
    budget = max(1, int(batch_seconds * sample_rate))
    batches: list[list[PlannedUtterance]] = []
    current: list[PlannedUtterance] = []
    for item in order:
        # Sorted ascending, so the newcomer is the longest: padded size = len * its samples.
        if current and (len(current) + 1) * item.num_samples > budget:
            batches.append(current)
            current = []
        current.append(item)
    if current:
        batches.append(current)
    return batches


def runs_of_equal_length(items: list[tuple[PlannedUtterance, np.ndarray]]
                         ) -> list[list[tuple[PlannedUtterance, np.ndarray]]]:
    """Split decoded utterances into runs of exactly equal length (for encoders whose valid
    frames depend on padding)."""
    runs: list[list[tuple[PlannedUtterance, np.ndarray]]] = []
    for item in sorted(items, key=lambda x: len(x[1])):
        if runs and len(runs[-1][-1][1]) == len(item[1]):
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def load_planned(encoder: SpeechEncoder, item: PlannedUtterance,
                 max_seconds: float | None) -> np.ndarray:
    """Decode one planned utterance at the encoder's rate; silent or frameless audio is an
    :class:`AudioError` (the caller skips or raises)."""
    utt = item.utterance
    wave = load_audio(utt.path, encoder.sample_rate, start=utt.start, end=utt.end,
                      max_seconds=max_seconds)
    if wave.size and not np.any(wave):
        raise AudioError(utt.path, "silent", "every sample is zero")
    if int(encoder.frame_lengths(torch.tensor([wave.size]))[0]) < 1:
        raise AudioError(utt.path, "too_short", f"{wave.size} samples give no output frame")
    return wave


_MemoKey = tuple[str, str, float | None, float | None, int]


def _memo_key(item: PlannedUtterance) -> _MemoKey:
    utt = item.utterance
    return (utt.uid, utt.path, utt.start, utt.end, item.num_samples)


class FrameMemo:
    """The valid frames of utterances one model has already encoded, kept in memory.

    A sweep measures several things on the same audio under the same checkpoint (the rank data
    and the keyword, speaker and phone probes of the demo all read the same clips). Passed to
    :func:`iter_encoded`, a memo stores each newly encoded utterance's valid frames (float32, on
    the CPU) for the layers that pass asked for, and a later pass that needs only stored layers
    of a stored utterance gets them back, re-padded into a batch, without decoding or encoding
    the audio again. An utterance is identified by its uid, path, region and planned sample
    count (which includes any crop), so a different crop is a different entry.

    Replayed frames are those of the first pass, whose batch held other utterances than the
    second pass's would: values agree with a fresh pass to float32 rounding (about 1e-7), not
    bit for bit. A memo belongs to one model (:meth:`bind` refuses another) and holds at most
    ``max_bytes`` of frames; past that, new utterances are encoded as usual and not stored
    (counted in ``refused``). Written by hand because it sits between our own batching and our
    encoder adapters; no library caches activations by utterance across consumers.
    """

    def __init__(self, max_bytes: int = DEFAULT_MEMO_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0  # utterances replayed
        self.misses = 0  # utterances encoded while the memo was consulted
        self.refused = 0  # encoded utterances not stored (budget)
        self.replayed_seconds = 0.0
        self._entries: dict[_MemoKey, dict[str, torch.Tensor]] = {}
        self._owner: int | None = None

    def bind(self, encoder: SpeechEncoder) -> None:
        """Tie the memo to ``encoder`` on first use; another encoder is a programming error."""
        if self._owner is None:
            self._owner = id(encoder)
        elif self._owner != id(encoder):
            raise SpeechrankError("a FrameMemo holds one model's frames; use a new memo for "
                                  "another model")

    def __len__(self) -> int:
        return len(self._entries)

    def has(self, item: PlannedUtterance, layers: Sequence[str]) -> bool:
        stored = self._entries.get(_memo_key(item))
        return stored is not None and all(layer in stored for layer in layers)

    def store(self, batch: EncodedBatch, planned: Sequence[PlannedUtterance]) -> None:
        """Keep the valid frames of every utterance of an encoded batch (within the budget)."""
        lengths = batch.output.lengths.tolist()
        for row, item in enumerate(planned):
            key = _memo_key(item)
            previous = self._entries.get(key, {})
            added = {name: tensor[row, : lengths[row]].to("cpu", torch.float32).clone()
                     for name, tensor in batch.output.layers.items() if name not in previous}
            if not added:
                continue
            extra = sum(t.numel() * t.element_size() for t in added.values())
            if self.bytes + extra > self.max_bytes:
                self.refused += 1
                continue
            self._entries[key] = {**previous, **added}
            self.bytes += extra

    def replay(self, planned: Sequence[PlannedUtterance], layers: Sequence[str],
               device: torch.device) -> EncodedBatch:
        """A batch of stored utterances, zero-padded as the encoder would have returned it."""
        stored = [self._entries[_memo_key(item)] for item in planned]
        lengths = [int(entry[layers[0]].shape[0]) for entry in stored]
        longest = max(lengths)
        out: dict[str, torch.Tensor] = {}
        for name in layers:
            dim = stored[0][name].shape[1]
            padded = torch.zeros(len(planned), longest, dim, dtype=torch.float32)
            for row, entry in enumerate(stored):
                padded[row, : lengths[row]] = entry[name]
            out[name] = padded.to(device)
        self.hits += len(planned)
        samples = [item.num_samples for item in planned]
        return EncodedBatch(
            utterances=[item.utterance for item in planned],
            output=EncoderOutput(layers=out,
                                 lengths=torch.tensor(lengths, dtype=torch.long).to(device)),
            num_samples=samples)


@dataclasses.dataclass(frozen=True)
class Reading:
    """How one pass reads and batches its audio.

    Attributes:
        batch_seconds: most padded audio per batch; lower it to save memory.
        crop_seconds: crop every file to its first ``crop_seconds`` (after ``start``).
        strict: raise the first :class:`AudioError` instead of skipping the file.
        to_cpu: move the frames to the CPU (False keeps them on the encoder's device, where
            the accumulators can consume them without a copy).
    """

    batch_seconds: float = DEFAULT_BATCH_SECONDS
    crop_seconds: float | None = None
    strict: bool = False
    to_cpu: bool = True

    def __post_init__(self) -> None:
        if not self.batch_seconds > 0:
            raise SpeechrankError(f"--batch-seconds must be positive, got {self.batch_seconds}")


def iter_encoded(encoder: SpeechEncoder, utterances: Sequence[Utterance], *,
                 layers: Sequence[str] | None = None, reading: Reading = Reading(),
                 skips: SkipLog | None = None,
                 planned: Sequence[PlannedUtterance] | None = None,
                 memo: FrameMemo | None = None,
                 progress: Callable[[float], Any] | None = None) -> Iterator[EncodedBatch]:
    """Encode ``utterances`` batch by batch, yielding float32 per-layer frames.

    Args:
        encoder: any :class:`SpeechEncoder`.
        utterances: what to encode; the yield order follows length, not this order.
        layers: layer names to return (all the encoder offers when ``None``).
        reading: batch size, crop, strictness and where the frames go (:class:`Reading`).
        skips: where skipped files are recorded.
        planned: the output of :func:`plan_utterances`, when the caller already has it.
        memo: a :class:`FrameMemo` of this encoder: utterances it holds (for every requested
            layer) are replayed from it in batches of their own, the others are encoded and
            stored in it.
        progress: called with the audio seconds of each finished batch (including skips'
            zero), for progress bars.
    """
    batch_seconds, max_seconds = reading.batch_seconds, reading.crop_seconds
    strict, to_cpu = reading.strict, reading.to_cpu
    skips = skips if skips is not None else SkipLog()
    if planned is None:
        planned = plan_utterances(encoder, utterances, max_seconds=max_seconds, strict=strict,
                                  skips=skips)
    layer_list = list(layers) if layers is not None else None
    if memo is not None:
        memo.bind(encoder)
        wanted = layer_list if layer_list is not None else list(encoder.layer_names)
        target = torch.device("cpu") if to_cpu else encoder.device
    for batch in group_by_length(planned, batch_seconds, encoder.sample_rate):
        if memo is not None:
            stored = [memo.has(item, wanted) for item in batch]
            replayed = [item for item, hit in zip(batch, stored, strict=True) if hit]
            if replayed:
                batch = [item for item, hit in zip(batch, stored, strict=True) if not hit]
                yield memo.replay(replayed, wanted, target)
                seconds = sum(item.num_samples for item in replayed) / encoder.sample_rate
                memo.replayed_seconds += seconds
                if progress is not None:
                    progress(seconds)
            if not batch:
                continue
            memo.misses += len(batch)
        loaded: list[tuple[PlannedUtterance, np.ndarray]] = []
        for item in batch:
            try:
                loaded.append((item, load_planned(encoder, item, max_seconds)))
            except AudioError as err:
                if strict:
                    raise
                skips.add(item.utterance.path, err.reason, err.detail)
        groups = runs_of_equal_length(loaded) if encoder.equal_length_batches else [loaded]
        for group in groups:
            if not group:
                continue
            encoded = _encode_group(encoder, group, layer_list, to_cpu)
            if memo is not None:
                memo.store(encoded, [item for item, _ in group])
            yield encoded
        if progress is not None:
            progress(sum(len(wave) for _, wave in loaded) / encoder.sample_rate)


def pad_waveforms(waves: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad 1-D float32 waveforms into a ``[B, S]`` tensor plus their ``[B]`` lengths (the
    one padding path of ``rank``, ``probe`` and the monitor's cached held-out batches)."""
    lengths = [len(wave) for wave in waves]
    waveforms = torch.zeros(len(waves), max(lengths), dtype=torch.float32)
    for row, wave in enumerate(waves):
        waveforms[row, : len(wave)] = torch.from_numpy(wave)
    return waveforms, torch.tensor(lengths, dtype=torch.long)


def encode_padded(encoder: SpeechEncoder, utterances: list[Utterance], waveforms: torch.Tensor,
                  lengths: torch.Tensor, layers: Sequence[str] | None, *,
                  to_cpu: bool = True) -> EncodedBatch:
    """Run ``encoder`` on one padded batch and return float32 frames and valid-frame lengths on
    the CPU (or, with ``to_cpu=False``, on the encoder's device): the one encode path of
    ``rank``, ``probe`` and the monitor."""
    num_samples = [int(n) for n in lengths.tolist()]
    output = encoder.encode(waveforms.to(encoder.device), lengths.to(encoder.device),
                            None if layers is None else list(layers))
    target = torch.device("cpu") if to_cpu else encoder.device
    frames_by_layer = {name: frames.detach().to(target, torch.float32)
                       for name, frames in output.layers.items()}
    return EncodedBatch(
        utterances=list(utterances),
        output=EncoderOutput(layers=frames_by_layer,
                             lengths=output.lengths.detach().to(target).long()),
        num_samples=num_samples,
    )


def _encode_group(encoder: SpeechEncoder, group: list[tuple[PlannedUtterance, np.ndarray]],
                  layers: list[str] | None, to_cpu: bool) -> EncodedBatch:
    waveforms, lengths = pad_waveforms([wave for _, wave in group])
    return encode_padded(encoder, [item.utterance for item, _ in group], waveforms, lengths,
                         layers, to_cpu=to_cpu)
