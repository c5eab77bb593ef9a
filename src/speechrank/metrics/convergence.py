"""Sample-size convergence of spectral metrics in the same pass: nested seeded prefixes.

RankMe and every spectral metric grow (or shrink) with the number of rows N, so a value means
little unless N is large enough for it to have settled. req-metrics (Kanatas et al., 2026)
checks this by recomputing a metric on data fractions 1/8 .. 1; a streaming tool can get the
same curve for free in one pass:

- every row gets a uniform key in [0, 1) from ``(seed, uid, frame index)`` alone
  (:func:`row_keys`), so which rows fall below a threshold does not depend on batching, batch
  order, shards or processes;
- besides the full accumulator, three *disjoint* bin accumulators take the rows with keys in
  [0, 1/8), [1/8, 1/4) and [1/4, 1/2) (:class:`PrefixAccumulators`). Their cumulative sums
  are the nested prefixes "key < 1/8", "key < 1/4", "key < 1/2": about N/8, N/4 and N/2 rows
  (the exact counts are Binomial and recorded). The bins see half the rows in all, so the
  extra Gram-update work is at most 1/2 of the full accumulator's, less than the 7/8 that
  three nested accumulators would cost;
- :func:`convergence_record` turns the metric at the four sizes into a record: a value whose
  last doubling (N/2 to N) changed it by more than :data:`DEFAULT_TOLERANCE` (2 %, the
  threshold req-metrics uses) relative to the full value is *not converged*.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from speechrank.metrics.accumulator import SpectralAccumulator

#: Upper key bounds of the prefixes below the full set (N/8, N/4, N/2).
PREFIX_FRACTIONS: tuple[float, ...] = (0.125, 0.25, 0.5)
#: Largest relative change over the last doubling that still counts as converged.
DEFAULT_TOLERANCE = 0.02

_MASK64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele et al., 2014) on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def row_keys(seed: int, uid: str, index: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Uniform keys in [0, 1) for rows of utterance ``uid`` (frame ``index``, or one row).

    A pure function of ``(seed, uid, index)``: sha256 of the seed and uid gives a 64-bit base,
    splitmix64 of base + index gives the key's 53 mantissa bits.
    """
    digest = hashlib.sha256(f"{int(seed)}\x00{uid}".encode()).digest()
    base = np.uint64(int.from_bytes(digest[:8], "little") & _MASK64)
    idx = np.zeros(1, dtype=np.uint64) if index is None else np.asarray(index, dtype=np.uint64)
    with np.errstate(over="ignore"):
        mixed = _splitmix64(base + idx * np.uint64(0xD1B54A32D192ED03))
    return (mixed >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class PrefixAccumulators:
    """Three disjoint bins of the rows with key < 1/2; their cumulative sums are the prefixes.

    Args:
        dim: row width.
    """

    #: Rows gathered per bin before they are folded in (each update costs O(D^2) whatever
    #: its row count, and a bin gets only 1/8 - 1/4 of every chunk).
    FLUSH_ROWS = 1024

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)
        self.bins = [SpectralAccumulator(self.dim) for _ in PREFIX_FRACTIONS]
        self._edges = np.asarray((0.0, *PREFIX_FRACTIONS))
        self._pending: list[list[Any]] = [[] for _ in PREFIX_FRACTIONS]
        self._pending_rows = [0 for _ in PREFIX_FRACTIONS]

    def _flush(self, b: int) -> None:
        if self._pending[b]:
            parts = self._pending[b]
            rows = (torch.cat(parts) if isinstance(parts[0], torch.Tensor)
                    else np.concatenate(parts))
            self.bins[b].update(rows)
            self._pending[b], self._pending_rows[b] = [], 0

    def flush(self) -> None:
        """Fold every pending row into its bin."""
        for b in range(len(self.bins)):
            self._flush(b)

    def bin_index(self, keys: np.ndarray) -> np.ndarray:
        """Bin of each key (0, 1, 2), or -1 for keys >= 1/2 (the full accumulator only)."""
        keys = np.asarray(keys, dtype=np.float64)
        out = np.searchsorted(self._edges, keys, side="right") - 1
        out[keys >= PREFIX_FRACTIONS[-1]] = -1
        return out

    def update(self, rows: Any, keys: np.ndarray) -> None:
        """Route each of ``rows`` (N, D) to its key's bin; keys >= 1/2 are not kept here."""
        which = self.bin_index(keys)
        for b in range(len(self.bins)):
            picked = np.flatnonzero(which == b)
            if picked.size:
                index = (torch.from_numpy(picked).to(rows.device)
                         if isinstance(rows, torch.Tensor) else picked)
                self._pending[b].append(rows[index])
                self._pending_rows[b] += picked.size
                if self._pending_rows[b] >= self.FLUSH_ROWS:
                    self._flush(b)

    def merge(self, other: PrefixAccumulators) -> PrefixAccumulators:
        self.flush()
        other.flush()
        for mine, theirs in zip(self.bins, other.bins, strict=True):
            mine.merge(theirs)
        return self

    def prefixes(self) -> list[SpectralAccumulator]:
        """The nested prefix accumulators: keys < 1/8, < 1/4, < 1/2 (fresh copies)."""
        self.flush()
        out: list[SpectralAccumulator] = []
        running = SpectralAccumulator(self.dim)
        for acc in self.bins:
            running = running.copy().merge(acc)
            out.append(running)
        return out


def convergence_record(values: Sequence[float], n_rows: Sequence[int], *,
                       tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """The convergence of one metric from its values at N/8, N/4, N/2 and N.

    ``last_change`` is ``|v(N) - v(N/2)| / |v(N)|``; ``converged`` is ``last_change <=
    tolerance``, or ``None`` when it cannot be judged (a NaN value, an empty prefix, or
    v(N) = 0).
    """
    vals = [float(v) for v in values]
    last = vals[-1]
    half = vals[-2] if len(vals) >= 2 else math.nan
    change = math.nan
    if math.isfinite(last) and math.isfinite(half) and last != 0.0 and n_rows[-2] > 0:
        change = abs(last - half) / abs(last)
    return {
        "fractions": [*PREFIX_FRACTIONS, 1.0][-len(vals):],
        "n_rows": [int(n) for n in n_rows],
        "values": vals,
        "last_change": change,
        "tolerance": tolerance,
        "converged": None if math.isnan(change) else bool(change <= tolerance),
        "order": "rows keyed by a uniform hash of (seed, uid, frame index); prefixes are "
                 "key < 1/8, 1/4, 1/2",
    }
