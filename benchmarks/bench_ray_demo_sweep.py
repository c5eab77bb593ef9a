"""The demo's sweep on a local 2-worker Ray cluster against the serial sweep (issue 12).

Both sides sweep the 12 checkpoints of a finished demo run (``--demo DIR``) with the demo's
sweep config into fresh stores and feature caches, one after the other in this process:

- ``ray``: ``sweep_on_ray(address="local", num_cpus=2, cpus_per_unit=1)``: one task per
  checkpoint (its units share one encoder pass), one torch thread and one fit process each;
- ``serial``: :func:`speechrank.sweep.sweep` as the demo runs it (two torch threads, probe
  layers fitted in two worker processes).

It records both wall times (Ray's includes starting the local cluster), the speed-up, the load
average before and after each side, and the largest difference between the two stores.

    .venv/bin/python benchmarks/bench_ray_demo_sweep.py --demo speechrank-demo
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "ray_demo_sweep.json"


def _values(store: Path) -> dict[tuple, float]:
    from speechrank.store import ResultStore

    with ResultStore(store, create=False) as db:
        return {(r.checkpoint, r.task, r.dataset, r.layer, r.pooling, r.metric, r.split): r.value
                for r in db.rows()}


def main() -> None:
    from speechrank.demo import DemoSettings, sweep_config
    from speechrank.sweep import SweepConfig, sweep
    from speechrank.sweep.ray_executor import sweep_on_ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="a finished demo directory")
    args = parser.parse_args()
    sides: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="speechrank-ray-demo-") as tmp:
        scratch = Path(tmp)
        for side in ("ray", "serial"):
            workers = 1 if side == "ray" else DemoSettings().fit_workers
            raw = sweep_config(args.demo / "corpus", DemoSettings(out=scratch / side))
            raw["options"]["fit_workers"] = workers
            config = SweepConfig.from_dict(raw)
            store = scratch / f"{side}.sqlite"
            load_before = os.getloadavg()
            started = time.perf_counter()
            if side == "ray":
                summary = sweep_on_ray(args.demo / "run", config, store, address="local",
                                       num_cpus=2, cpus_per_unit=1.0, progress=False,
                                       log=lambda line: None)
            else:
                summary = sweep(args.demo / "run", config, store, progress=False,
                                log=lambda line: None)
            wall = time.perf_counter() - started
            sides[side] = {"wall_seconds": round(wall, 1), "units": summary.units_done,
                           "fit_workers": workers,
                           "load_average_before": [round(x, 2) for x in load_before],
                           "load_average_after": [round(x, 2) for x in os.getloadavg()],
                           "store": store}
            print(side, round(wall, 1), flush=True)
        a, b = _values(sides["ray"].pop("store")), _values(sides["serial"].pop("store"))
        assert a.keys() == b.keys()
        worst = max(abs(a[k] - b[k]) for k in a if math.isfinite(a[k]) and math.isfinite(b[k]))
    result = {
        "benchmark": "bench_ray_demo_sweep",
        "what": "the demo's sweep (12 checkpoints) on a local 2-worker Ray cluster, one task per "
                "checkpoint at one thread, against the serial sweep as the demo runs it",
        "demo": str(args.demo),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "serial_torch_threads": torch.get_num_threads()},
        "sides": sides,
        "speedup_ray_vs_serial": round(sides["serial"]["wall_seconds"]
                                       / sides["ray"]["wall_seconds"], 3),
        "max_abs_difference": worst,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("speedup_ray_vs_serial", "max_abs_difference")}))


if __name__ == "__main__":
    main()
