"""Accumulation: encoded batches in, one spectral accumulator per (layer, pooling) out.

It sits beside :mod:`speechrank.extract` in the pass layer (docs/design.md, "Layers"): ``rank``,
``sweep`` and the training monitor all turn the encoder's per-layer frames into rows the same
way, through :class:`LayerAccumulators`, and turn the accumulators into tidy rows through
:func:`metric_rows`.

Poolings (each a named option, never silently mixed; :data:`speechrank.options.Pooling`):

- ``sum``: one row per utterance, the sum over its valid frames (RankMe-t of Aldeneh et al.,
  ICASSP 2025, arXiv 2409.10787);
- ``mean``: one row per utterance, the mean over its valid frames;
- ``frames``: frame vectors as rows, at most ``max_frames`` of them, spread evenly across
  utterances by :func:`frame_quotas` (water-filling) and chosen within an utterance by a
  generator seeded with ``(seed, sha256(uid))``, so the choice does not depend on batch order.

Every accumulator is a :class:`~speechrank.metrics.SpectralAccumulator` (float64 Gram matrix,
column sums, row count: exact, O(D^2) memory, merged by addition). A new pooling is a new
branch of :meth:`LayerAccumulators.update` plus its name in :data:`speechrank.options.Pooling`;
a new spectral metric needs nothing here (``metrics=`` names it).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from speechrank.errors import SpeechrankError
from speechrank.extract import EncodedBatch
from speechrank.metrics import SpectralAccumulator, compute_metrics_many
from speechrank.metrics.cluster import ClusterRows, cluster_metrics
from speechrank.metrics.convergence import PrefixAccumulators, convergence_record, row_keys
from speechrank.metrics.dominance import dominance_record
from speechrank.metrics.spectrum import single_threaded_lapack
from speechrank.options import POOLINGS, Pooling
from speechrank.results import ResultRow

__all__ = ["LayerAccumulators", "RowLabels", "attach_convergence", "attach_dominance",
           "cluster_metric_rows", "frame_quotas", "metric_rows", "uid_generator"]


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


def uid_generator(seed: int, uid: str) -> np.random.Generator:
    """A generator seeded by ``(seed, sha256(uid))``: an utterance's random choices (the
    ``frames`` pooling's frames, a probe's capped frames) depend on neither batch order nor
    which other utterances are present."""
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
            cluster metrics (``None``: keep none).
        convergence: also feed nested seeded prefixes (N/8, N/4, N/2) of every accumulator's
            rows (:mod:`speechrank.metrics.convergence`).
    """

    def __init__(self, layer_dims: dict[str, int], poolings: Sequence[Pooling], *,
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
        # a bounded, seeded store of the frames pooling's rows per layer, for
        # the cluster metrics (the Gram accumulator does not keep rows past D/2).
        self.cluster: dict[str, ClusterRows] | None = None
        if cluster_rows is not None and "frames" in self.poolings:
            self.cluster = {layer: ClusterRows(dim, cluster_rows)
                            for layer, dim in layer_dims.items()}
        # prefix bins beside each accumulator, fed with each row's seeded key.
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
                if self.prefix is not None:  # the rows with key < 1/2, by bin
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
        return np.sort(uid_generator(self.seed, uid).choice(valid, size=quota, replace=False))

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
            if self.cluster is not None or self.prefix is not None:  # the rows' seeded keys
                picked_keys = np.concatenate([row_keys(self.seed, utt.uid, index)
                                              for utt, index in zip(batch.utterances, chosen,
                                                                    strict=True)])
        utt_keys = None if self.prefix is None else np.concatenate(
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


@dataclasses.dataclass(frozen=True)
class RowLabels:
    """What every row of one measurement says besides its value: the model (or run), the
    checkpoint and step, the dataset, and the conventions shared by all its rows."""

    model: str
    checkpoint: str
    step: int | None
    dataset: str
    conventions: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def row(self, **fields: Any) -> ResultRow:
        """A :class:`ResultRow` with these labels; ``conventions`` in ``fields`` come first,
        the shared ones are added after them."""
        conventions = {**fields.pop("conventions", {}), **self.conventions}
        return ResultRow(model=self.model, checkpoint=self.checkpoint, step=self.step,
                         dataset=self.dataset, conventions=conventions, **fields)


def metric_rows(accumulators: LayerAccumulators, metrics: Sequence[str], labels: RowLabels
                ) -> list[ResultRow]:
    """Compute ``metrics`` on every accumulator (several at a time) and return tidy rows."""
    rows: list[ResultRow] = []
    keyed = list(accumulators.accumulators.items())
    computed = compute_metrics_many([acc for _, acc in keyed], metrics)
    for ((layer, pooling), acc), results in zip(keyed, computed, strict=True):
        for name, result in results.items():
            conventions = {**result.conventions, **{k: v for k, v in result.extras.items()
                                                    if isinstance(v, (int, float, str))}}
            rows.append(labels.row(layer=layer, pooling=pooling, metric=name,
                                   value=float(result.value), n_rows=acc.n_rows, dim=acc.dim,
                                   conventions=conventions))
    return rows


def attach_convergence(rows: list[ResultRow], accumulators: LayerAccumulators,
                       metrics: Sequence[str]) -> list[ResultRow]:
    """Each spectral row gains ``conventions["convergence"]``: the metric at the
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
    """``conventions["dominance"]`` on every RankMe row (first direction's share of
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


def cluster_metric_rows(accumulators: LayerAccumulators, metrics: Sequence[str],
                        labels: RowLabels, *, n_clusters: int, seed: int) -> list[ResultRow]:
    """The cluster metrics of every layer's stored ``frames`` rows as tidy rows."""
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
            rows.append(labels.row(layer=layer, pooling="frames", metric=name,
                                   value=float(result.value), n_rows=int(kept.shape[0]),
                                   dim=store.dim, conventions=conventions))
    return rows
