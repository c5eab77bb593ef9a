"""Per-layer probe features from one encoder pass, cached on disk.

Every layer a probe needs comes from a single forward pass per utterance
(:func:`speechrank.extract.iter_encoded`), and what that pass produced is kept so that the next
probe of the same model on the same audio (another task, seed, or recipe) skips the encoder:

- **pooled** features, one row per utterance: the ``mean`` and the ``sum`` of its valid frames
  (sums in float64, stored as float32) and its valid frame count;
- **frame** features for phone probes: the frames a :class:`FramePlan` selects (a per-utterance
  quota spread evenly over the utterance, or every frame for CTC), with the utterance and frame
  index of each row.

Cache layout (default ``~/.cache/speechrank/features``; the ``SPEECHRANK_CACHE`` environment
variable or an argument overrides it)::

    <cache>/<encoder fingerprint[:16]>-<data fingerprint[:16]>/
        meta.json                        # what the entry holds (model, data, utterance ids)
        pooled/layer-<name>.safetensors  # mean [N, D], sum [N, D], num_frames [N], index [N]
        frames-<plan[:16]>/layer-<name>.safetensors  # features [M, D], utt [M], frame [M]

The encoder fingerprint is :meth:`SpeechEncoder.fingerprint` (weights and configuration); the
data fingerprint (:func:`data_fingerprint`) covers the utterance ids, paths, regions, file sizes
and modification times (or, on request, the file contents), ``max_seconds``, the encoder's
sample rate and the audio-reading conventions; every file is one layer. Files are written to a
temporary name and renamed, so an interrupted run never leaves a half-written entry. Skipped
files are stored with each layer, so a cache hit reports the same skips as the run that filled
it. While extracting, per-layer arrays spill to disk past a memory budget, so a large corpus
never has to fit in memory with every layer at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from speechrank import __version__, distributed
from speechrank.accumulate import uid_generator
from speechrank.audio.io import AUDIO_CONVENTIONS
from speechrank.audio.utterance import Utterance
from speechrank.encoders.base import SpeechEncoder
from speechrank.errors import AudioError, SpeechrankError
from speechrank.extract import (
    DEFAULT_BATCH_SECONDS,
    EncodedBatch,
    FrameMemo,
    PlannedUtterance,
    Reading,
    SkipLog,
    iter_encoded,
    plan_utterances,
)
from speechrank.probes.alignment import even_frame_indices
from speechrank.progress import Progress

__all__ = [
    "CACHE_ENV",
    "DEFAULT_CACHE_DIR",
    "ExtractOptions",
    "FeatureEntry",
    "FramePlan",
    "data_fingerprint",
    "extract_features",
    "resolve_cache_dir",
]

#: Environment variable naming the feature cache directory.
CACHE_ENV = "SPEECHRANK_CACHE"
#: Where features are cached when neither an argument nor ``SPEECHRANK_CACHE`` says otherwise.
DEFAULT_CACHE_DIR = Path("~/.cache/speechrank/features")
#: Bumped whenever the cache's layout or contents change meaning.
CACHE_VERSION = 1
#: In-memory bytes of per-layer arrays before they spill to disk during extraction.
SPILL_BYTES = 256 * 1024 * 1024


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The feature cache directory: ``cache_dir``, else ``$SPEECHRANK_CACHE``, else
    ``~/.cache/speechrank/features``."""
    if cache_dir is not None and str(cache_dir) != "":
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else DEFAULT_CACHE_DIR.expanduser()


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprint(utterances: Sequence[Utterance], *, sample_rate: int,
                     max_seconds: float | None, content_hash: bool = False) -> str:
    """A sha256 naming exactly the audio an encoder would see.

    Covers, in order, every utterance's uid and region plus either its path, size and
    modification time (default: cheap, one ``stat`` per file) or a hash of its bytes
    (``content_hash=True``: survives copies and moves), together with ``max_seconds``, the
    target sample rate and :data:`speechrank.audio.io.AUDIO_CONVENTIONS`. A file that cannot be
    read is fingerprinted as missing (it will be skipped by the extraction).
    """
    digest = hashlib.sha256()
    head = {"cache_version": CACHE_VERSION, "sample_rate": int(sample_rate),
            "max_seconds": max_seconds, "audio": dict(AUDIO_CONVENTIONS)}
    digest.update(json.dumps(head, sort_keys=True).encode())
    for utt in utterances:
        try:
            if content_hash:
                source: list[Any] = ["sha256", _file_digest(utt.path)]
            else:
                stat = os.stat(utt.path)
                source = [utt.path, stat.st_size, stat.st_mtime_ns]
        except OSError:
            source = [utt.path, "missing"]
        digest.update(json.dumps([utt.uid, utt.start, utt.end, *source]).encode())
        digest.update(b"\n")
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class FramePlan:
    """Which frames of each utterance to keep for a frame-level probe.

    ``quotas[uid]`` is the number of frames to keep (``None``: all of them, as CTC needs);
    the kept frames are spread evenly with a random phase from ``uid_generator(seed, uid)``
    (:func:`speechrank.probes.alignment.even_frame_indices`).
    """

    quotas: dict[str, int | None]
    seed: int

    def fingerprint(self) -> str:
        payload = json.dumps({"method": "even-spaced, phase from (seed, sha256(uid))",
                              "seed": self.seed, "quotas": sorted(self.quotas.items())})
        return hashlib.sha256(payload.encode()).hexdigest()

    def indices(self, uid: str, num_valid: int) -> np.ndarray:
        return even_frame_indices(num_valid, self.quotas.get(uid), uid_generator(self.seed, uid))


