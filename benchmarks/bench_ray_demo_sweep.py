"""The demo's sweep on 2 cores: Ray, worker processes and the serial sweep, measured fairly.

Every side sweeps the 12 checkpoints of a finished demo run (``--demo DIR``: its ``run`` and
``corpus``) with the demo's sweep config into a fresh store and feature cache, in a fresh
Python process of its own, one side after the other:

- ``ray``: ``sweep_on_ray(..., RayExecutor(address="local", num_cpus=2, cpus_per_unit=1))``:
  a local Ray cluster of 2 workers of 1 CPU each, one task per checkpoint (its units share
  one encoder pass), one torch thread and one fit process each (start-up of the cluster included);
- ``serial-1cpu``: the serial sweep limited to 1 CPU (CPU affinity of one core, one torch
  thread, one fit process): what one of Ray's workers has, so ``serial-1cpu / ray`` is the
  scaling efficiency a cluster user gets from a second worker (target: 1.6x or better);
- ``serial``: the serial sweep as the demo ran it before worker processes (both cores: two
  torch threads, probe layers fitted in two processes): the comparison this benchmark first
  made, kept beside the fair one;
- ``process``: the process executor as the demo runs it now (``checkpoint_workers="auto"``
  on 2 cores: 2 worker processes of one torch thread and one fit process each);
- ``process-fit2``: the same with two fit processes in each worker (4 fit processes on 2
  cores), to see whether fitting layers in processes still helps once checkpoints run side
  by side.

It records each side's wall time and load average before and after, the ratios, and the
largest difference between each store and the Ray store (the one-thread sides compute the
same sums in the same order, so theirs should be 0).

    .venv/bin/python benchmarks/bench_ray_demo_sweep.py --demo speechrank-demo
    .venv/bin/python benchmarks/bench_ray_demo_sweep.py --demo DIR --sides ray,serial-1cpu
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "ray_demo_sweep.json"
SIDES = ("ray", "serial-1cpu", "serial", "process", "process-fit2")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _values(store: Path) -> dict[tuple, float]:
    from speechrank.store import ResultStore

    with ResultStore(store, create=False) as db:
        return {(r.checkpoint, r.task, r.layer, r.pooling, r.metric, r.split): r.value
                for r in db.rows()}


def run_side(side: str, demo: Path, scratch: Path) -> dict[str, Any]:
    """One side, in this (fresh) process; returns what it measured."""
    if side == "serial-1cpu":  # before torch starts its thread pool
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import torch

    from speechrank.demo import DemoSettings, sweep_config
    from speechrank.encoders import configure_cpu_threads
    from speechrank.sweep import (
        ProcessExecutor,
        SerialExecutor,
        SweepConfig,
        find_series,
        run_units,
    )
    from speechrank.sweep.ray_executor import RayExecutor, sweep_on_ray

    fit = {"ray": 1, "serial-1cpu": 1, "serial": 2, "process": None, "process-fit2": 2}[side]
    raw = sweep_config(demo / "corpus", DemoSettings(out=scratch / side))
    raw["options"]["fit_workers"] = fit or DemoSettings().fit_workers
    config = SweepConfig.from_dict(raw)
    store = scratch / f"{side}.sqlite"
    torch.set_num_threads(1) if side == "serial-1cpu" else configure_cpu_threads()
    threads = torch.get_num_threads()
    load_before = _load()
    started = time.perf_counter()
    quiet = {"progress": False, "log": lambda line: None}
    if side == "ray":
        executor = RayExecutor(address="local", num_cpus=2, cpus_per_unit=1.0)
        summary = sweep_on_ray(demo / "run", config, store, executor, **quiet)
    else:
        executor = (SerialExecutor() if side.startswith("serial")
                    else ProcessExecutor(workers="auto", fit_workers=fit))
        summary = run_units(find_series(demo / "run"), config, store, executor, **quiet)
    wall = time.perf_counter() - started
    return {"wall_seconds": round(wall, 1), "units": summary.units_done,
            "cpus": len(os.sched_getaffinity(0)), "torch_threads_driver": threads,
            "fit_workers": fit if fit is not None else "min(fit_workers, threads) = 1",
            "load_average_before": load_before, "load_average_after": _load(),
            "store": str(store)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="a finished demo directory")
    parser.add_argument("--sides", default=",".join(SIDES),
                        help="comma list of " + ", ".join(SIDES))
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--side", help=argparse.SUPPRESS)  # one side, in a child process
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_side(args.side, args.demo.resolve(), args.scratch)), flush=True)
        return
    sides: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="speechrank-ray-demo-") as tmp:
        for side in args.sides.split(","):
            if side not in SIDES:
                raise SystemExit(f"unknown side {side!r}; choose from {', '.join(SIDES)}")
            done = subprocess.run([sys.executable, __file__, "--demo", str(args.demo),
                                   "--side", side, "--scratch", tmp],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"side {side} failed:\n{done.stderr[-3000:]}")
            sides[side] = json.loads(done.stdout.strip().splitlines()[-1])
            print(side, sides[side]["wall_seconds"], sides[side]["load_average_before"],
                  sides[side]["load_average_after"], flush=True)
        stores = {side: _values(Path(sides[side].pop("store"))) for side in sides}
    reference = "ray" if "ray" in stores else next(iter(stores))
    differences = {}
    for side, values in stores.items():
        assert values.keys() == stores[reference].keys(), side
        differences[side] = max((abs(values[k] - stores[reference][k]) for k in values
                                 if math.isfinite(values[k])
                                 and math.isfinite(stores[reference][k])), default=0.0)

    def ratio(slow: str, fast: str) -> float | None:
        if slow in sides and fast in sides:
            return round(sides[slow]["wall_seconds"] / sides[fast]["wall_seconds"], 3)
        return None

    import torch

    result = {
        "benchmark": "bench_ray_demo_sweep",
        "what": "the demo's sweep (12 checkpoints, six probes) on 2 cores: Ray 2 x 1 CPU, the "
                "serial sweep on 1 CPU and on 2, and worker processes; each side in a fresh "
                "process, one after the other",
        "demo": str(args.demo),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "sides": sides,
        "speedup": {
            "ray_2x1cpu_vs_serial_1cpu": ratio("serial-1cpu", "ray"),
            "ray_2x1cpu_vs_serial_2cpu": ratio("serial", "ray"),
            "process_vs_serial_2cpu": ratio("serial", "process"),
            "process_vs_serial_1cpu": ratio("serial-1cpu", "process"),
            "process_vs_ray": ratio("ray", "process"),
            "process_fit2_vs_process": ratio("process", "process-fit2"),
        },
        "max_abs_difference_vs": reference,
        "max_abs_difference": differences,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("speedup", "max_abs_difference")}, indent=1))


if __name__ == "__main__":
    main()
