"""Benchmark: the streaming float64 Gram accumulator against materialised SVD routes.

For each (N, D) this compares, on the same float32 input an encoder would give:

- ``accumulator``: :class:`speechrank.metrics.SpectralAccumulator` (chunked float64 Gram
  matrix via BLAS dsyrk, then ``eigvalsh``) and RankMe from its singular values;
- ``svdvals_f32``: ``torch.linalg.svdvals`` of the float32 matrix;
- ``svdvals_f64``: ``torch.linalg.svdvals`` of the matrix converted to float64 (the reference);
- ``sklearn_pca``: ``sklearn.decomposition.PCA(svd_solver="full")`` as the reptrix library
  does (centred; compared on RankMe of the centred matrix, ``rankme_centered``).

Each (method, N, D) runs in a fresh subprocess so that timings and memory do not leak between
cases. The input is generated before the timed part. Peak extra memory is measured from the
kernel's own accounting: the worker resets its peak resident set (``/proc/self/clear_refs``
``5``, Linux >= 4.0) after the input exists and the libraries are warmed up, then reports
``VmHWM`` after the run minus ``VmRSS`` before it (this sees torch, numpy and LAPACK
allocations alike, which tracemalloc does not). BLAS/LAPACK threads are limited to
``--threads`` (default 1) in every library so a shared machine's load distorts less; the load
average is recorded beside every case.

Usage:
    python benchmarks/bench_accumulator.py                 # the full grid, writes JSON
    python benchmarks/bench_accumulator.py --sizes 25600x256 --methods accumulator,svdvals_f64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

METHODS = ("accumulator", "svdvals_f32", "svdvals_f64", "sklearn_pca")
SIZES = ((25_600, 256), (25_600, 768), (25_600, 1024),
         (100_000, 256), (100_000, 768), (100_000, 1024))
TARGET = (100_000, 768)
RESULTS = Path(__file__).resolve().parent / "results" / "accumulator.json"
MIB = 2**20
EPS = 1e-7


# ------------------------------------------------------------------------ worker side
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _make_input(n: int, d: int, seed: int):
    """float32 rows with a decaying spectrum and a common offset, like encoder features."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x *= np.geomspace(1.0, 1e-2, d, dtype=np.float32)
    x += np.float32(0.5)
    return x


def _rankme(singular_values) -> float:
    import numpy as np

    s = np.asarray(singular_values, dtype=np.float64)
    p = s / s.sum() + EPS
    return float(np.exp(-(p * np.log(p)).sum()))


def _run_method(method: str, x, xt) -> dict[str, float]:
    """The timed part; returns RankMe (raw or centred) of the method's own spectrum."""
    import numpy as np
    import torch

    if method == "accumulator":
        from speechrank.metrics import SpectralAccumulator

        acc = SpectralAccumulator(x.shape[1])
        acc.update(xt)
        spectra = acc.spectra()
        return {"rankme": _rankme(spectra.singular_values),
                "rankme_centered": _rankme(spectra.centered_singular_values)}
    if method == "svdvals_f32":
        return {"rankme": _rankme(torch.linalg.svdvals(xt).numpy())}
    if method == "svdvals_f64":
        return {"rankme": _rankme(torch.linalg.svdvals(xt.double()).numpy())}
    if method == "sklearn_pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=min(x.shape), svd_solver="full").fit(x)
        return {"rankme_centered": _rankme(pca.singular_values_.astype(np.float64))}
    raise ValueError(method)


def worker(method: str, n: int, d: int, seed: int) -> dict[str, Any]:
    import gc

    import numpy as np
    import torch

    x = _make_input(n, d, seed)
    xt = torch.from_numpy(x)
    _run_method(method, x[:512, : min(d, 64)].copy(), xt[:512, : min(d, 64)].clone())  # warm-up
    gc.collect()
    _reset_peak()
    base_kib = _status_kib("VmRSS")
    start = time.perf_counter()
    values = _run_method(method, x, xt)
    seconds = time.perf_counter() - start
    peak_kib = _status_kib("VmHWM")
    out: dict[str, Any] = {"seconds": seconds, "extra_mib": (peak_kib - base_kib) / 1024,
                           **values}
    if method == "svdvals_f64":  # untimed: the float64 reference of the centred matrix too
        centred = torch.from_numpy(x.astype(np.float64) - x.astype(np.float64).mean(0))
        out["rankme_centered"] = _rankme(torch.linalg.svdvals(centred).numpy())
    return out


