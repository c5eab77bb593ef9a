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
import inspect
import platform
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from speechrank import __version__
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
from speechrank.metrics.cluster import (
    CLUSTER_METRIC_NAMES,
    DEFAULT_N_CLUSTERS,
    ClusterRows,
    cluster_metrics,
)
from speechrank.metrics.convergence import PrefixAccumulators, convergence_record, row_keys
from speechrank.metrics.dominance import dominance_record
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
        cluster_rows: keep up to this many of the ``frames`` rows per layer for the
            cluster metrics (issue 14; ``None``: keep none).
        convergence: also feed nested seeded prefixes (N/8, N/4, N/2) of every accumulator's
            rows (issue 14, :mod:`speechrank.metrics.convergence`).
    """

    def __init__(self, layer_dims: dict[str, int], poolings: Sequence[str], *,
                 frame_quota: dict[str, int] | None = None, seed: int = 0,
                 cluster_rows: int | None = None, convergence: bool = False) -> None:
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
        # issue 14 hook: a bounded, seeded store of the frames pooling's rows per layer, for
        # the cluster metrics (the Gram accumulator does not keep rows past D/2).
        self.cluster: dict[str, ClusterRows] | None = None
        if cluster_rows is not None and "frames" in self.poolings:
            self.cluster = {layer: ClusterRows(dim, cluster_rows)
                            for layer, dim in layer_dims.items()}
        # issue 14 hook: prefix bins beside each accumulator, fed with each row's seeded key.
        self.prefix: dict[tuple[str, str], PrefixAccumulators] | None = None
        self._pending_keys: dict[tuple[str, str], list[np.ndarray]] = {
            key: [] for key in self._accumulators}
        if convergence:
            self.prefix = {key: PrefixAccumulators(acc.dim)
                           for key, acc in self._accumulators.items()}

    #: Rows gathered per (layer, pooling) before they are folded into the Gram matrix.
    FLUSH_ROWS = 1024

    @property
    def accumulators(self) -> dict[tuple[str, str], SpectralAccumulator]:
        """The accumulators, with every pending row folded in."""
        self.flush()
        return self._accumulators

    def _add(self, key: tuple[str, str], rows: torch.Tensor,
             keys: np.ndarray | None = None) -> None:
        self._pending[key].append(rows)
        if self.prefix is not None and keys is not None:
            self._pending_keys[key].append(keys)
        self._pending_rows[key] += rows.shape[0]
        if self._pending_rows[key] >= self.FLUSH_ROWS:
            self._flush_one(key)

    def _flush_one(self, key: tuple[str, str]) -> None:
        if self._pending[key]:
            # One BLAS thread: between forward passes OpenBLAS's worker threads spin-wait and
            # fight torch's (measured: the random:tiny updates of 300 FSDD files took 0.3-0.6 s
            # with two BLAS threads, 0.04 s with one).
            with single_threaded_lapack():
                rows = torch.cat(self._pending[key], dim=0)
                self._accumulators[key].update(rows)
                if self.prefix is not None:  # issue 14: the rows with key < 1/2, by bin
                    self.prefix[key].update(rows, np.concatenate(self._pending_keys[key]))
            self._pending[key] = []
            self._pending_keys[key] = []
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
        picked_keys: np.ndarray | None = None
        if "frames" in self.poolings:
            # One flat index of the chosen frames, (utterance b, frame t) -> b * width + t,
            # shared by every layer.
            chosen = [self._frame_index(utt.uid, int(lengths[b]))
                      for b, utt in enumerate(batch.utterances)]
            picked = torch.cat([torch.from_numpy(index + b * width)
                                for b, index in enumerate(chosen)]).to(device)
            if self.cluster is not None or self.prefix is not None:  # issue 14: row keys
                picked_keys = np.concatenate([row_keys(self.seed, utt.uid, index)
                                              for utt, index in zip(batch.utterances, chosen,
                                                                    strict=True)])
        utt_keys = None if self.prefix is None else np.concatenate(  # issue 14
            [row_keys(self.seed, utt.uid) for utt in batch.utterances])
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
                    self._add((layer, "sum"), summed, utt_keys)
                if "mean" in self.poolings:
                    counts = lengths_d.to(summed.dtype)[:, None]
                    self._add((layer, "mean"), summed / counts, utt_keys)
            if picked is not None:
                flat = frames.reshape(-1, frames.shape[-1])
                frame_rows = flat.index_select(0, picked)
                self._add((layer, "frames"), frame_rows, picked_keys)
                if self.cluster is not None and picked_keys is not None:
                    self.cluster[layer].update(frame_rows, picked_keys)

    def merge(self, other: LayerAccumulators) -> LayerAccumulators:
        for key, acc in self.accumulators.items():
            acc.merge(other.accumulators[key])
        if self.prefix is not None and other.prefix is not None:
            for key, prefix in self.prefix.items():
                prefix.merge(other.prefix[key])
        if self.cluster is not None and other.cluster is not None:
            for layer, store in self.cluster.items():
                store.merge(other.cluster[layer])
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


def attach_convergence(rows: list[ResultRow], accumulators: LayerAccumulators,
                       metrics: Sequence[str]) -> list[ResultRow]:
    """issue 14: each spectral row gains ``conventions["convergence"]``: the metric at the
    nested seeded prefixes N/8, N/4, N/2 and at N (see :func:`convergence_record`)."""
    if accumulators.prefix is None or not rows:
        return rows
    accumulators.flush()
    keys = list(accumulators.prefix)
    prefixes = [accumulators.prefix[key].prefixes() for key in keys]
    flat = [acc for group in prefixes for acc in group]
    nonempty = [acc for acc in flat if acc.n_rows > 0]
    done = iter(compute_metrics_many(nonempty, metrics))
    computed = [next(done) if acc.n_rows > 0 else {} for acc in flat]
    per_key: dict[tuple[str, str], tuple[list[int], list[dict[str, Any]]]] = {}
    for i, key in enumerate(keys):
        group = prefixes[i]
        per_key[key] = ([acc.n_rows for acc in group], computed[3 * i: 3 * i + 3])
    out = []
    for row in rows:
        found = per_key.get((row.layer, row.pooling))
        if found is None:
            out.append(row)
            continue
        n_rows, results = found
        values = [r[row.metric].value if row.metric in r else float("nan")
                  for r in results]
        record = convergence_record([*values, row.value], [*n_rows, row.n_rows])
        out.append(dataclasses.replace(row, conventions={**row.conventions,
                                                         "convergence": record}))
    return out


def attach_dominance(rows: list[ResultRow], accumulators: LayerAccumulators
                     ) -> tuple[list[ResultRow], dict[str, dict[str, Any]]]:
    """issue 14: ``conventions["dominance"]`` on every RankMe row (first direction's share of
    the raw spectrum, the mean's share of the rows' norm, flagged past 0.9), and the same per
    layer and pooling for the JSON's top level."""
    table: dict[str, dict[str, Any]] = {}
    for (layer, pooling), acc in accumulators.accumulators.items():
        table.setdefault(layer, {})[pooling] = dominance_record(acc)
    out = [dataclasses.replace(row, conventions={**row.conventions,
                                                 "dominance": table[row.layer][row.pooling]})
           if row.metric == "rankme" and row.layer in table and row.pooling in table[row.layer]
           else row for row in rows]
    return out, table


