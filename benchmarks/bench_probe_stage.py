"""The demo's probe stage per checkpoint, before and after the batched solver, in one run.

"Probe time per demo checkpoint" is the six probe units of a checkpoint as the demo's sweep
runs them: after its rank unit, which encodes the utterances the probes then replay from
memory, so a probe unit's time is its frames, fits and scores. The code before is a past commit
(``--before``, default the main of the day the batched-probe work was asked for: scikit-learn's
lbfgs, one checkpoint at a time on two threads with two fit processes); the code after is this
checkout, as the demo runs it (the batched solver, checkpoints side by side in two one-thread
worker processes) and one checkpoint at a time on two threads (``checkpoint_workers = 1``), which
is the like-for-like comparison of the probes.

Each side sweeps the same checkpoints of a finished demo (``--demo``, read only; symlinked into
a scratch run) with that side's own ``speechrank.demo.sweep_config`` into a fresh store and a
fresh feature cache, in a fresh Python process whose ``PYTHONPATH`` is that side's ``src``. A
unit's seconds are read from the sweep's log line (both versions print one per unit; the store
of the commit before recorded only its commit time). The sides alternate within a round and the
order rotates between rounds; every timing records the load average around it.

    .venv/bin/python benchmarks/bench_probe_stage.py --demo /work/demo-seeds/seed-0
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from _record import environment

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULT = HERE / "results" / "probe_stage.json"
#: main when the batched probes were asked for (scikit-learn fits, serial sweep).
BEFORE = "6395535"
#: The sides: (code, options merged into the sweep config's ``[options]``).
SIDES: dict[str, tuple[str, dict[str, Any]]] = {
    "before": ("before", {}),
    "after": ("after", {}),
    "after-serial": ("after", {"checkpoint_workers": 1}),
}

#: Run in each side's own interpreter: that side's demo sweep, timed, with its unit log lines.
DRIVER = """
import json, sys, time
from pathlib import Path
import torch
from speechrank.demo import DemoSettings, sweep_config
from speechrank.sweep import SweepConfig, sweep
corpus, run, scratch, extra = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
raw = sweep_config(corpus, DemoSettings(out=scratch))
raw["options"].update(json.loads(extra))
raw["options"]["cache_dir"] = str(scratch / "feature-cache")
config = SweepConfig.from_dict(raw)
lines = []
started = time.perf_counter()
sweep(run, config, scratch / "results.sqlite", log=lines.append)
wall = time.perf_counter() - started
import speechrank.demo
print(json.dumps({"wall_s": round(wall, 2), "torch_threads": torch.get_num_threads(),
                  "module": speechrank.demo.__file__,
                  "options": raw["options"], "lines": lines}))
"""
#: A unit's log line in both versions: ``NAME (step N): rank|DATA -> R rows in S s ...``.
UNIT_LINE = re.compile(r"^(\S+) \(step [^)]*\): (rank|probe)\|(.*?) -> \d+ rows in "
                       r"([0-9.]+) s")


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def before_source(commit: str, into: Path) -> Path:
    """The ``src`` tree of ``commit``, unpacked from ``git archive`` into ``into``."""
    archive = into / "code.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive),
                    commit, "src"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "code", filter="data")
    return into / "code" / "src"


def scratch_run(demo: Path, checkpoints: list[str], into: Path) -> Path:
    """A run directory holding symlinks to the chosen checkpoints of the demo's run."""
    run = into / "run"
    run.mkdir()
    for name in checkpoints:
        source = demo / "run" / name
        if not source.is_dir():
            raise SystemExit(f"no checkpoint {source}")
        (run / name).symlink_to(source)
    return run


def time_side(side: str, sources: dict[str, Path], demo: Path, run: Path, scratch: Path
              ) -> dict[str, Any]:
    code, options = SIDES[side]
    out = scratch / side
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(sources[code])}
    load = _load()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", DRIVER, str(demo / "corpus"), str(run),
                           str(out), json.dumps(options)], env=env, capture_output=True,
                          text=True, check=False)
    process_s = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"side {side} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result.pop("module") != str(sources[code] / "speechrank" / "demo.py"):
        raise SystemExit(f"side {side} did not run its own code")
    units: dict[str, dict[str, float]] = {}
    for line in result.pop("lines"):
        match = UNIT_LINE.match(line)
        if match:
            checkpoint, kind, name, seconds = match.groups()
            label = "rank" if kind == "rank" else name
            units.setdefault(checkpoint, {})[label] = float(seconds)
    probe_s = [sum(v for k, v in unit.items() if k != "rank") for unit in units.values()]
    return {"side": side, **result, "process_s": round(process_s, 2),
            "probe_unit_s_per_checkpoint": round(statistics.mean(probe_s), 2),
            "rank_unit_s_per_checkpoint": round(statistics.mean(
                unit["rank"] for unit in units.values()), 2),
            "units": units, "load_before": load, "load_after": _load()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True)
    parser.add_argument("--before", default=BEFORE)
    parser.add_argument("--checkpoints", nargs="+",
                        default=["checkpoint-000000", "checkpoint-000200",
                                 "checkpoint-000400", "checkpoint-000600"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="probe-stage-") as tmp:
        scratch = Path(tmp)
        sources = {"before": before_source(args.before, scratch), "after": REPO / "src"}
        run = scratch_run(args.demo, args.checkpoints, scratch)
        sides = list(SIDES)
        runs = []
        for round_ in range(args.rounds):
            shift = round_ % len(sides)
            for side in sides[shift:] + sides[:shift]:
                runs.append({"round": round_, **time_side(side, sources, args.demo, run,
                                                          scratch)})
                print(json.dumps(runs[-1]), flush=True)
    n = len(args.checkpoints)

    def median(key: str, side: str, per: float = 1.0) -> float:
        return round(statistics.median(r[key] for r in runs if r["side"] == side) / per, 2)

    probe = {side: median("probe_unit_s_per_checkpoint", side) for side in SIDES}
    wall = {side: median("wall_s", side, n) for side in SIDES}
    result = {
        "benchmark": "bench_probe_stage.py",
        "what": ("the demo's sweep of each checkpoint (its rank unit, then its six probe units "
                 "replaying the rank unit's frames), fresh store and feature cache per side, "
                 "each side in its own process; medians over rounds of the probe units' "
                 "seconds per checkpoint (from the unit log lines; in the process sides a "
                 "worker's one-thread time, two workers at once) and of the sweep's wall time "
                 "per checkpoint"),
        "before_commit": args.before,
        "sides": {side: {"code": code, "options": options}
                  for side, (code, options) in SIDES.items()},
        "checkpoints": args.checkpoints,
        "demo": args.demo.name,
        **environment(load_before),
        "probe_unit_seconds_per_checkpoint": probe,
        "sweep_wall_seconds_per_checkpoint": wall,
        "probe_before_over_after_serial": round(probe["before"] / probe["after-serial"], 2),
        "sweep_wall_before_over_after": round(wall["before"] / wall["after"], 2),
        "runs": runs,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in (
        "probe_unit_seconds_per_checkpoint", "sweep_wall_seconds_per_checkpoint",
        "probe_before_over_after_serial", "sweep_wall_before_over_after")}))


if __name__ == "__main__":
    main()