def _layer_file(directory: Path, layer: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", layer)
    return directory / f"layer-{safe}.safetensors"


def _atomic_save(arrays: dict[str, np.ndarray], path: Path, metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp,
                  metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)


class _Spool:
    """Per-layer arrays appended batch by batch, spilled to ``.npy`` parts past a budget."""

    def __init__(self, directory: Path, layers: Sequence[str], budget: int = SPILL_BYTES):
        self.directory = directory
        self.layers = list(layers)
        self.budget = budget
        self.chunks: dict[str, list[np.ndarray]] = {layer: [] for layer in self.layers}
        self.parts: dict[str, list[Path]] = {layer: [] for layer in self.layers}
        self.bytes = 0

    def add(self, layer: str, rows: np.ndarray) -> None:
        self.chunks[layer].append(rows)
        self.bytes += rows.nbytes
        if self.bytes > self.budget:
            self.spill()

    def spill(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for number, layer in enumerate(self.layers):
            if self.chunks[layer]:
                part = self.directory / f"layer{number}-part{len(self.parts[layer])}.npy"
                np.save(part, np.concatenate(self.chunks[layer], axis=0))
                self.parts[layer].append(part)
                self.chunks[layer] = []
        self.bytes = 0

    def collect(self, layer: str) -> np.ndarray:
        pieces = [np.load(part) for part in self.parts[layer]] + self.chunks[layer]
        self.chunks[layer] = []
        for part in self.parts[layer]:
            part.unlink(missing_ok=True)
        return np.concatenate(pieces, axis=0)


@dataclasses.dataclass
class PooledFeatures:
    """Utterance-level features of one layer, rows in the entry's utterance order."""

    uids: list[str]
    mean: np.ndarray
    sum: np.ndarray
    num_frames: np.ndarray

    def pooled(self, pooling: str) -> np.ndarray:
        if pooling == "mean":
            return self.mean
        if pooling == "sum":
            return self.sum
        raise ValueError(f"unknown pooling '{pooling}'")


@dataclasses.dataclass
class FrameFeatures:
    """Selected frames of one layer: ``features[r]`` is frame ``frame[r]`` of ``uids[utt[r]]``;
    rows are sorted by utterance, then frame."""

    uids: list[str]
    features: np.ndarray
    utt: np.ndarray
    frame: np.ndarray

    def sequences(self) -> dict[str, np.ndarray]:
        """``uid -> [T, D]`` frames of every utterance present (for CTC)."""
        if len(self.utt) == 0:
            return {}
        cuts = np.flatnonzero(np.diff(self.utt)) + 1
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [len(self.utt)]])
        return {self.uids[int(self.utt[s])]: self.features[s:e]
                for s, e in zip(starts, ends, strict=True)}