def cluster_metric_rows(accumulators: LayerAccumulators, metrics: Sequence[str], *,
                        n_clusters: int, seed: int, model: str, checkpoint: str,
                        step: int | None, dataset: str,
                        extra_conventions: dict[str, Any] | None = None) -> list[ResultRow]:
    """issue 14: the cluster metrics of every layer's stored ``frames`` rows as tidy rows."""
    rows: list[ResultRow] = []
    if accumulators.cluster is None or not metrics:
        return rows
    stores = list(accumulators.cluster.items())

    def one(item: tuple[str, ClusterRows]) -> dict[str, Any]:
        return cluster_metrics(item[1].rows(), metrics, n_clusters=n_clusters, seed=seed,
                               threads=None)

    # One layer per thread, each fit on one OpenMP/BLAS thread (scikit-learn releases the
    # GIL); the limit is process-wide, so it is set once around the pool.
    from threadpoolctl import threadpool_limits

    workers = max(1, min(torch.get_num_threads(), len(stores)))
    with threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=workers) as pool:
        computed = list(pool.map(one, stores))
    for (layer, store), results in zip(stores, computed, strict=True):
        kept = store.rows()
        for name, result in results.items():
            conventions = {**result.conventions, **{k: v for k, v in result.extras.items()
                                                    if isinstance(v, (int, float, str))},
                           "rows_seen": store.seen,
                           "row_selection": "the frames pooling's rows; past the cap, the "
                                            "rows with the smallest (seed, uid, frame) keys"}
            conventions.update(extra_conventions or {})
            rows.append(ResultRow(
                model=model, checkpoint=checkpoint, step=step, dataset=dataset, layer=layer,
                pooling="frames", metric=name, value=float(result.value),
                n_rows=int(kept.shape[0]), dim=store.dim, conventions=conventions))
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
             max_frames: int | None = DEFAULT_MAX_FRAMES,
             batch_seconds: float = DEFAULT_BATCH_SECONDS,
             max_seconds: float | None = None,
             device: str = "cpu", seed: int = 0, strict: bool = False,
             checkpoint: str | None = None, step: int | None = None,
             n_clusters: int = DEFAULT_N_CLUSTERS, convergence: bool = True,
             cluster_max_rows: int | None = None, total_seconds: float | None = None,
             protocol: str | None = None,
             on_plan: Callable[[float], Any] | None = None,
             progress: Callable[[float], Any] | None = None) -> RankResult:
    """Label-free metrics for every requested layer and pooling in one encoder pass.

    Args:
        model: an encoder, or a MODEL spec for :func:`speechrank.encoders.load_encoder`.
        data: a dataset, or a DATA spec for :func:`speechrank.audio.load_dataset`.
        layers: layer names or a spec such as ``"0,3-6"`` (default: every numbered layer).
        poolings: any of ``sum``, ``mean``, ``frames`` (default: all three).
        metrics: spectral metric names (default: all of them), and opt-in the cluster
            metrics ``kmeans_inertia`` and ``davies_bouldin`` (of the ``frames`` rows).
        num_utterances: seeded random subset size (``None`` = all).
        max_frames: row cap for the ``frames`` pooling (``None``: every valid frame).
        batch_seconds: most padded audio per batch.
        max_seconds: crop every file to its first ``max_seconds``.
        device: ``cpu`` or ``cuda`` (bf16 autocast on CUDA).
        seed: seeds the subset and the frame choice; same seed, same numbers.
        strict: fail on the first unusable file instead of skipping it.
        checkpoint, step: recorded in every row (defaults: the model spec, no step).
        n_clusters: k of the cluster metrics (lowered, and recorded, when rows are few).
        convergence: give every spectral row its values at nested seeded prefixes N/8, N/4,
            N/2 (``conventions["convergence"]``; marked not converged past 2 %).
        cluster_max_rows: most frames the cluster metrics see per layer (default
            ``max_frames``); past it, a seeded uniform sample.
        total_seconds: keep a seeded random draw of whole utterances until this much audio
            (after ``max_seconds`` crops) is reached ("one hour of audio").
        protocol: a preset of :mod:`speechrank.protocols` (``aldeneh2025``,
            ``whetten2025``); it fills every option left at its default here, explicit ones
            win, and both are recorded (``info["protocol"]``, ``conventions["protocol"]``).
        on_plan: called once with the total audio seconds to process (for progress bars).
        progress: called with the audio seconds of each finished batch.
    """
    started = time.perf_counter()
    protocol_record = None
    if protocol is not None:  # issue 14 hook: a named protocol fills defaulted options
        from speechrank.protocols import resolve

        given = {"layers": layers, "poolings": poolings, "metrics": metrics,
                 "num_utterances": num_utterances, "max_frames": max_frames,
                 "n_clusters": n_clusters, "cluster_max_rows": cluster_max_rows,
                 "total_seconds": total_seconds}
        defaults = {k: p.default for k, p in inspect.signature(run_rank).parameters.items()}
        options, protocol_record = resolve(
            protocol, {k: v for k, v in given.items() if v != defaults[k]})
        layers, poolings, metrics = options["layers"], options["poolings"], options["metrics"]
        num_utterances, max_frames = options["num_utterances"], options.get("max_frames",
                                                                            max_frames)
        n_clusters = options.get("n_clusters", n_clusters)
        cluster_max_rows = options.get("cluster_max_rows", cluster_max_rows)
        total_seconds = options.get("total_seconds", total_seconds)
    if num_utterances is not None and num_utterances < 1:
        raise SpeechrankError("--num-utterances must be at least 1")
    if total_seconds is not None and total_seconds <= 0:
        raise SpeechrankError("--total-seconds must be positive")
    if max_frames is not None and max_frames < 1:
        raise SpeechrankError("--max-frames must be at least 1")
    encoder = load_encoder(model, device=device) if isinstance(model, str) else model
    dataset = load_dataset(data) if isinstance(data, str) else data
    chosen_layers = parse_layers(layers, encoder.layer_names)
    chosen_poolings = parse_choices(poolings, POOLINGS, "pooling", DEFAULT_POOLINGS)
    chosen_metrics = parse_choices(metrics, SPECTRAL_METRIC_NAMES + CLUSTER_METRIC_NAMES,
                                   "metric", SPECTRAL_METRIC_NAMES)
    # issue 14: cluster metrics run on the frames pooling's rows, not on a Gram accumulator.
    chosen_cluster = [m for m in chosen_metrics if m in CLUSTER_METRIC_NAMES]
    chosen_spectral = [m for m in chosen_metrics if m not in CLUSTER_METRIC_NAMES]
    if chosen_cluster and "frames" not in chosen_poolings:
        raise SpeechrankError(f"{', '.join(chosen_cluster)} cluster(s) the frames pooling's "
                              "rows; add frames to --pooling")
    if n_clusters < 2:
        raise SpeechrankError("--n-clusters must be at least 2")
    total_files = len(dataset)
    if num_utterances is not None and num_utterances < total_files:
        dataset = subset(dataset, num_utterances, seed=seed)

    skips = SkipLog()
    planned: list[PlannedUtterance] = plan_utterances(
        encoder, dataset.utterances, max_seconds=max_seconds, strict=strict, skips=skips)
    if not planned:
        raise SpeechrankError(f"no usable audio in {dataset.spec} ({skips.summary()})")
    if total_seconds is not None:  # issue 14: a seeded draw of whole utterances
        order = np.random.default_rng(seed).permutation(len(planned))
        budget, kept = total_seconds * encoder.sample_rate, []
        for i in order:
            if budget <= 0:
                break
            kept.append(int(i))
            budget -= planned[i].num_samples
        planned = [planned[i] for i in sorted(kept)]
    frame_cap = sum(p.num_frames for p in planned) if max_frames is None else max_frames
    quotas = frame_quotas([p.num_frames for p in planned], frame_cap)
    frame_quota = {p.utterance.uid: q for p, q in zip(planned, quotas, strict=True)}
    layer_dims = {name: encoder.layer_dims[name] if hasattr(encoder, "layer_dims")
                  else encoder.dim for name in chosen_layers}
    accumulators = LayerAccumulators(layer_dims, chosen_poolings, frame_quota=frame_quota,
                                     seed=seed,
                                     cluster_rows=(cluster_max_rows or frame_cap)
                                     if chosen_cluster else None,
                                     convergence=convergence)
    if on_plan is not None:
        on_plan(sum(p.num_samples for p in planned) / encoder.sample_rate)

    audio_seconds = 0.0
    encode_started = time.perf_counter()
    for batch in iter_encoded(encoder, dataset.utterances, layers=chosen_layers,
                              batch_seconds=batch_seconds, max_seconds=max_seconds,
                              strict=strict, skips=skips, planned=planned,
                              to_cpu=encoder.device.type == "cpu", progress=progress):
        accumulators.update(batch)
        audio_seconds += batch.audio_seconds / encoder.sample_rate
    encode_seconds = time.perf_counter() - encode_started
    if accumulators.utterances == 0:
        raise SpeechrankError(f"no usable audio in {dataset.spec} ({skips.summary()})")

    model_name = encoder.name
    conventions = {"seed": seed, "max_frames": max_frames, "max_seconds": max_seconds,
                   "num_utterances": accumulators.utterances}
    if total_seconds is not None:
        conventions["total_seconds"] = total_seconds
    if protocol_record is not None:
        conventions["protocol"] = protocol_record["name"]
    rows = metric_rows(accumulators, chosen_spectral, model=model_name,
                       checkpoint=checkpoint or model_name, step=step, dataset=dataset.spec,
                       extra_conventions=conventions) if chosen_spectral else []
    rows = attach_convergence(rows, accumulators, chosen_spectral)  # issue 14
    rows, dominance = attach_dominance(rows, accumulators)  # issue 14
    cluster_started = time.perf_counter()
    rows += cluster_metric_rows(accumulators, chosen_cluster, n_clusters=n_clusters, seed=seed,
                                model=model_name, checkpoint=checkpoint or model_name,
                                step=step, dataset=dataset.spec, extra_conventions=conventions)
    cluster_seconds = time.perf_counter() - cluster_started
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
                        "convergence": "values at nested prefixes of keys < 1/8, 1/4, 1/2; "
                                       "not converged when the last doubling moved the value "
                                       "by more than 2 %" if convergence else None,
                        "layer_numbering": "0 = input of the first transformer layer "
                                           "(Hugging Face hidden_states[0])"},
        "versions": _versions(),
        "device": str(encoder.device),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "encode_seconds": round(encode_seconds, 3),
        "cluster_seconds": round(cluster_seconds, 3),
        "dominance": dominance,  # issue 14: per layer, per pooling
        "protocol": protocol_record,
    }
    return RankResult(rows=rows, info=info, accumulators=accumulators)
