"""Do the demo's conclusions survive a seed? The whole demo recipe with several seeds.

Each seed runs :func:`speechrank.demo.run_demo` end to end in its own directory (its own
corpus, pretraining run, sweep and correlation analysis: the seed drives all of them) and
records, per probe task and domain:

- the median within-layer Spearman rho between RankMe-t (rankme, sum pooling) and the probe's
  main score over the checkpoints, its range over layers and the number of layers and
  checkpoints it rests on;
- the per-phase medians (collapse, recovery) and the best-layer and checkpoint agreement;
- the training progress of :mod:`speechrank.analysis.progress`: the best layer's test score at
  the first and last checkpoint with standard errors, the gain in standard errors, and whether
  the upper layers end higher than halfway.

Seeds can run in separate processes (``--seed N``, one JSON each under ``--work``) and be
collected afterwards (``--collect``), which writes ``benchmarks/results/demo_seeds.json`` with
every seed's values and, per task and domain, the spread across seeds and which conclusions
hold in all of them. torch runs on ``--threads`` threads (recorded: floating-point results are
reproducible on one machine at the same thread count), and the load average is recorded.

    .venv/bin/python benchmarks/bench_demo_seeds.py --seed 0 --work /tmp/demo-seeds &
    .venv/bin/python benchmarks/bench_demo_seeds.py --seed 1 --work /tmp/demo-seeds &
    .venv/bin/python benchmarks/bench_demo_seeds.py --seed 2 --work /tmp/demo-seeds
    .venv/bin/python benchmarks/bench_demo_seeds.py --collect --work /tmp/demo-seeds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "demo_seeds.json"
HEADLINE_FIELDS = ("n_checkpoints", "n_layers", "within_rho_median", "within_rho_min",
                   "within_rho_max", "within_n", "collapse_rho_median", "collapse_n",
                   "recovery_rho_median", "recovery_n", "best_layer_agreement",
                   "best_layer_n", "checkpoint_agreement", "checkpoint_n")


def run_seed(seed: int, work: Path, threads: int) -> Path:
    from speechrank.demo import DemoSettings, headline_rows, run_demo

    torch.set_num_threads(threads)
    settings = DemoSettings(out=work / f"seed-{seed}", seed=seed)
    load_before = os.getloadavg()
    started = time.perf_counter()
    summary = run_demo(settings, progress=False, log=lambda line: print(f"[seed {seed}] {line}",
                                                                         flush=True))
    record = {
        "seed": seed,
        "settings": {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path)
                         else v) for k, v in dataclasses.asdict(settings).items()},
        "torch_threads": threads,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "stages": {k: round(v, 1) for k, v in summary.stages.items()},
        # stages found finished in --work (a demo directory copied there): their times are
        # not in "stages"
        "reused": summary.reused,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "headline": [{"task": h["task"], "domain": h["domain"], "score": h["score"],
                      **{k: h[k] for k in HEADLINE_FIELDS}}
                     for h in headline_rows(summary.headline)],
        "progress": summary.progress,
    }
    path = work / f"seed-{seed}.json"
    path.write_text(json.dumps(record, indent=2, allow_nan=True))
    return path


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


#: The verdict fields kept per (seed, task) in the JSON (see speechrank.analysis.baselines).
VERDICT_FIELDS = ("task", "domain", "score", "metric_rho", "step_rho", "loss_rho", "partial",
                  "partial_low", "partial_high", "regret_metric", "regret_metric_se",
                  "regret_last", "regret_first", "regret_loss", "outcome", "told_more",
                  "sentence")
#: The label-free layer choices kept per (seed, task): RankMe-t's highest layer (the paper's
#: negative result), IsoScore's most isotropic layer (Rudman et al. 2022), the last and the
#: first layer.
LAYER_SELECTORS = ("rankme/sum", "isoscore/frames", "last layer", "first layer")


def seed_verdicts(work: Path, seed: int) -> dict[str, Any]:
    """RankMe-t (sum) against the step and the loss, and the label-free layer choices, on one
    seed's store: ``speechrank correlate``'s headline verdicts, as the CLI computes them."""
    from speechrank.analysis import AnalysisOptions, correlate
    from speechrank.analysis.correlate import headline_verdicts

    report = correlate(work / f"seed-{seed}" / "results.sqlite", AnalysisOptions(seed=0))
    layers = [r.to_dict() for r in report.layer_choice_summary]
    return {
        "seed": seed,
        "verdicts": [{k: v.to_dict()[k] for k in VERDICT_FIELDS}
                     for v in headline_verdicts(report)],
        "layer_choice": [{k: r[k] for k in ("task", "domain", "selector", "n_checkpoints",
                                             "n_best", "regret_fraction_median",
                                             "regret_fraction_mean", "regret_fraction_se")}
                         for r in layers if r["selector"] in LAYER_SELECTORS],
    }


def collect(work: Path) -> dict[str, Any]:
    seeds = [json.loads(p.read_text()) for p in sorted(work.glob("seed-*.json"))]
    if not seeds:
        raise SystemExit(f"no seed-*.json under {work}")
    spread: list[dict[str, Any]] = []
    keys = sorted({(h["task"], h["domain"]) for s in seeds for h in s["headline"]},
                  key=lambda k: (k[1] != "in", k[0]))
    for task, domain in keys:
        rows = [next((h for h in s["headline"] if (h["task"], h["domain"]) == (task, domain)),
                     None) for s in seeds]
        moved = [next((p for p in s["progress"] if (p["task"], p["domain"]) == (task, domain)),
                      None) for s in seeds]
        rhos = _finite([r["within_rho_median"] for r in rows if r])
        gains = [p for p in moved if p]
        spread.append({
            "task": task, "domain": domain,
            "within_rho_median_by_seed": [r["within_rho_median"] if r else None for r in rows],
            "within_rho_median_range": [min(rhos), max(rhos)] if rhos else None,
            "positive_in_all_seeds": bool(rhos) and len(rhos) == len(seeds)
            and all(v > 0 for v in rhos),
            "best_layer_agreement_by_seed": [r["best_layer_agreement"] if r else None
                                             for r in rows],
            "collapse_rho_median_by_seed": [r["collapse_rho_median"] if r else None
                                            for r in rows],
            "recovery_rho_median_by_seed": [r["recovery_rho_median"] if r else None
                                            for r in rows],
            "gain_by_seed": [round(p["gain"], 4) for p in gains],
            "gain_in_se_by_seed": [round(p["gain_in_se"], 2) for p in gains],
            "gain_at_least_0_05_and_3_se_in_all_seeds": len(gains) == len(seeds) and all(
                p["gain"] >= 0.05 and p["gain_in_se"] >= 3 for p in gains),
            "upper_layers_improved_by_seed": [p["upper_improved"] for p in gains],
            "points_per_correlation": rows[0]["n_checkpoints"] if rows[0] else None,
        })
    result = {
        "benchmark": "bench_demo_seeds",
        "what": "the demo recipe end to end with several seeds; RankMe-t (rankme, sum) vs each "
                "probe's main test score; progress = best layer at the first vs last checkpoint",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "seeds": seeds,
        "spread": spread,
        "verdicts": [seed_verdicts(work, s["seed"]) for s in seeds
                     if (work / f"seed-{s['seed']}" / "results.sqlite").is_file()],
        "wall_seconds_median": statistics.median(s["wall_seconds"] for s in seeds),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, help="run the demo with this seed")
    parser.add_argument("--work", type=Path, default=Path("/tmp/speechrank-demo-seeds"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--collect", action="store_true",
                        help="gather the seeds' JSON into benchmarks/results/demo_seeds.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.collect:
        result = collect(args.work)
        for row in result["spread"]:
            print(f"{row['task']:>10} {row['domain']:>3}  rho by seed "
                  f"{row['within_rho_median_by_seed']}  gain {row['gain_by_seed']} "
                  f"({row['gain_in_se_by_seed']} SE)  upper improved "
                  f"{row['upper_layers_improved_by_seed']}")
        print(f"wrote {RESULT}")
    elif args.seed is not None:
        print(f"wrote {run_seed(args.seed, args.work, args.threads)}")
    else:
        parser.error("give --seed N or --collect")


if __name__ == "__main__":
    main()