# ------------------------------------------------------------------------ driver side
def _run_case(method: str, n: int, d: int, seed: int, threads: int) -> dict[str, Any]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [sys.executable, __file__, "--worker", method, str(n), str(d), str(seed),
           "--threads", str(threads)]
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} {n}x{d} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"method": method, "n": n, "d": d, **result,
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def _add_comparisons(cases: list[dict[str, Any]]) -> None:
    by_size: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}
    for case in cases:
        by_size.setdefault((case["n"], case["d"]), {})[case["method"]] = case
    for methods in by_size.values():
        ref = methods.get("svdvals_f64")
        if ref is None:
            continue
        for case in methods.values():
            metric = "rankme" if "rankme" in case else "rankme_centered"
            case["compared_metric"] = metric
            case["rel_diff_vs_f64"] = abs(case[metric] - ref[metric]) / ref[metric]
            case["speedup_vs_f64"] = ref["seconds"] / case["seconds"]
            case["memory_ratio_vs_f64"] = case["extra_mib"] / max(ref["extra_mib"], 1e-9)


def markdown(cases: list[dict[str, Any]]) -> str:
    lines = [
        "| N | D | method | time (s) | extra memory (MiB) | vs f64 SVD: speed-up | "
        "memory ratio | compared | rel. diff | load |",
        "|---:|---:|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for c in cases:
        lines.append(
            f"| {c['n']:,} | {c['d']} | {c['method']} | {c['seconds']:.2f} | "
            f"{c['extra_mib']:.0f} | {c.get('speedup_vs_f64', float('nan')):.2f}x | "
            f"{c.get('memory_ratio_vs_f64', float('nan')):.3f} | "
            f"{c.get('compared_metric', '')} | {c.get('rel_diff_vs_f64', float('nan')):.1e} | "
            f"{c['load_before']:.1f} |"
        )
    return "\n".join(lines)


def _target_check(cases: list[dict[str, Any]]) -> dict[str, Any]:
    acc = next((c for c in cases if (c["n"], c["d"]) == TARGET
                and c["method"] == "accumulator" and "speedup_vs_f64" in c), None)
    if acc is None:
        return {"measured": False}
    return {
        "measured": True, "n": TARGET[0], "d": TARGET[1],
        "speedup_vs_f64": acc["speedup_vs_f64"], "speedup_goal": 2.0,
        "memory_ratio_vs_f64": acc["memory_ratio_vs_f64"], "memory_goal": 0.2,
        "rankme_rel_diff": acc["rel_diff_vs_f64"], "rel_diff_goal": 1e-6,
        "met": bool(acc["speedup_vs_f64"] >= 2.0 and acc["memory_ratio_vs_f64"] <= 0.2
                    and acc["rel_diff_vs_f64"] <= 1e-6),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=4, metavar=("METHOD", "N", "D", "SEED"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default=",".join(f"{n}x{d}" for n, d in SIZES),
                        help="comma list of NxD (default: the full grid)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS/LAPACK/torch threads in every method (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        from threadpoolctl import threadpool_limits

        method, n, d, seed = args.worker
        with threadpool_limits(args.threads):
            print(json.dumps(worker(method, int(n), int(d), int(seed))))
        return 0

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    if "svdvals_f64" not in methods:
        methods.append("svdvals_f64")  # the reference everything is compared with
    cases = []
    started = time.time()
    for n, d in sizes:
        for method in methods:
            case = _run_case(method, n, d, args.seed, args.threads)
            cases.append(case)
            print(f"{method:>12} {n:>7}x{d:<5} {case['seconds']:7.2f} s "
                  f"{case['extra_mib']:8.0f} MiB  load {case['load_before']:.1f}",
                  file=sys.stderr, flush=True)
    _add_comparisons(cases)
    import numpy
    import scipy
    import sklearn
    import torch

    payload = {
        "benchmark": "bench_accumulator",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": time.time() - started,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count(), "processor": platform.processor()},
        "versions": {"torch": torch.__version__, "numpy": numpy.__version__,
                     "scipy": scipy.__version__, "sklearn": sklearn.__version__},
        "threads": args.threads,
        "input": "float32, standard normal x geomspace(1, 1e-2, D) per column + 0.5, seed "
                 f"{args.seed}; generated before the timed part",
        "memory": "VmHWM after the timed part minus VmRSS before it, peak reset through "
                  "/proc/self/clear_refs after input generation and warm-up; one subprocess "
                  "per case",
        "compared": "RankMe (eps 1e-7) of each method's spectrum vs the float64 SVD's; "
                    "sklearn_pca is centred, so it is compared on rankme_centered",
        "target": _target_check(cases),
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(markdown(cases))
    print(f"\ntarget {TARGET[0]:,} x {TARGET[1]}: {payload['target']}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
