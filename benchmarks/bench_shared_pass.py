"""The demo's sweep time per checkpoint, before and after the shared encoder pass.

One checkpoint of a finished demo run (``--demo DIR``, the output of ``speechrank demo``) is
swept with the demo's own sweep config three ways, in the same process and interleaved
(``--repeats`` rounds), each into a fresh store and feature cache:

- ``before``: every unit encodes its own audio (no memo) and fits its layers one at a time;
- ``memo``: the units share one encoder pass (:class:`speechrank.extract.FrameMemo`);
- ``after``: the shared pass plus layer fits in ``--fit-workers`` worker processes (the
  demo's default).

It records the wall time per unit and in all, the memo's hits and misses, the load average
before and after, and the largest difference between any stored value of ``before`` and
``after`` (float32 replay and an order of fitting that does not change a fit).

    .venv/bin/python benchmarks/bench_shared_pass.py --demo speechrank-demo
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _record import environment

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "shared_pass.json"


def sweep_once(demo: Path, checkpoint: str, mode: str, fit_workers: int, scratch: Path
               ) -> dict[str, Any]:
    from speechrank.demo import DemoSettings, sweep_config
    from speechrank.sweep import SweepConfig, sweep

    settings = DemoSettings(out=scratch / mode, fit_workers=fit_workers)
    raw = sweep_config(demo / "corpus", settings)
    raw["options"]["memo_gb"] = 0 if mode == "before" else 2.0
    raw["options"]["fit_workers"] = fit_workers if mode == "after" else 1
    shutil.rmtree(scratch / mode, ignore_errors=True)
    (scratch / mode).mkdir(parents=True)
    units: list[str] = []
    started = time.perf_counter()
    sweep(demo / "run" / checkpoint, SweepConfig.from_dict(raw), scratch / mode / "s.sqlite",
          progress=False, log=units.append)
    wall = time.perf_counter() - started
    return {"mode": mode, "wall_seconds": round(wall, 2), "log": units,
            "store": str(scratch / mode / "s.sqlite")}


def _values(store: str) -> dict[tuple, float]:
    from speechrank.store import ResultStore

    with ResultStore(store, create=False) as db:
        return {(r.task, r.dataset, r.layer, r.pooling, r.metric, r.split): r.value
                for r in db.rows()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="a finished demo directory")
    parser.add_argument("--checkpoint", default="checkpoint-000600")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fit-workers", type=int, default=2)
    args = parser.parse_args()
    load_before = os.getloadavg()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="speechrank-shared-pass-") as tmp:
        scratch = Path(tmp)
        worst = 0.0
        for _ in range(args.repeats):
            batch = {mode: sweep_once(args.demo, args.checkpoint, mode, args.fit_workers,
                                      scratch) for mode in ("before", "memo", "after")}
            a, b = _values(batch["before"]["store"]), _values(batch["after"]["store"])
            assert a.keys() == b.keys()
            worst = max([worst] + [abs(a[k] - b[k]) for k in a
                                   if math.isfinite(a[k]) and math.isfinite(b[k])])
            for run in batch.values():
                run.pop("store")
                runs.append(run)
                print(run["mode"], run["wall_seconds"], flush=True)
    by_mode = {mode: [r["wall_seconds"] for r in runs if r["mode"] == mode]
               for mode in ("before", "memo", "after")}
    result = {
        "benchmark": "bench_shared_pass",
        "what": "one demo checkpoint swept with the demo's config: each unit encoding its own "
                "audio and fitting layers one at a time (before), one shared encoder pass "
                "(memo), and the shared pass plus layer fits in worker processes (after)",
        "checkpoint": args.checkpoint,
        "fit_workers": args.fit_workers,
        **environment(load_before),
        "median_seconds_per_checkpoint": {m: statistics.median(v) for m, v in by_mode.items()},
        "max_abs_difference_before_after": worst,
        "runs": runs,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median_seconds_per_checkpoint"]), "max |diff|", worst)


if __name__ == "__main__":
    main()
