"""The demo's probes fitted in float64 against float32: time and what the scores move.

Checkpoints of a finished demo run (``--demo DIR``, the output of ``speechrank demo``) are
swept with the demo's own sweep config twice each, interleaved in one process, once with the
logistic probes' lbfgs in float64 and once in float32 (the probe option ``fit_dtype``), into
fresh stores. Both sides share everything else (one encoder pass per checkpoint, the same
``--fit-workers``), so the difference in wall time is the fits'. It records the wall time of
every probe unit, the load average before and after, and for every test-split probe score the
float32 value minus the float64 value, also in units of the float64 row's standard error.

    .venv/bin/python benchmarks/bench_probe_dtype.py --demo speechrank-demo
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from _record import environment
from _runs import timed_sweep

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "probe_dtype.json"
DTYPES = ("float64", "float32")
SCORES = ("accuracy", "frame_accuracy")


def sweep_once(demo: Path, checkpoint: str, dtype: str, fit_workers: int, scratch: Path
               ) -> dict[str, Any]:
    from speechrank.demo import DemoSettings, sweep_config

    out = scratch / f"{checkpoint}-{dtype}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    raw = sweep_config(demo / "corpus", DemoSettings(out=out, fit_workers=fit_workers))
    for probe in raw["probe"]:
        probe["fit_dtype"] = dtype
    wall, units = timed_sweep(demo / "run" / checkpoint, raw, out / "s.sqlite")
    return {"checkpoint": checkpoint, "fit_dtype": dtype, "wall_seconds": round(wall, 2),
            "unit_seconds": units, "store": str(out / "s.sqlite")}


def _test_scores(store: str) -> dict[tuple[str, str, str], tuple[float, float]]:
    """``(task, layer, metric) -> (value, standard error)`` of the test split's scores."""
    from speechrank.store import ResultStore

    with ResultStore(store, create=False) as db:
        return {(r.task, r.layer, r.metric): (r.value, r.conventions.get("standard_error",
                                                                         math.nan))
                for r in db.rows(split="test") if r.metric in SCORES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="a finished demo directory")
    parser.add_argument("--checkpoints", nargs="+",
                        default=["checkpoint-000000", "checkpoint-000300", "checkpoint-000600"])
    parser.add_argument("--fit-workers", type=int, default=1)
    args = parser.parse_args()
    load_before = os.getloadavg()
    runs: list[dict[str, Any]] = []
    differences: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="speechrank-probe-dtype-") as tmp:
        scratch = Path(tmp)
        for checkpoint in args.checkpoints:
            pair = {dtype: sweep_once(args.demo, checkpoint, dtype, args.fit_workers, scratch)
                    for dtype in DTYPES}
            reference, variant = (_test_scores(pair[d]["store"]) for d in DTYPES)
            assert reference.keys() == variant.keys()
            for key, (value64, se) in sorted(reference.items()):
                diff = variant[key][0] - value64
                differences.append({"checkpoint": checkpoint, "task": key[0], "layer": key[1],
                                    "metric": key[2], "float64": value64,
                                    "float32_minus_float64": diff,
                                    "in_standard_errors": diff / se if se > 0 else math.nan})
            for run in pair.values():
                run.pop("store")
                runs.append(run)
                print(run["checkpoint"], run["fit_dtype"], run["wall_seconds"], flush=True)
    walls = {d: [r["wall_seconds"] for r in runs if r["fit_dtype"] == d] for d in DTYPES}
    probe_seconds = {d: [sum(v for k, v in r["unit_seconds"].items() if k.startswith("probe"))
                         for r in runs if r["fit_dtype"] == d] for d in DTYPES}
    in_se = [abs(d["in_standard_errors"]) for d in differences
             if math.isfinite(d["in_standard_errors"])]
    result = {
        "benchmark": "bench_probe_dtype",
        "what": "demo checkpoints swept with the demo's config, logistic probes fitted by "
                "lbfgs in float64 and in float32 (interleaved, one process)",
        "fit_workers": args.fit_workers,
        **environment(load_before),
        "sweep_seconds_total": {d: round(sum(v), 2) for d, v in walls.items()},
        "probe_unit_seconds_total": {d: round(sum(v), 2) for d, v in probe_seconds.items()},
        "test_scores": len(differences),
        "max_abs_difference": max(abs(d["float32_minus_float64"]) for d in differences),
        "median_abs_difference_in_standard_errors": statistics.median(in_se),
        "max_abs_difference_in_standard_errors": max(in_se),
        "runs": runs,
        "differences": differences,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("sweep_seconds_total", "probe_unit_seconds_total",
                                             "max_abs_difference",
                                             "median_abs_difference_in_standard_errors",
                                             "max_abs_difference_in_standard_errors")}))


if __name__ == "__main__":
    main()
