"""`make demo` from a fresh clone, then once more with nothing new: wall time, stages, speed.

The demo's time target is stated for a fresh clone with the virtual environment already built
(building it is a one-off that depends on the network and the disk, not on speechrank). This
script clones the repository's HEAD into a scratch directory, copies an existing ``.venv``
into it (installing the clone itself in editable mode, without dependencies), runs ``make
demo`` under ``/usr/bin/time -v`` and then ``make demo`` again (a finished demo: everything
reused), and records the wall times, the peak memory, the printed stage times, the
pretraining steps per second (this machine's speed moves by a third and more between days, so
every time is read beside it) and the load average around each run.

    python benchmarks/bench_demo_fresh_clone.py run --venv .venv
    python benchmarks/bench_demo_fresh_clone.py record DIR   # the JSON from an earlier run's logs
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULT = HERE / "results" / "demo_fresh_clone.json"


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _gnu_time(path: Path) -> dict[str, Any]:
    """Wall seconds and peak memory from a ``/usr/bin/time -v`` report."""
    text = path.read_text()
    wall = re.search(r"Elapsed \(wall clock\) time .*?: (?:(\d+):)?(\d+):([\d.]+)", text)
    if wall is None:
        raise SystemExit(f"{path}: no wall clock time")
    hours, minutes, seconds = wall.groups()
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {"wall_seconds": round(int(hours or 0) * 3600 + int(minutes) * 60
                                  + float(seconds), 2),
            "max_rss_mib": round(int(rss.group(1)) / 1024, 1) if rss else None}


def _stages(log: str) -> dict[str, Any]:
    """The demo's printed stage times and pretraining speed."""
    out: dict[str, Any] = {}
    times = re.search(r"time: corpus (\d+) s, pretrain (\d+) s, sweep (\d+) s, report (\d+) s",
                      log)
    if times:
        out["stage_seconds"] = dict(zip(("corpus", "pretrain", "sweep", "report"),
                                        (int(t) for t in times.groups()), strict=True))
    speed = re.search(r"pretrain: steps 0 -> (\d+) \(([\d.]+) steps/s\)", log)
    if speed:
        out["pretrain_steps"] = int(speed.group(1))
        out["pretrain_steps_per_second"] = float(speed.group(2))
    workers = re.search(r"sweeping (\d+) checkpoints in (\d+) worker processes", log)
    if workers:
        out["checkpoints"], out["checkpoint_workers"] = (int(g) for g in workers.groups())
    out["reused"] = "reused:" in log
    return out


def record(directory: Path) -> dict[str, Any]:
    """The JSON from a run's files: ``demo.log``, ``demo-time.txt``, ``rerun.log``,
    ``rerun-time.txt``, ``commit`` and the ``uptime`` lines around the runs."""
    def uptime(name: str) -> list[float] | None:
        path = directory / name
        if not path.is_file():
            return None
        match = re.search(r"load average: ([\d.]+), ([\d.]+), ([\d.]+)", path.read_text())
        return [float(x) for x in match.groups()] if match else None

    return {
        "benchmark": "bench_demo_fresh_clone",
        "what": __doc__.splitlines()[0],
        "commit": (directory / "commit").read_text().strip(),
        "cpus": os.cpu_count(),
        "demo": {**_gnu_time(directory / "demo-time.txt"),
                 **_stages((directory / "demo.log").read_text()),
                 "load_average_before": uptime("demo-load-before.txt"),
                 "load_average_after": uptime("demo-load-after.txt")},
        "rerun": {**_gnu_time(directory / "rerun-time.txt"),
                  **_stages((directory / "rerun.log").read_text()),
                  "load_average_after": uptime("rerun-load-after.txt")},
    }


def run(venv: Path, keep: Path | None) -> Path:
    """Clone, run ``make demo`` twice, and leave the logs in a directory (returned)."""
    work = keep or Path(tempfile.mkdtemp(prefix="speechrank-fresh-"))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    clone = work / "clone"
    if clone.exists():
        shutil.rmtree(clone)
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    (logs / "commit").write_text(head + "\n")
    shutil.copytree(venv, clone / ".venv", symlinks=True)
    subprocess.run([str(clone / ".venv" / "bin" / "python"), "-m", "pip", "install", "-q",
                    "--no-deps", "--no-build-isolation", "-e", str(clone)], check=True)
    (clone / ".venv" / ".speechrank-installed").touch()
    for name in ("demo", "rerun"):
        if name == "demo":
            (logs / "demo-load-before.txt").write_text(
                "load average: " + ", ".join(map(str, _load())) + "\n")
        with open(logs / f"{name}.log", "w") as out:
            subprocess.run(["/usr/bin/time", "-v", "-o", str(logs / f"{name}-time.txt"),
                            "make", "demo"], cwd=clone, stdout=out, stderr=subprocess.STDOUT,
                           check=True)
        (logs / f"{name}-load-after.txt").write_text(
            "load average: " + ", ".join(map(str, _load())) + "\n")
    return logs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="clone, run make demo twice, write the JSON")
    r.add_argument("--venv", type=Path, default=REPO / ".venv")
    r.add_argument("--keep", type=Path, help="work here (kept) instead of a scratch dir")
    r.add_argument("--out", type=Path, default=RESULT)
    c = sub.add_parser("record", help="the JSON from an earlier run's logs")
    c.add_argument("logs", type=Path)
    c.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    logs = run(args.venv.resolve(), args.keep) if args.command == "run" else args.logs
    result = record(logs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
