"""Benchmark: scale-out on one machine (a sweep on Ray, ``rank`` under torchrun).

Two comparisons, each timed as the wall clock of whole CLI commands (start-up included):

1. ``sweep``: the same sweep serially (``--workers 1``: one process, torch on every core) and
   with ``--ray local`` (a local Ray cluster with one CPU per core, every unit a task with one torch
   thread). The demo's sweep needs a demo run directory (15 minutes to build), so the stand-in
   is a series of ``--checkpoints`` randomly initialised ``--model`` encoders
   (``random:NAME@SEED``, steps 0, 1000, ...), each with a rank unit on ``--rank-files`` FSDD
   recordings and a digit probe unit on ``--probe-files`` of them. The two stores are checked
   to hold the same rows (values to 1e-6 relative: the serial run's thread count differs).
2. ``rank``: ``speechrank rank`` over ``--rank-files`` FSDD recordings in one process with 1
   and with 2 threads, and under ``torchrun --standalone --nproc-per-node 2`` (one thread per
   process); the metric values are checked against the one-process run (1e-6 relative).

The load average is recorded before and after each command: on a shared machine the figures
are only comparable within one run of this script.

Usage:
    python benchmarks/bench_scale_out.py                      # writes results/scale_out.json
    python benchmarks/bench_scale_out.py --checkpoints 2 --rank-files 200 --out /tmp/s.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FSDD = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"
RESULTS = ROOT / "benchmarks" / "results" / "scale_out.json"
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _env(threads: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _timed(args: list[str], cwd: Path, threads: int | None) -> dict[str, Any]:
    before = _load()
    started = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=_env(threads), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return {"command": " ".join(args[1:]), "wall_seconds": round(wall, 2),
            "load_before": before, "load_after": _load()}


def _manifest(path: Path, files: int) -> Path:
    """``files`` FSDD recordings, digits and speakers interleaved, with a split column."""
    rows = []
    for index in range(50):
        for speaker in SPEAKERS:
            for digit in range(10):
                split = "test" if index % 5 == 0 else ("dev" if index % 5 == 1 else "train")
                rows.append({"path": str(FSDD / f"{digit}_{speaker}_{index}.wav"),
                             "digit": str(digit), "split": split})
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:files])
    return path


def _store_rows(path: Path) -> dict[tuple, float]:
    with sqlite3.connect(path) as db:
        return {tuple(r[:-1]): r[-1] for r in db.execute(
            "SELECT checkpoint, layer, pooling, metric, task, split, value FROM results")}


def _close(a: dict[tuple, Any], b: dict[tuple, Any]) -> float:
    """Largest relative difference between two keyed value sets (inf when keys differ)."""
    if a.keys() != b.keys():
        return math.inf
    worst = 0.0
    for key, x in a.items():
        y = b[key]
        if x is None or y is None:
            if x is not y:
                return math.inf
            continue
        worst = max(worst, abs(x - y) / max(abs(x), 1e-300))
    return worst


def bench_sweep(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    rank_data = _manifest(work / "rank.csv", args.rank_files)
    probe_data = _manifest(work / "probe.csv", args.probe_files)
    (work / "checkpoints.txt").write_text("".join(
        f"random:{args.model}@{i} {1000 * i}\n" for i in range(args.checkpoints)))
    (work / "sweep.toml").write_text(f"""
[rank]
data = "{rank_data}"
poolings = ["sum", "mean", "frames"]

[[probe]]
name = "digit"
task = "label:digit"
data = "{probe_data}"

[options]
seed = 0
cache_dir = "{work / 'cache'}"
""")
    base = [sys.executable, "-m", "speechrank", "sweep", str(work / "checkpoints.txt"),
            "--config", str(work / "sweep.toml"), "-q"]
    # --workers 1: the serial sweep in one process (its default would sweep the checkpoints in
    # worker processes; bench_ray_demo_sweep.py compares those)
    serial = _timed([*base, "--store", str(work / "serial.sqlite"), "--workers", "1"], work,
                    None)
    # a fresh feature cache, so the Ray run encodes as much as the serial one did
    (work / "sweep.toml").write_text((work / "sweep.toml").read_text().replace(
        str(work / "cache"), str(work / "cache-ray")))
    ray = _timed([*base, "--store", str(work / "ray.sqlite"), "--ray", "local"], work, None)
    worst = _close(_store_rows(work / "serial.sqlite"), _store_rows(work / "ray.sqlite"))
    return {"stand_in": f"{args.checkpoints} checkpoints random:{args.model}@0..; rank on "
                        f"{args.rank_files} FSDD files (3 poolings, all spectral metrics), "
                        f"a digit probe on {args.probe_files}",
            "units": 2 * args.checkpoints, "serial": serial, "ray_local_2_workers": ray,
            "speedup": round(serial["wall_seconds"] / ray["wall_seconds"], 3),
            "target_speedup": 1.6, "max_relative_difference": worst}


def bench_rank(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    data = _manifest(work / "rank_only.csv", args.rank_files)
    command = ["-m", "speechrank", "rank", f"random:{args.model}", str(data), "-q"]
    runs: dict[str, Any] = {}
    outputs: dict[str, dict[tuple, float]] = {}
    for name, prefix, threads in (
            ("one_process_1_thread", [sys.executable], 1),
            ("one_process_2_threads", [sys.executable], 2),
            ("torchrun_2_processes_1_thread", [sys.executable, "-m", "torch.distributed.run",
                                               "--standalone", "--nproc-per-node", "2"], 1)):
        out = work / f"{name}.json"
        runs[name] = _timed([*prefix, *command, "--json", str(out)], work, threads)
        payload = json.loads(out.read_text())
        runs[name]["encode_seconds"] = payload["encode_seconds"]
        runs[name]["world_size"] = payload["distributed"]["world_size"]
        outputs[name] = {(r["layer"], r["pooling"], r["metric"]): r["value"]
                         for r in payload["results"]}
    one = runs["one_process_1_thread"]["wall_seconds"]
    return {"data": f"{args.rank_files} FSDD files", "model": f"random:{args.model}",
            "runs": runs,
            "speedup_vs_1_thread": round(one / runs["torchrun_2_processes_1_thread"]
                                         ["wall_seconds"], 3),
            "speedup_vs_2_threads": round(runs["one_process_2_threads"]["wall_seconds"]
                                          / runs["torchrun_2_processes_1_thread"]
                                          ["wall_seconds"], 3),
            "max_relative_difference": _close(outputs["one_process_1_thread"],
                                              outputs["torchrun_2_processes_1_thread"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="random:NAME architecture")
    parser.add_argument("--checkpoints", type=int, default=4)
    parser.add_argument("--rank-files", type=int, default=600)
    parser.add_argument("--probe-files", type=int, default=300)
    parser.add_argument("--only", choices=("sweep", "rank"), default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not FSDD.is_dir():
        raise SystemExit(f"FSDD recordings not found at {FSDD}")
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                    "python": platform.python_version(), "platform": platform.platform()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "note": "wall clock of whole CLI commands (start-up included); load average before "
                "and after each; on a shared machine compare only within one run",
    }
    with tempfile.TemporaryDirectory(prefix="bench-scale-out-") as tmp:
        work = Path(tmp)
        if args.only in (None, "sweep"):
            result["sweep"] = bench_sweep(work, args)
            print(json.dumps(result["sweep"], indent=1), flush=True)
        if args.only in (None, "rank"):
            result["rank"] = bench_rank(work, args)
            print(json.dumps(result["rank"], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
