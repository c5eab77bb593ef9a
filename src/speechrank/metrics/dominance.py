"""Whether one direction dominates a matrix's spectrum (and so its RankMe).

On long utterances the per-utterance time sums of a layer's frames share one mean direction:
RankMe-t (Aldeneh et al., ICASSP 2025) of the raw summed rows then measures little more than
that direction (a small encoder on 415 telephone recordings of about 15 s gave 2-4 of 256
on every layer, while its frames and centred variants varied). Two numbers say so, from the
same accumulator:

- ``first_direction_share = s_1^2 / sum_k s_k^2`` of the raw matrix: the largest Gram
  eigenvalue over the Gram trace (the share of the rows' energy along the top direction);
- ``mean_share = ||mean||^2 / mean_i ||x_i||^2``: how much of the rows' squared norm the mean
  vector alone explains (``N ||mean||^2 / trace(X^T X)``; 1 when every row is the same).

A value of RankMe is flagged *dominated* when ``first_direction_share`` exceeds
:data:`DEFAULT_THRESHOLD` (0.9: nine tenths of the energy on one direction, where RankMe's
singular-value entropy is bounded near its floor). The remedy is a variant that removes the
shared direction: ``rankme_centered`` or the ``frames`` pooling.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from speechrank.metrics.accumulator import SpectralAccumulator

#: first_direction_share above which RankMe is flagged as dominated by one direction.
DEFAULT_THRESHOLD = 0.9


def _top_eigenvalue(gram: np.ndarray) -> float:
    dim = gram.shape[0]
    if dim <= 64:
        return float(np.linalg.eigvalsh(gram)[-1])
    from scipy.sparse.linalg import eigsh

    # Lanczos for the largest eigenvalue only (a full eigensolve per layer is not needed);
    # the Gram matrix is symmetric positive semi-definite.
    value = eigsh(gram, k=1, which="LA", return_eigenvectors=False, tol=1e-10,
                  v0=np.ones(dim))
    return float(value[0])


def dominance_record(acc: SpectralAccumulator, *,
                     threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """``first_direction_share``, ``mean_share`` and ``dominated`` of an accumulator's rows."""
    n = acc.n_rows
    gram = acc.gram
    trace = float(np.trace(gram))
    if n == 0 or trace <= 0.0 or not math.isfinite(trace):
        first = mean = math.nan
    else:
        first = min(1.0, _top_eigenvalue(gram) / trace)
        colsum = acc.column_sums
        mean = float(colsum @ colsum) / (n * trace)
    return {
        "first_direction_share": first,
        "mean_share": mean,
        "threshold": threshold,
        "dominated": None if math.isnan(first) else bool(first > threshold),
        "remedy": "rankme_centered, or the frames pooling",
    }
