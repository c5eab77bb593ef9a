"""What the benchmarks read back from runs: a run directory of ``speechrank pretrain`` (its log,
``train_log.jsonl``, and recipe, the first checkpoint's ``config.json``), and the wall time of
a one-checkpoint sweep with each unit's seconds from its log lines."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

_UNIT_LINE = re.compile(r"(probe\|\S+|rank)\S* -> \d+ rows in ([\d.]+) s")


def timed_sweep(checkpoint: Path, raw: dict[str, Any], store: Path
                ) -> tuple[float, dict[str, float]]:
    """Sweep one checkpoint with the sweep config ``raw`` into ``store``: the wall seconds and
    each unit's seconds (``rank``, ``probe|NAME``) as the sweep logged them."""
    from speechrank.sweep import SweepConfig, sweep

    lines: list[str] = []
    started = time.perf_counter()
    sweep(checkpoint, SweepConfig.from_dict(raw), store, progress=False, log=lines.append)
    wall = time.perf_counter() - started
    units = {}
    for line in lines:
        found = _UNIT_LINE.search(line)
        if found:
            units[found.group(1)] = float(found.group(2))
    return wall, units


def read_log(run: Path) -> list[dict[str, Any]]:
    """Every record of the run's ``train_log.jsonl`` (empty when there is none)."""
    path = run / "train_log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def training_summary(run: Path) -> dict[str, Any]:
    """The run's recipe, targets, torch threads, last logged step, median training rate and
    final masked-prediction accuracy (with the accuracy of always guessing the most frequent
    target)."""
    config = json.loads((run / "checkpoint-000000" / "config.json").read_text())
    log = read_log(run)
    trains = [r for r in log if r["event"] == "train"]
    start = next((r for r in log if r["event"] in ("start", "resume")), {})
    rates = sorted(r["steps_per_second"] for r in trains)
    return {
        "recipe": config.get("pretraining", {}),
        "targets": start.get("targets"),
        "torch_threads": start.get("torch_threads"),
        "steps": trains[-1]["step"] if trains else 0,
        "steps_per_second_median": rates[len(rates) // 2] if rates else None,
        "final_masked_accuracy": trains[-1]["accuracy"] if trains else None,
        "final_majority_accuracy": trains[-1]["majority_accuracy"] if trains else None,
    }