@dataclasses.dataclass
class FeatureEntry:
    """Features of some utterances for some layers, in the cache (or a temporary directory).

    Attributes:
        directory: the entry's directory.
        uids: the utterances fingerprinted, in order (rows refer to these).
        layers: the layers available.
        skipped: files left out, ``{"path", "reason", "detail"}`` each.
        cache_hit_layers: layers read from an earlier run.
        computed_layers: layers this call computed.
        encode_seconds: wall time spent in the encoder pass (0 on a full hit).
        frame_plan: the frame plan (``None`` for pooled features).
    """

    directory: Path
    uids: list[str]
    layers: list[str]
    skipped: list[dict[str, str]]
    cache_hit_layers: list[str]
    computed_layers: list[str]
    encode_seconds: float
    frame_plan: FramePlan | None = None

    @property
    def _subdir(self) -> Path:
        if self.frame_plan is None:
            return self.directory / "pooled"
        return self.directory / f"frames-{self.frame_plan.fingerprint()[:16]}"

    def load_pooled(self, layer: str) -> PooledFeatures:
        """Pooled features of ``layer``, rows ordered as ``uids`` (skipped files absent)."""
        arrays = load_file(str(_layer_file(self.directory / "pooled", layer)))
        index = arrays["index"]
        return PooledFeatures(uids=[self.uids[i] for i in index], mean=arrays["mean"],
                              sum=arrays["sum"], num_frames=arrays["num_frames"])

    def load_frames(self, layer: str) -> FrameFeatures:
        """Selected frames of ``layer``."""
        arrays = load_file(str(_layer_file(self._subdir, layer)))
        return FrameFeatures(uids=self.uids, features=arrays["features"], utt=arrays["utt"],
                             frame=arrays["frame"])


def _read_skips(path: Path) -> list[dict[str, str]] | None:
    """The skips stored with a layer file, or ``None`` if the file is absent or unreadable."""
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata() or {}
        return list(json.loads(meta.get("skipped", "[]")))
    except (OSError, ValueError, json.JSONDecodeError):
        return None


