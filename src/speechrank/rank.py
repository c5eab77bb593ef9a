"""``speechrank rank``: label-free metrics of every layer in one pass over real audio.

RankMe-t (Aldeneh et al., ICASSP 2025, arXiv 2409.10787) is RankMe (Garrido et al., ICML 2023)
of the matrix whose rows are the per-utterance *time sums* of a layer's valid frames. This
module feeds one :class:`~speechrank.metrics.SpectralAccumulator` per (layer, pooling) from a
single pass of the encoder and turns each into the tidy rows of DESIGN.md section 2.

Poolings (each a named option, never silently mixed):

- ``sum``: one row per utterance, the sum over its valid frames (the paper's RankMe-t);
- ``mean``: one row per utterance, the mean over its valid frames (equal to ``sum`` up to a
  per-row scale, so the value differs from ``sum`` unless every utterance has the same length);
- ``frames``: frame vectors as rows, at most ``max_frames`` of them, spread evenly across
  utterances (water-filling: every utterance gives the same number of frames unless it has
  fewer) and chosen within an utterance by a generator seeded with ``(seed, uid)``, so the
  choice does not depend on batch order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from speechrank import __version__, distributed
from speechrank.audio.datasets import load_dataset
from speechrank.audio.io import AUDIO_CONVENTIONS
from speechrank.audio.splits import subset
from speechrank.audio.utterance import Dataset
from speechrank.encoders import load_encoder
from speechrank.encoders.base import SpeechEncoder
from speechrank.errors import SpeechrankError
from speechrank.extract import (
    DEFAULT_BATCH_SECONDS,
    EncodedBatch,
    PlannedUtterance,
    SkipLog,
    iter_encoded,
    plan_utterances,
)
from speechrank.metrics import SPECTRAL_METRIC_NAMES, SpectralAccumulator, compute_metrics_many
from speechrank.metrics.spectrum import single_threaded_lapack
from speechrank.results import ResultRow

POOLINGS: tuple[str, ...] = ("sum", "mean", "frames")
DEFAULT_POOLINGS: tuple[str, ...] = ("sum", "mean", "frames")
#: The RankMe paper's sample count (Garrido et al. 2023) as the default frame cap.
DEFAULT_MAX_FRAMES = 25_600
#: The speech paper's utterance count (Aldeneh et al. 2025).
DEFAULT_NUM_UTTERANCES = 10_000


def parse_layers(spec: str | Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Turn ``"all"``, ``"0,3,6"``, ``"0-4"``, ``"cnn,12"`` or a list into layer names.

    ``None`` and ``"all"`` mean every numbered layer (``cnn`` only when asked for by name).
    """
    numbered = [name for name in available if name != "cnn"]
    if spec is None:
        return numbered
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    chosen: list[str] = []
    for raw in (str(item).strip() for item in items):
        if not raw:
            continue
        if raw == "all":
            names = numbered
        elif raw == "cnn" or raw in available:
            names = [raw]
        elif "-" in raw.lstrip("-") and raw[0] != "-":
            lo, hi = raw.split("-", 1)
            try:
                names = [str(i) for i in range(int(lo), int(hi) + 1)]
            except ValueError as err:
                raise SpeechrankError(f"bad layer range '{raw}'") from err
        else:
            try:
                index = int(raw)
            except ValueError as err:
                raise SpeechrankError(
                    f"unknown layer '{raw}'; this encoder has {', '.join(available)}") from err
            names = [str(index if index >= 0 else len(numbered) + index)]
        for name in names:
            if name not in available:
                raise SpeechrankError(
                    f"unknown layer '{name}'; this encoder has {', '.join(available)}")
            if name not in chosen:
                chosen.append(name)
    if not chosen:
        raise SpeechrankError("no layers selected")
    return chosen


