"""What the cluster metrics (k-means inertia, Davies-Bouldin; issue 14) cost against the Gram
metrics, per (layer, frames pooling).

For each width D, on N rows with a power-law covariance spectrum (eigenvalue j ~ j^-1, a
stand-in for a layer's frames), seeded:

- ``gram``: feeding the N rows to a :class:`SpectralAccumulator` (1,024 at a time, as ``rank``
  does) plus every spectral metric from it (7 metrics, one eigensolve each route);
- ``cluster``: :func:`speechrank.metrics.cluster.cluster_metrics` with k = 1024 (mini-batch
  k-means, then the float64 inertia and Davies-Bouldin);
- ``store MiB``: memory of the float32 rows the cluster metrics need (the Gram route needs
  D x D float64 whatever N is).

Best of ``--repeats``; the load average is recorded beside the times (a shared machine).
Results go to ``benchmarks/results/cluster_cost.json``.

    .venv/bin/python benchmarks/bench_cluster_cost.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from speechrank.metrics import SPECTRAL_METRIC_NAMES, SpectralAccumulator, compute_metrics
from speechrank.metrics.cluster import cluster_metrics

HERE = Path(__file__).resolve().parent


def _rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = (1.0 / np.arange(1, dim + 1)) ** 0.5
    return (rng.standard_normal((n, dim)) * scales).astype(np.float32)


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="128,768")
    parser.add_argument("--rows", type=int, default=25_600)
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "cluster_cost.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    results = []
    for dim in (int(d) for d in args.dims.split(",")):
        X = _rows(args.rows, dim)

        def gram(X=X, dim=dim) -> None:
            acc = SpectralAccumulator(dim)
            for start in range(0, X.shape[0], 1024):
                acc.update(X[start:start + 1024])
            compute_metrics(acc, SPECTRAL_METRIC_NAMES)

        def cluster(X=X) -> None:
            cluster_metrics(X, n_clusters=args.k, seed=0)

        t_gram = _best(gram, args.repeats)
        t_cluster = _best(cluster, args.repeats)
        results.append({"dim": dim, "rows": args.rows, "k": args.k,
                        "gram_seconds": round(t_gram, 3),
                        "cluster_seconds": round(t_cluster, 3),
                        "ratio": round(t_cluster / t_gram, 1),
                        "store_mib": round(args.rows * dim * 4 / 2**20, 1),
                        "gram_state_mib": round(dim * dim * 8 / 2**20, 2)})
        print(results[-1], flush=True)
        payload = {"benchmark": "cluster_cost", "results": results,
                   "load_average_before": [round(x, 2) for x in load_before],
                   "load_average_after": [round(x, 2) for x in os.getloadavg()],
                   "threads": "torch 1; k-means on one OpenMP/BLAS thread",
                   "cpu_count": os.cpu_count(), "python": platform.python_version(),
                   "torch": torch.__version__}
        args.out.parent.mkdir(parents=True, exist_ok=True)  # after each width: partial runs
        args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print("| D | N | k | Gram metrics s | cluster metrics s | ratio | row store MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['dim']} | {r['rows']:,} | {r['k']} | {r['gram_seconds']} | "
              f"{r['cluster_seconds']} | {r['ratio']}x | {r['store_mib']} |")


if __name__ == "__main__":
    main()
