"""Pretraining steps per second on one and on two torch threads, interleaved in one run.

Whether the demo would finish sooner by sweeping early checkpoints while pretraining goes on
depends on how well pretraining uses the second core: if two threads train barely faster than
one, a one-thread trainer beside a one-thread sweep worker wins; if they train nearly twice as
fast, both cores are already busy. Each side trains the demo's default recipe for ``--steps``
steps from scratch on a finished demo's corpus (``--demo``, read only) into a scratch directory,
``--rounds`` times, the sides alternating.

    .venv/bin/python benchmarks/bench_pretrain_threads.py --demo /work/demo-seeds/seed-0
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _record import environment

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
RESULT = HERE / "results" / "pretrain_threads.json"


def main() -> None:
    from speechrank.pretrain import TrainRun, pretrain

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    load_before = os.getloadavg()
    data = f"synthetic:{args.demo / 'corpus'}#split=pretrain"
    runs = []
    for round_ in range(args.rounds):
        for threads in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                load = round(os.getloadavg()[0], 2)
                started = time.perf_counter()
                summary = pretrain(data, Path(tmp) / "run",
                                   TrainRun(steps=args.steps, num_threads=threads),
                                   progress=False)
                runs.append({"round": round_, "threads": threads,
                             "wall_s": round(time.perf_counter() - started, 2),
                             "steps_per_second": round(summary.steps_per_second, 3),
                             "load_before": load})
                print(json.dumps(runs[-1]), flush=True)
    speed = {threads: statistics.median(r["steps_per_second"] for r in runs
                                        if r["threads"] == threads) for threads in (1, 2)}
    result = {
        "benchmark": "bench_pretrain_threads.py",
        "what": ("the demo's default pretraining recipe from scratch, steps per second on one "
                 "and two torch threads, interleaved; medians over rounds"),
        "steps": args.steps,
        **environment(load_before),
        "median_steps_per_second": {str(k): v for k, v in speed.items()},
        "two_over_one_thread": round(speed[2] / speed[1], 2),
        "runs": runs,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("median_steps_per_second",
                                             "two_over_one_thread")}))


if __name__ == "__main__":
    main()