def parse_choices(spec: str | Sequence[str] | None, allowed: Sequence[str], what: str,
                  default: Sequence[str]) -> list[str]:
    """Split a comma list and check every item is one of ``allowed``."""
    if spec is None:
        return list(default)
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    items = [s for s in items if s]
    if items == ["all"]:
        return list(allowed)
    for item in items:
        if item not in allowed:
            raise SpeechrankError(f"unknown {what} '{item}'; choose from {', '.join(allowed)}")
    if not items:
        raise SpeechrankError(f"no {what} given")
    return list(dict.fromkeys(items))


def frame_quotas(frame_counts: Sequence[int], max_frames: int) -> list[int]:
    """Split ``max_frames`` across utterances as evenly as their lengths allow.

    Water-filling: find the largest per-utterance cap ``c`` with ``sum(min(n_i, c)) <=
    max_frames``, then hand the few leftover frames to the longest utterances that still have
    frames to give (ties by position). The result sums to ``min(max_frames, sum(n_i))``.
    """
    counts = np.asarray(frame_counts, dtype=np.int64)
    if counts.size == 0:
        return []
    if counts.sum() <= max_frames:
        return counts.tolist()
    lo, hi = 0, int(counts.max())
    while lo < hi:  # largest c with sum(min(n, c)) <= max_frames
        mid = (lo + hi + 1) // 2
        if np.minimum(counts, mid).sum() <= max_frames:
            lo = mid
        else:
            hi = mid - 1
    quotas = np.minimum(counts, lo)
    leftover = int(max_frames - quotas.sum())
    can_give = np.flatnonzero(counts > quotas)
    order = can_give[np.argsort(-counts[can_give], kind="stable")]
    quotas[order[:leftover]] += 1
    return quotas.tolist()


