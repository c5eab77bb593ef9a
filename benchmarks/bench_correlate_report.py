"""The demo's last stage (correlate, training progress, the HTML report and the two JSON files)
timed on a finished demo store, for one or more source trees side by side.

Each side runs in a process of its own with its own ``PYTHONPATH`` (``--side NAME=SRC``, e.g.
the ``src`` of another checkout to compare against), the sides interleaved for ``--rounds``
rounds on a copy of the store. Recorded per run: wall seconds and process CPU seconds of
correlate and of the report, and the load average before and after (on a shared machine the
CPU seconds are the comparable number; the wall seconds are what a user waits).

    .venv/bin/python benchmarks/bench_correlate_report.py --store speechrank-demo/results.sqlite \\
        --side before=../main/src --side after=src
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "correlate_report.json"


def inner(store: str, out: str) -> None:
    """One timed run of the demo's last stage (as :func:`speechrank.demo.run_demo` runs it)."""
    from speechrank import jsonsafe
    from speechrank.analysis import AnalysisOptions, correlate
    from speechrank.analysis.progress import training_progress
    from speechrank.report import write_report
    from speechrank.store import ResultStore

    load = os.getloadavg()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with ResultStore(store, create=False) as opened:
        report = correlate(opened, AnalysisOptions(seed=0))
        wall1, cpu1 = time.perf_counter(), time.process_time()
        moved = [p.to_dict() for p in training_progress(opened.rows(split="test"))]
        write_report(opened, Path(out) / "report", correlation=report, title="demo")
    (Path(out) / "correlation.json").write_text(jsonsafe.dumps(report.to_dict(), indent=2))
    (Path(out) / "progress.json").write_text(jsonsafe.dumps(moved, indent=2))
    wall2, cpu2 = time.perf_counter(), time.process_time()
    print(json.dumps({
        "correlate_wall_s": round(wall1 - wall0, 2), "correlate_cpu_s": round(cpu1 - cpu0, 2),
        "report_wall_s": round(wall2 - wall1, 2), "report_cpu_s": round(cpu2 - cpu1, 2),
        "stage_wall_s": round(wall2 - wall0, 2), "stage_cpu_s": round(cpu2 - cpu0, 2),
        "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "correlation_json_bytes": (Path(out) / "correlation.json").stat().st_size}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="a finished demo store (copied first)")
    parser.add_argument("--side", action="append", default=[],
                        help="NAME=SRC: a source tree to time (repeatable)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--inner", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(*args.inner)
        return
    sides = dict(s.split("=", 1) for s in args.side) or {"this": str(HERE.parent / "src")}
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        store = Path(scratch) / "results.sqlite"
        shutil.copy(args.store, store)
        for round_ in range(args.rounds):
            for name, src in sides.items():
                out = Path(scratch) / f"{name}-{round_}"
                out.mkdir()
                env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
                done = subprocess.run([sys.executable, __file__, "--inner", str(store),
                                       str(out)], env=env, check=True, capture_output=True,
                                      text=True)
                record = {"side": name, "src": src, "round": round_,
                          **json.loads(done.stdout.strip().splitlines()[-1])}
                print(json.dumps(record))
                runs.append(record)
    payload = {"benchmark": "bench_correlate_report", "store": str(args.store),
               "what": "the demo's correlate + report stage (correlate, training progress, "
                       "HTML report, correlation.json, progress.json), wall and CPU seconds",
               "cpus": os.cpu_count(), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
