"""Cluster quality of a layer's frames: k-means inertia and the Davies-Bouldin index.

Whetten et al., "Towards Early Prediction of Self-Supervised Speech Model Performance"
(arXiv 2501.05966, Interspeech 2025) cluster the frame embeddings of one hour of unlabelled
audio with mini-batch k-means (k = 1024) and find that the inertia and the Davies-Bouldin
index (Davies & Bouldin, 1979) track downstream results better than the pretraining loss.

Both are computed here on the rows a :class:`ClusterRows` store kept (``rank`` feeds it the
same seeded frame selection as the ``frames`` pooling), with scikit-learn's
``MiniBatchKMeans`` seeded by ``seed``:

- ``kmeans_inertia``: the within-cluster sum of squared distances divided by the total sum
  of squared distances to the mean, ``sum_i ||x_i - c(x_i)||^2 / sum_i ||x_i - mean||^2``,
  in float64. It is the share of the rows' variance the clustering leaves unexplained (0 to
  1, 1 - R^2 of the clustering), so it does not depend on the scale of the layer, on D, or
  (through the per-row normalisation of both sums) on N; the raw inertia per row is recorded
  too. It still depends on k and on N/k, so ``n_clusters`` is recorded with every value and
  values compare within a run at equal k.
- ``davies_bouldin``: scikit-learn's ``davies_bouldin_score`` on the same labels: the mean
  over clusters of the worst ratio (s_i + s_j) / d(c_i, c_j) of within-cluster scatter to
  centroid distance. It is scale-free (a ratio of distances).

k is ``n_clusters`` (default 1024) unless the rows are too few: it becomes ``N //
MIN_ROWS_PER_CLUSTER`` (recorded as ``n_clusters`` beside ``n_clusters_requested``), and
below two clusters the value is NaN with a reason.

Orientation: lower is better clustering for both (tighter clusters; better separated
clusters). ``correlate`` negates both (as it negates ``alpha_req``), so a positive rho means
"tighter clusters where the probe scores better". Whetten et al. report that inertia and
Davies-Bouldin correlate with recognition results in opposite directions, so a negative
oriented rho for one of them is a finding to read, not a sign error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from speechrank.metrics.result import MetricResult
from speechrank.options import DEFAULT_N_CLUSTERS  # k of Whetten et al. (2025)

#: The cluster-quality metrics, in canonical order.
CLUSTER_METRIC_NAMES: tuple[str, ...] = ("kmeans_inertia", "davies_bouldin")
#: Fewest rows per cluster on average; fewer rows lower k to N // this.
MIN_ROWS_PER_CLUSTER = 10
#: Rows per mini-batch (scikit-learn's default).
DEFAULT_BATCH_SIZE = 1024


class ClusterRows:
    """A bounded, seeded sample of rows for clustering: the ``max_rows`` smallest keys.

    Each row comes with a uniform key in [0, 1) that depends only on the row's identity (see
    :func:`speechrank.metrics.convergence.row_keys`); keeping the rows with the smallest keys
    is a uniform sample whose membership and order do not depend on batching.
    """

    def __init__(self, dim: int, max_rows: int) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self.dim = int(dim)
        self.max_rows = int(max_rows)
        self._rows: list[np.ndarray] = []
        self._keys: list[np.ndarray] = []
        self._held = 0
        self.seen = 0

    def update(self, rows: Any, keys: np.ndarray) -> None:
        """Add ``rows`` (N, D; tensor or array, stored as float32) with their ``keys``."""
        if hasattr(rows, "detach"):
            rows = rows.detach().to("cpu").float().numpy()
        rows = np.asarray(rows, dtype=np.float32)
        keys = np.asarray(keys, dtype=np.float64)
        if rows.shape[0] != keys.shape[0] or rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"rows {rows.shape} and keys {keys.shape} do not match dim "
                             f"{self.dim}")
        self.seen += rows.shape[0]
        self._rows.append(rows.copy())
        self._keys.append(keys)
        self._held += rows.shape[0]
        if self._held > 2 * self.max_rows:
            self._trim()

    def _trim(self) -> None:
        if not self._rows:
            return
        rows, keys = np.concatenate(self._rows), np.concatenate(self._keys)
        order = np.argsort(keys, kind="stable")[: self.max_rows]
        self._rows, self._keys, self._held = [rows[order]], [keys[order]], len(order)

    def merge(self, other: ClusterRows) -> ClusterRows:
        self._rows.extend(other._rows)
        self._keys.extend(other._keys)
        self._held += other._held
        self.seen += other.seen
        self._trim()
        return self

    def rows(self) -> np.ndarray:
        """The kept rows in key order (float32, at most ``max_rows``)."""
        self._trim()
        return self._rows[0] if self._rows else np.zeros((0, self.dim), np.float32)


def cluster_metrics(rows: Any, names: Iterable[str] = CLUSTER_METRIC_NAMES, *,
                    n_clusters: int = DEFAULT_N_CLUSTERS, seed: int = 0,
                    batch_size: int = DEFAULT_BATCH_SIZE,
                    threads: int | None = 1) -> dict[str, MetricResult]:
    """``kmeans_inertia`` and/or ``davies_bouldin`` of ``rows`` (N, D) with one seeded fit.

    Args:
        rows: the frame vectors (float32 or float64 array).
        names: which of :data:`CLUSTER_METRIC_NAMES` to return.
        n_clusters: k asked for (lowered when the rows are too few; recorded).
        seed: ``random_state`` of ``MiniBatchKMeans``.
        batch_size: rows per mini-batch.
        threads: OpenMP/BLAS threads for the fit (process-wide while it runs); ``None``
            leaves the limits alone (for a caller that set them once around a thread pool).
    """
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import davies_bouldin_score
    from threadpoolctl import threadpool_limits

    names = list(names)
    for name in names:
        if name not in CLUSTER_METRIC_NAMES:
            raise ValueError(f"unknown cluster metric '{name}'")
    X = np.asarray(rows, dtype=np.float32)
    n, dim = X.shape
    k = min(int(n_clusters), n // MIN_ROWS_PER_CLUSTER)
    conventions: dict[str, Any] = {
        "n_clusters_requested": int(n_clusters), "n_clusters": int(max(k, 0)),
        "algorithm": "sklearn MiniBatchKMeans (k-means++ init, n_init=1)",
        "kmeans_batch_size": int(batch_size), "seed": int(seed), "n_rows": int(n), "dim": int(dim),
        "normalisation": "inertia / total sum of squares about the mean (1 - R^2)",
        "orientation": "lower is better clustering",
    }
    if k < 2 or not np.isfinite(X).all():
        reason = (f"{n} rows give fewer than 2 clusters at {MIN_ROWS_PER_CLUSTER} rows per "
                  "cluster" if k < 2 else "non-finite rows")
        return {name: MetricResult(name, math.nan, dict(conventions), {"reason": reason})
                for name in names}
    model = MiniBatchKMeans(n_clusters=k, batch_size=int(batch_size), random_state=int(seed),
                            n_init=1, max_no_improvement=10)
    # One OpenMP/BLAS thread: on a shared 2-core machine scikit-learn's threads spin against
    # torch's and each other (measured 37 s against 3.9 s for 25,600 x 128); ``rank`` runs
    # the layers on parallel threads instead.
    with threadpool_limits(limits=threads):
        labels = model.fit_predict(X)
    centres = model.cluster_centers_.astype(np.float64)
    inertia = 0.0
    total = 0.0
    mean = X.mean(axis=0, dtype=np.float64)
    for start in range(0, n, 8192):  # float64 in chunks: N x D float64 at once is large
        chunk = X[start:start + 8192].astype(np.float64)
        inertia += float(((chunk - centres[labels[start:start + 8192]]) ** 2).sum())
        total += float(((chunk - mean) ** 2).sum())
    used = int(np.unique(labels).size)
    extras = {"raw_inertia_per_row": inertia / n, "total_ss_per_row": total / n,
              "clusters_used": used}
    out: dict[str, MetricResult] = {}
    if "kmeans_inertia" in names:
        value = inertia / total if total > 0 else math.nan
        ex = dict(extras) if total > 0 else {**extras, "reason": "all rows are equal"}
        out["kmeans_inertia"] = MetricResult("kmeans_inertia", value, dict(conventions), ex)
    if "davies_bouldin" in names:
        if used < 2:
            out["davies_bouldin"] = MetricResult("davies_bouldin", math.nan, dict(conventions),
                                                 {**extras, "reason": "one cluster used"})
        else:
            with threadpool_limits(limits=threads):
                value = float(davies_bouldin_score(X, labels))
            out["davies_bouldin"] = MetricResult("davies_bouldin", value, dict(conventions),
                                                 dict(extras))
    return out