def _uid_seed(seed: int, uid: str) -> np.random.Generator:
    digest = hashlib.sha256(uid.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


class LayerAccumulators:
    """One :class:`SpectralAccumulator` per (layer, pooling), fed from encoded batches.

    Args:
        layer_dims: width of each layer to accumulate.
        poolings: any of ``sum``, ``mean``, ``frames``.
        frame_quota: frames per utterance uid for ``frames`` pooling (see :func:`frame_quotas`);
            utterances missing from it give all their frames.
        seed: seeds the per-utterance frame choice.
    """

    def __init__(self, layer_dims: dict[str, int], poolings: Sequence[str], *,
                 frame_quota: dict[str, int] | None = None, seed: int = 0) -> None:
        for pooling in poolings:
            if pooling not in POOLINGS:
                raise SpeechrankError(f"unknown pooling '{pooling}'")
        self.poolings = list(poolings)
        self.frame_quota = frame_quota or {}
        self.seed = seed
        self._accumulators: dict[tuple[str, str], SpectralAccumulator] = {
            (layer, pooling): SpectralAccumulator(dim)
            for layer, dim in layer_dims.items() for pooling in self.poolings
        }
        # Rows wait here until FLUSH_ROWS of them have gathered: each accumulator update costs
        # O(D^2) whatever the row count, so feeding one utterance's row at a time (batches of
        # equal-length audio are often single utterances) would cost more than the forward.
        self._pending: dict[tuple[str, str], list[torch.Tensor]] = {
            key: [] for key in self._accumulators}
        self._pending_rows: dict[tuple[str, str], int] = dict.fromkeys(self._accumulators, 0)
        self.utterances = 0

    #: Rows gathered per (layer, pooling) before they are folded into the Gram matrix.
    FLUSH_ROWS = 1024

    @property
    def accumulators(self) -> dict[tuple[str, str], SpectralAccumulator]:
        """The accumulators, with every pending row folded in."""
        self.flush()
        return self._accumulators

    def _add(self, key: tuple[str, str], rows: torch.Tensor) -> None:
        self._pending[key].append(rows)
        self._pending_rows[key] += rows.shape[0]
        if self._pending_rows[key] >= self.FLUSH_ROWS:
            self._flush_one(key)

    def _flush_one(self, key: tuple[str, str]) -> None:
        if self._pending[key]:
            # One BLAS thread: between forward passes OpenBLAS's worker threads spin-wait and
            # fight torch's (measured: the random:tiny updates of 300 FSDD files took 0.3-0.6 s
            # with two BLAS threads, 0.04 s with one).
            with single_threaded_lapack():
                self._accumulators[key].update(torch.cat(self._pending[key], dim=0))
            self._pending[key] = []
            self._pending_rows[key] = 0

    def flush(self) -> None:
        """Fold every pending row into its accumulator."""
        for key in self._pending:
            self._flush_one(key)

    def _frame_index(self, uid: str, valid: int) -> np.ndarray:
        quota = min(self.frame_quota.get(uid, valid), valid)
        if quota >= valid:
            return np.arange(valid)
        return np.sort(_uid_seed(self.seed, uid).choice(valid, size=quota, replace=False))

    def update(self, batch: EncodedBatch) -> None:
        """Feed every (layer, pooling) accumulator from one batch; padded frames never count."""
        lengths = batch.output.lengths
        self.utterances += len(batch.utterances)
        layers = list(dict.fromkeys(layer for layer, _ in self._accumulators))
        if not layers:
            return
        first = batch.output.layers[layers[0]]
        width, device = first.shape[1], first.device
        lengths_d = lengths.to(device)
        padded = bool((lengths_d < width).any())
        if padded:
            # Flat indices (b * width + t) of the valid frames and the utterance of each: the
            # time sums gather only these rows, so whatever sits in padded frames, even NaN,
            # never counts (and gathering is faster than masking the padded batch).
            mask = torch.arange(width, device=device)[None, :] < lengths_d[:, None]
            valid_index = torch.nonzero(mask.reshape(-1)).flatten()
            owner = valid_index // width
        picked: torch.Tensor | None = None
        if "frames" in self.poolings:
            # One flat index of the chosen frames, (utterance b, frame t) -> b * width + t,
            # shared by every layer.
            picked = torch.cat([
                torch.from_numpy(self._frame_index(utt.uid, int(lengths[b])) + b * width)
                for b, utt in enumerate(batch.utterances)
            ]).to(device)
        for layer in layers:
            frames = batch.output.layers[layer]
            if frames.shape[1] != width:
                raise SpeechrankError(
                    f"layer {layer} has {frames.shape[1]} frames where layer {layers[0]} has "
                    f"{width}; every layer of one batch must share the frame axis")
            if "sum" in self.poolings or "mean" in self.poolings:
                # float64 sums keep a long utterance's precision.
                if padded:
                    rows = frames.reshape(-1, frames.shape[-1]).index_select(0, valid_index)
                    summed = torch.zeros(frames.shape[0], frames.shape[-1], dtype=torch.float64,
                                         device=device).index_add_(0, owner, rows.double())
                else:
                    summed = frames.sum(dim=1, dtype=torch.float64)
                if "sum" in self.poolings:
                    self._add((layer, "sum"), summed)
                if "mean" in self.poolings:
                    counts = lengths_d.to(summed.dtype)[:, None]
                    self._add((layer, "mean"), summed / counts)
            if picked is not None:
                flat = frames.reshape(-1, frames.shape[-1])
                self._add((layer, "frames"), flat.index_select(0, picked))

    def merge(self, other: LayerAccumulators) -> LayerAccumulators:
        for key, acc in self.accumulators.items():
            acc.merge(other.accumulators[key])
        self.utterances += other.utterances
        return self


@dataclasses.dataclass
class RankResult:
    """What ``rank`` measured: tidy rows plus everything the JSON output records."""

    rows: list[ResultRow]
    info: dict[str, Any]
    accumulators: LayerAccumulators

    def to_json(self) -> dict[str, Any]:
        return {**self.info, "results": [row.to_dict() for row in self.rows]}


def metric_rows(accumulators: LayerAccumulators, metrics: Sequence[str], *, model: str,
                checkpoint: str, step: int | None, dataset: str,
                extra_conventions: dict[str, Any] | None = None) -> list[ResultRow]:
    """Compute ``metrics`` on every accumulator (several at a time) and return tidy rows."""
    rows: list[ResultRow] = []
    keyed = list(accumulators.accumulators.items())
    computed = compute_metrics_many([acc for _, acc in keyed], metrics)
    for ((layer, pooling), acc), results in zip(keyed, computed, strict=True):
        for name, result in results.items():
            conventions = {**result.conventions, **{k: v for k, v in result.extras.items()
                                                    if isinstance(v, (int, float, str))}}
            conventions.update(extra_conventions or {})
            rows.append(ResultRow(
                model=model, checkpoint=checkpoint, step=step, dataset=dataset, layer=layer,
                pooling=pooling, metric=name, value=float(result.value), n_rows=acc.n_rows,
                dim=acc.dim, conventions=conventions,
            ))
    return rows


def _versions() -> dict[str, str]:
    import scipy
    import transformers

    return {"speechrank": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "transformers": transformers.__version__}


def run_rank(model: str | SpeechEncoder, data: str | Dataset, *,
             layers: str | Sequence[str] | None = None,
             poolings: str | Sequence[str] | None = None,
             metrics: str | Sequence[str] | None = None,
             num_utterances: int | None = DEFAULT_NUM_UTTERANCES,
             max_frames: int = DEFAULT_MAX_FRAMES,
             batch_seconds: float = DEFAULT_BATCH_SECONDS,
             max_seconds: float | None = None,
             device: str = "cpu", seed: int = 0, strict: bool = False,
             checkpoint: str | None = None, step: int | None = None,
             on_plan: Callable[[float], Any] | None = None,
             progress: Callable[[float], Any] | None = None) -> RankResult:
    """Label-free metrics for every requested layer and pooling in one encoder pass.

    Args:
        model: an encoder, or a MODEL spec for :func:`speechrank.encoders.load_encoder`.
        data: a dataset, or a DATA spec for :func:`speechrank.audio.load_dataset`.
        layers: layer names or a spec such as ``"0,3-6"`` (default: every numbered layer).
        poolings: any of ``sum``, ``mean``, ``frames`` (default: all three).
        metrics: spectral metric names (default: all of them).
        num_utterances: seeded random subset size (``None`` = all).
        max_frames: row cap for the ``frames`` pooling.
        batch_seconds: most padded audio per batch.
        max_seconds: crop every file to its first ``max_seconds``.
        device: ``cpu`` or ``cuda`` (bf16 autocast on CUDA).
        seed: seeds the subset and the frame choice; same seed, same numbers.
        strict: fail on the first unusable file instead of skipping it.
        checkpoint, step: recorded in every row (defaults: the model spec, no step).
        on_plan: called once with the total audio seconds to process (for progress bars).
        progress: called with the audio seconds of each finished batch.
    """
    started = time.perf_counter()
    if num_utterances is not None and num_utterances < 1:
        raise SpeechrankError("--num-utterances must be at least 1")
    if max_frames < 1:
        raise SpeechrankError("--max-frames must be at least 1")
    encoder = load_encoder(model, device=device) if isinstance(model, str) else model
    dataset = load_dataset(data) if isinstance(data, str) else data
    chosen_layers = parse_layers(layers, encoder.layer_names)
    chosen_poolings = parse_choices(poolings, POOLINGS, "pooling", DEFAULT_POOLINGS)
    chosen_metrics = parse_choices(metrics, SPECTRAL_METRIC_NAMES, "metric",
                                   SPECTRAL_METRIC_NAMES)
    total_files = len(dataset)
    if num_utterances is not None and num_utterances < total_files:
        dataset = subset(dataset, num_utterances, seed=seed)

    skips = SkipLog()
    planned: list[PlannedUtterance] = plan_utterances(
        encoder, dataset.utterances, max_seconds=max_seconds, strict=strict, skips=skips)
    if not planned:
        raise SpeechrankError(f"no usable audio in {dataset.spec} ({skips.summary()})")
    quotas = frame_quotas([p.num_frames for p in planned], max_frames)
    frame_quota = {p.utterance.uid: q for p, q in zip(planned, quotas, strict=True)}
    layer_dims = {name: encoder.layer_dims[name] if hasattr(encoder, "layer_dims")
                  else encoder.dim for name in chosen_layers}
    accumulators = LayerAccumulators(layer_dims, chosen_poolings, frame_quota=frame_quota,
                                     seed=seed)
    if on_plan is not None:
        on_plan(sum(p.num_samples for p in planned) / encoder.sample_rate)

    audio_seconds = 0.0
    encode_started = time.perf_counter()
    job = distributed.current()  # issue 12 hook: under torchrun, encode this process's share
    planned_skips = len(skips)
    for batch in iter_encoded(encoder, dataset.utterances, layers=chosen_layers,
                              batch_seconds=batch_seconds, max_seconds=max_seconds,
                              strict=strict, skips=skips, planned=distributed.shard(planned),
                              to_cpu=encoder.device.type == "cpu", progress=progress):
        accumulators.update(batch)
        audio_seconds += batch.audio_seconds / encoder.sample_rate
    encode_seconds = time.perf_counter() - encode_started
    if job is not None:  # issue 12 hook: sum the Gram states, counts and decode-time skips
        distributed.reduce_accumulators(accumulators.accumulators)
        accumulators.utterances, audio_seconds = distributed.sum_values(
            [accumulators.utterances, audio_seconds])
        accumulators.utterances = int(accumulators.utterances)
        decoded_skips = [item for share in distributed.gather(skips.items[planned_skips:])
                         for item in share]
        skips.items[planned_skips:] = sorted(decoded_skips, key=lambda item: item["path"])
    if accumulators.utterances == 0:
        raise SpeechrankError(f"no usable audio in {dataset.spec} ({skips.summary()})")

    model_name = encoder.name
    conventions = {"seed": seed, "max_frames": max_frames, "max_seconds": max_seconds,
                   "num_utterances": accumulators.utterances}
    rows = metric_rows(accumulators, chosen_metrics, model=model_name,
                       checkpoint=checkpoint or model_name, step=step, dataset=dataset.spec,
                       extra_conventions=conventions)
    info = {
        "command": "rank",
        "model": model_name,
        "encoder": encoder.describe(),
        "data": {"spec": dataset.spec, "format": dataset.format, "root": dataset.root,
                 "files_found": total_files, "files_selected": len(dataset),
                 "info": dataset.info},
        "counts": {"utterances_used": accumulators.utterances, "skipped": len(skips),
                   "skipped_by_reason": skips.counts, "audio_seconds": round(audio_seconds, 3)},
        "skipped": skips.items,
        "layers": chosen_layers,
        "poolings": chosen_poolings,
        "metrics": chosen_metrics,
        "conventions": {"audio": AUDIO_CONVENTIONS, "seed": seed, "max_frames": max_frames,
                        "frame_sampling": "water-filling quota per utterance, frames chosen "
                                          "by a generator seeded with (seed, sha256(uid))",
                        "max_seconds": max_seconds, "batch_seconds": batch_seconds,
                        "num_utterances": num_utterances,
                        "layer_numbering": "0 = input of the first transformer layer "
                                           "(Hugging Face hidden_states[0])"},
        "versions": _versions(),
        "device": str(encoder.device),
        "distributed": job.describe() if job is not None else dict(distributed.SINGLE_PROCESS),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "encode_seconds": round(encode_seconds, 3),
    }
    return RankResult(rows=rows, info=info, accumulators=accumulators)
