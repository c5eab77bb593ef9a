"""What convergence in the same pass (issue 14) costs: the prefix bins beside each accumulator.

Two measurements, interleaved, best of ``--repeats``, load average recorded:

- ``updates``: feeding N rows of width D to a :class:`SpectralAccumulator` 1,024 at a time, as
  ``rank`` does, without and with :class:`PrefixAccumulators` (the rows with key < 1/2 go to
  three disjoint bins), and the spectral metrics at the end without and with the three
  prefixes (three more spectra per accumulator);
- ``rank``: :func:`speechrank.rank.run_rank` of ``random:tiny`` on FSDD files with
  ``convergence=False`` and ``True`` (every layer, the three poolings, every spectral metric).

Results go to ``benchmarks/results/convergence_cost.json``.

    .venv/bin/python benchmarks/bench_convergence_cost.py --fsdd ../shared/data/fsdd
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from speechrank.metrics import SPECTRAL_METRIC_NAMES, SpectralAccumulator, compute_metrics
from speechrank.metrics.convergence import PrefixAccumulators, row_keys
from speechrank.spec import MeasureSpec

HERE = Path(__file__).resolve().parent


def _updates(X: torch.Tensor, keys: np.ndarray, with_prefix: bool) -> tuple[float, float]:
    dim = X.shape[1]
    started = time.perf_counter()
    acc = SpectralAccumulator(dim)
    prefix = PrefixAccumulators(dim) if with_prefix else None
    for start in range(0, X.shape[0], 1024):
        rows = X[start:start + 1024]
        acc.update(rows)
        if prefix is not None:
            prefix.update(rows, keys[start:start + 1024])
    update_s = time.perf_counter() - started
    started = time.perf_counter()
    compute_metrics(acc, SPECTRAL_METRIC_NAMES)
    if prefix is not None:
        for p in prefix.prefixes():
            compute_metrics(p, SPECTRAL_METRIC_NAMES)
    return update_s, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsdd", default="../shared/data/fsdd")
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--rows", type=int, default=25_600)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "convergence_cost.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    X = torch.randn(args.rows, args.dim, dtype=torch.float32)
    keys = row_keys(0, "bench", np.arange(args.rows))
    best: dict[str, list[float]] = {"plain": [9e9, 9e9], "prefix": [9e9, 9e9]}
    for _ in range(args.repeats):
        for mode in ("plain", "prefix"):
            u, m = _updates(X, keys, mode == "prefix")
            best[mode] = [min(best[mode][0], u), min(best[mode][1], m)]
    from speechrank.rank import run_rank

    rank_best = {False: 9e9, True: 9e9}
    for _ in range(args.repeats):
        for conv in (False, True):
            result = run_rank("random:tiny", f"fsdd:{args.fsdd}",
                              MeasureSpec(num_utterances=args.files, convergence=conv))
            rank_best[conv] = min(rank_best[conv], result.info["wall_seconds"])
    payload = {
        "benchmark": "convergence_cost", "rows": args.rows, "dim": args.dim,
        "updates_seconds": {"plain": round(best["plain"][0], 3),
                            "with_prefixes": round(best["prefix"][0], 3),
                            "extra": round(best["prefix"][0] / best["plain"][0] - 1, 3)},
        "metrics_seconds": {"plain": round(best["plain"][1], 3),
                            "with_prefixes": round(best["prefix"][1], 3)},
        "rank_random_tiny_wall_seconds": {"files": args.files,
                                          "no_convergence": round(rank_best[False], 3),
                                          "convergence": round(rank_best[True], 3)},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(), "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