@contextlib.contextmanager
def _scratch(directory: Path) -> Iterator[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=".spool-", dir=directory))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _pooled_rows(batch: EncodedBatch, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sum over valid frames (float64 sums, returned as float32)."""
    frames = batch.output.layers[layer]
    lengths = batch.output.lengths.to(frames.device)
    steps = torch.arange(frames.shape[1], device=frames.device)
    mask = (steps[None, :] < lengths[:, None]).to(torch.float64)
    summed = torch.einsum("btd,bt->bd", frames.to(torch.float64), mask)
    mean = summed / lengths.to(torch.float64)[:, None]
    return (mean.to(torch.float32).cpu().numpy(), summed.to(torch.float32).cpu().numpy())


def _gather_layer(spool: _Spool, layer: str) -> np.ndarray:
    """Under torchrun: one layer's rows from every process, in rank order."""
    local = spool.collect(layer) if spool.parts[layer] or spool.chunks[layer] else None
    return np.concatenate([rows for rows in distributed.gather(local) if rows is not None],
                          axis=0)


@dataclasses.dataclass(frozen=True)
class ExtractOptions:
    """How :func:`extract_features` reads the audio and where it keeps the features.

    Attributes:
        cache_dir: the cache root (see :func:`resolve_cache_dir`).
        batch_seconds, max_seconds, strict: as :func:`speechrank.extract.iter_encoded`.
        content_hash: fingerprint files by content instead of size and modification time.
    """

    cache_dir: Path
    batch_seconds: float = DEFAULT_BATCH_SECONDS
    max_seconds: float | None = None
    strict: bool = False
    content_hash: bool = False


def _stored_layers(entry: FeatureEntry, strict: bool) -> list[str]:
    """Fill ``entry``'s cache hits (and their skips) from disk; the layers still missing
    (under torchrun: missing in any process)."""
    stored: dict[str, list[dict[str, str]]] = {}
    for layer in entry.layers:
        skips = _read_skips(_layer_file(entry._subdir, layer))
        if skips is not None:
            stored[layer] = skips
    missing = [layer for layer in entry.layers if layer not in stored]
    if distributed.current() is not None:  # under torchrun: encode what any process misses
        anywhere = {layer for share in distributed.gather(missing) for layer in share}
        missing = [layer for layer in entry.layers if layer in anywhere]
        stored = {layer: stored[layer] for layer in entry.layers if layer not in anywhere}
    entry.cache_hit_layers = [layer for layer in entry.layers if layer in stored]
    if entry.cache_hit_layers:
        entry.skipped = stored[entry.cache_hit_layers[0]]
        if strict and entry.skipped:
            first = entry.skipped[0]
            raise AudioError(first["path"], first["reason"], first.get("detail", ""))
    return missing


@dataclasses.dataclass
class _Rows:
    """Where each spooled row came from: its utterance's position, its valid frame count
    (pooled) or its frame index (frames)."""

    index: list[np.ndarray] = dataclasses.field(default_factory=list)
    counts: list[np.ndarray] = dataclasses.field(default_factory=list)
    frames: list[np.ndarray] = dataclasses.field(default_factory=list)

    @staticmethod
    def joined(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _spool_batch(batch: EncodedBatch, spool: _Spool, rows: _Rows, missing: Sequence[str],
                 position: dict[str, int], frame_plan: FramePlan | None) -> None:
    """One encoded batch's pooled features, or its planned frames, into ``spool``."""
    lengths = batch.output.lengths.cpu().numpy().astype(np.int64)
    positions = np.array([position[u.uid] for u in batch.utterances], dtype=np.int64)
    if frame_plan is None:
        rows.index.append(positions)
        rows.counts.append(lengths)
        for layer in missing:
            mean, summed = _pooled_rows(batch, layer)
            spool.add(layer, np.concatenate([mean, summed], axis=1))
        return
    picks = [frame_plan.indices(u.uid, int(n))
             for u, n in zip(batch.utterances, lengths, strict=True)]
    rows.index.append(np.concatenate([np.full(len(p), r, dtype=np.int64)
                                      for p, r in zip(picks, positions, strict=True)]))
    rows.frames.append(np.concatenate(picks))
    if not missing:
        return
    # every pick as a row of the batch's [B * T, D] frames (all layers padded to one T): one
    # gather per layer, not one per utterance
    longest = batch.output.layers[missing[0]].shape[1]
    flat = torch.from_numpy(np.concatenate([np.asarray(p, dtype=np.int64) + b * longest
                                            for b, p in enumerate(picks)]))
    for layer in missing:
        frames = batch.output.layers[layer]
        taken = frames.reshape(-1, frames.shape[-1])[flat.to(frames.device)]
        spool.add(layer, taken.cpu().numpy().astype(np.float32, copy=False))


def _save_layers(entry: FeatureEntry, encoder: SpeechEncoder, missing: Sequence[str],
                 rows: _Rows, collect: Callable[[str], np.ndarray],
                 skipped: list[dict[str, str]]) -> None:
    """Write every missing layer's file, rows in the entry's utterance (and frame) order."""
    metadata = {"skipped": json.dumps(skipped), "speechrank": __version__}
    index, frames_idx = _Rows.joined(rows.index), _Rows.joined(rows.frames)
    pooled = entry.frame_plan is None
    order = (np.argsort(index, kind="stable") if pooled
             else np.lexsort((frames_idx, index)))
    for layer in missing:
        dim = encoder.layer_dims.get(layer, encoder.dim)
        width = 2 * dim if pooled else dim
        values = collect(layer)[order] if len(order) else np.zeros((0, width), np.float32)
        if pooled:
            half = values.shape[1] // 2
            arrays = {"mean": values[:, :half], "sum": values[:, half:],
                      "num_frames": _Rows.joined(rows.counts)[order], "index": index[order]}
        else:
            arrays = {"features": values, "utt": index[order], "frame": frames_idx[order]}
        _atomic_save(arrays, _layer_file(entry._subdir, layer), metadata)


def extract_features(encoder: SpeechEncoder, utterances: Sequence[Utterance],
                     layers: Sequence[str], options: ExtractOptions, *,
                     frame_plan: FramePlan | None = None,
                     planned: Sequence[PlannedUtterance] | None = None,
                     memo: FrameMemo | None = None,
                     progress: Progress | None = None) -> FeatureEntry:
    """Make sure ``layers`` of ``utterances`` are in the cache; run the encoder only for the
    layers that are missing (all of them in one pass).

    Args:
        encoder: the model.
        utterances: what to encode (the entry's row order).
        layers: layer names.
        options: the cache root, batching, crop, strictness and fingerprinting
            (:class:`ExtractOptions`).
        frame_plan: store selected frames instead of pooled features.
        planned: :func:`speechrank.extract.plan_utterances` output for ``utterances``, if the
            caller already has it.
        memo: a :class:`~speechrank.extract.FrameMemo` of this encoder: a miss replays the
            utterances another pass of the same model already encoded.
        progress: stage ``encode`` (seconds of audio), started and advanced only on a miss.

    In strict mode a cache entry that recorded skipped files raises the first one's
    :class:`AudioError`, as a fresh strict run would have.
    """
    try:
        encoder_fp = encoder.fingerprint()
    except NotImplementedError as err:
        raise SpeechrankError(f"encoder {encoder.name} has no fingerprint; cannot cache its "
                              "features") from err
    max_seconds, strict = options.max_seconds, options.strict
    data_fp = data_fingerprint(utterances, sample_rate=encoder.sample_rate,
                               max_seconds=max_seconds, content_hash=options.content_hash)
    directory = Path(options.cache_dir) / f"{encoder_fp[:16]}-{data_fp[:16]}"
    uids = [u.uid for u in utterances]
    entry = FeatureEntry(directory=directory, uids=uids, layers=list(layers), skipped=[],
                         cache_hit_layers=[], computed_layers=[], encode_seconds=0.0,
                         frame_plan=frame_plan)
    missing = _stored_layers(entry, strict)
    if not missing:
        return entry

    meta = {"cache_version": CACHE_VERSION, "speechrank": __version__,
            "encoder": encoder.name, "encoder_fingerprint": encoder_fp,
            "data_fingerprint": data_fp, "sample_rate": encoder.sample_rate,
            "max_seconds": max_seconds, "uids": uids}
    _atomic_write_text(directory / "meta.json", json.dumps(meta, indent=1) + "\n")
    if frame_plan is not None:
        _atomic_write_text(entry._subdir / "plan.json", json.dumps(
            {"seed": frame_plan.seed, "quotas": frame_plan.quotas}, indent=1) + "\n")

    skips = SkipLog()
    if planned is None:
        planned = plan_utterances(encoder, utterances, max_seconds=max_seconds, strict=strict,
                                  skips=skips)
    position = {uid: i for i, uid in enumerate(uids)}
    planned_skips = len(skips)
    if progress is not None:
        progress.start("encode", sum(p.num_samples for p in planned) / encoder.sample_rate,
                       "s audio")
    started = time.perf_counter()
    with _scratch(directory) as scratch:
        spool = _Spool(scratch, missing)
        rows = _Rows()
        for batch in iter_encoded(encoder, utterances, layers=missing,
                                  reading=Reading(options.batch_seconds, max_seconds, strict),
                                  skips=skips,
                                  planned=distributed.shard(planned),  # this process's share
                                  memo=memo, progress=(
                                      None if progress is None else
                                      functools.partial(progress.advance, "encode"))):
            _spool_batch(batch, spool, rows, missing, position, frame_plan)
        entry.encode_seconds = time.perf_counter() - started
        collect: Callable[[str], np.ndarray] = spool.collect
        if distributed.current() is not None:  # under torchrun: gather every process's share
            rows.index, rows.counts, rows.frames, decoded = (
                [item for share in shares for item in share]
                for shares in zip(*distributed.gather(
                    (rows.index, rows.counts, rows.frames, skips.items[planned_skips:])),
                                  strict=True))
            skips.items[planned_skips:] = sorted(decoded, key=lambda item: item["path"])
            collect = functools.partial(_gather_layer, spool)
        _save_layers(entry, encoder, missing, rows, collect, skips.items)
    entry.computed_layers = missing
    if not entry.cache_hit_layers:
        entry.skipped = skips.items
    return entry
