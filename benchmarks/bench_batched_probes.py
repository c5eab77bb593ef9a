"""The logistic probes' batched torch solver against scikit-learn's lbfgs: equivalence and time.

Three parts (``--parts``; each replaces its own section of the JSON and records its own load
average), both solvers in one process, interleaved (the order rotates between checkpoints and
rounds). The demo's checkpoints (``--demo DIR``, read only; default steps 0, 300 and 600) are
first encoded into a scratch feature cache (not timed).

1. ``probes``: the demo's six probes of each checkpoint run as its sweep runs them
   (``run_probe`` with the demo's recipes, a frame memo and a fit cache per side so that
   ks-unseen reuses ks's fits), on the cached features, ``--rounds`` times per side:
   ``sklearn-2`` (scikit-learn with two fit processes: today's demo), ``sklearn-1``,
   ``torch-1`` and ``torch-2`` (the batched solver on one and two torch threads). What the
   solver changes, without the encoder's time and its noise on a shared machine.
2. ``fits``: the arrays of every logistic probe (the demo's, and FSDD keyword and speaker
   probes of ``random:tiny``, the golden files' setting) fitted by both solvers (a) with the
   probe's own recipe and (b) with a tight one (``--tight-tol``; float64 for the demo's
   probes), so that (b) measures the solvers at the optimum and (a) what a user gets. Per
   (layer, C): the objective of each solution (float64, on the same standardised train
   arrays) and its relative difference, the test predictions of each; per layer: the chosen
   C and the test score difference over its standard error. As a yardstick for (a),
   scikit-learn is also run cold (no warm start along the C grid): the reference against
   itself at the recipe's tolerance.
3. ``sweeps``: each checkpoint swept end to end with the demo's config into fresh stores, once
   per solver (the encoder included, so its time and noise too); the stores' test scores
   compared in standard errors.

    .venv/bin/python benchmarks/bench_batched_probes.py --demo /work/demo-seeds/seed-0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _record import environment
from _runs import timed_sweep

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

RESULT = HERE / "results" / "batched_probes.json"
FSDD = HERE.parent.parent / "shared" / "data" / "fsdd"
#: Sides of the sweep part: (solver, fit_workers; None: the demo's).
SIDES = {"sklearn": ("sklearn", None), "torch": ("torch", None)}
#: Sides of the probe timing: (solver, fit_workers, torch threads). ``sklearn-2`` is today's
#: demo (two fit processes).
PROBE_SIDES = {"sklearn-2": ("sklearn", 2, 2), "sklearn-1": ("sklearn", 1, 2),
               "torch-1": ("torch", 1, 1), "torch-2": ("torch", 1, 2)}
SCORES = ("accuracy", "frame_accuracy")


def _load() -> float:
    return round(os.getloadavg()[0], 2)


# ----------------------------------------------------------------------------- part 1: sweeps

def sweep_once(demo: Path, checkpoint: str, side: str, scratch: Path) -> dict[str, Any]:
    from speechrank.demo import DemoSettings, sweep_config

    solver, workers = SIDES[side]
    out = scratch / f"{checkpoint}-{side}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    settings = DemoSettings(out=out)
    raw = sweep_config(demo / "corpus", settings)
    raw["options"]["fit_workers"] = workers or settings.fit_workers
    for probe in raw["probe"]:
        probe["solver"] = solver
    load = _load()
    wall, units = timed_sweep(demo / "run" / checkpoint, raw, out / "s.sqlite")
    return {"checkpoint": checkpoint, "side": side, "solver": solver,
            "fit_workers": raw["options"]["fit_workers"], "wall_seconds": round(wall, 2),
            "probe_seconds": round(sum(v for k, v in units.items() if k.startswith("probe")),
                                   2),
            "unit_seconds": units, "load_before": load, "load_after": _load(),
            "store": str(out / "s.sqlite"), "cache": str(out / "feature-cache")}


def _test_scores(store: str) -> dict[tuple[str, str, str], tuple[float, float]]:
    from speechrank.store import ResultStore

    with ResultStore(store, create=False) as db:
        return {(r.task, r.layer, r.metric): (r.value, r.conventions.get("standard_error",
                                                                         math.nan))
                for r in db.rows(split="test") if r.metric in SCORES}


# ----------------------------------------------------------------------------- part 2: fits

def _predict(fit: Any, model: Any, x: np.ndarray) -> np.ndarray:
    scaler, _, dtype = fit.predictor
    return model.predict(scaler.transform(np.asarray(x, dtype=np.float64)).astype(dtype))


def _cold_sklearn(fit: Any, splits: dict, config: Any) -> list[Any]:
    """scikit-learn at every C of the grid from zero (no warm start), on the same arrays."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    scaler, _, dtype = fit.predictor
    x, y = splits["train"]
    x = scaler.transform(np.asarray(x, dtype=np.float64)).astype(dtype)
    models = []
    for c in sorted(config.c_grid):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            models.append(LogisticRegression(C=c, tol=config.tol, max_iter=config.max_iter)
                          .fit(x, y))
    return models


def compare(problems: list[Any], config: Any, *, order: tuple[str, str],
            cold: bool) -> dict[str, Any]:
    """Both solvers (and, with ``cold``, scikit-learn without warm starts) on one probe's
    layers with ``config``; see the module docstring."""
    from threadpoolctl import threadpool_limits

    from speechrank.probes.linear import fit_logistic_probes, path_objectives
    from speechrank.probes.stderr import clustered_accuracy_se

    splits = [p.splits for p in problems]
    fits, seconds, loads = {}, {}, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core each: scikit-learn fits one problem at a time
    try:
        for solver in order:
            recipe = dataclasses.replace(config, solver=solver)
            loads[solver] = _load()
            started = time.perf_counter()
            fits[solver] = fit_logistic_probes(splits, recipe)
            seconds[solver] = round(time.perf_counter() - started, 3)
    finally:
        torch.set_num_threads(threads)
    layers = []
    for index, problem in enumerate(problems):
        ref, ours = fits["sklearn"][index], fits["torch"][index]
        with threadpool_limits(limits=1):
            obj_ref = path_objectives(ref, problem.splits, config)
            obj_ours = path_objectives(ours, problem.splits, config)
        rel = [(b - a) / abs(a) for a, b in zip(obj_ref, obj_ours, strict=True)]
        x_test, y_test = problem.splits["test"]
        same_c = [float(np.mean(_predict(ref, m, x_test) == _predict(ours, n, x_test)))
                  for m, n in zip(ref.path, ours.path, strict=True)]
        chosen_ref = _predict(ref, ref.predictor[1], x_test)
        chosen_ours = _predict(ours, ours.predictor[1], x_test)
        se = clustered_accuracy_se(ref.correct["test"], problem.clusters["test"])
        diff = ours.scores["test"]["accuracy"] - ref.scores["test"]["accuracy"]
        record: dict[str, Any] = {
            "layer": problem.layer, "C_sklearn": ref.chosen_c, "C_torch": ours.chosen_c,
            "objective_relative_difference": rel,
            "objective_lower": ["torch" if d < 0 else "sklearn" if d > 0 else "equal"
                                for d in rel],
            "test_predictions_identical_per_c": same_c,
            "test_predictions_identical": float(np.mean(chosen_ref == chosen_ours)),
            "n_test": len(y_test),
            "test_accuracy": [ref.scores["test"]["accuracy"], ours.scores["test"]["accuracy"]],
            "test_standard_error": se,
            "test_difference_in_se": diff / se if se > 0 else (0.0 if diff == 0 else math.inf),
            "n_iter": [ref.n_iter, ours.n_iter],
            "converged": [ref.converged, ours.converged],
        }
        if cold:
            models = _cold_sklearn(ref, problem.splits, config)
            with threadpool_limits(limits=1):
                cold_obj = path_objectives(dataclasses.replace(ref, path=models),
                                           problem.splits, config)
            record["sklearn_cold_vs_warm"] = {
                "objective_relative_difference": [(b - a) / abs(a) for a, b in
                                                  zip(obj_ref, cold_obj, strict=True)],
                "test_predictions_identical_per_c": [
                    float(np.mean(_predict(ref, m, x_test) == _predict(ref, n, x_test)))
                    for m, n in zip(ref.path, models, strict=True)]}
        layers.append(record)
    return {"recipe": {"c_grid": list(config.c_grid), "max_iter": config.max_iter,
                       "tol": config.tol, "fit_dtype": config.fit_dtype},
            "seconds": seconds, "load_before": loads, "layers": layers,
            "summary": summarise(layers)}


def summarise(layers: list[dict[str, Any]]) -> dict[str, Any]:
    rel = [abs(v) for r in layers for v in r["objective_relative_difference"]]
    out = {
        "fits": len(rel),
        "max_abs_objective_relative_difference": max(rel),
        "same_c": sum(r["C_sklearn"] == r["C_torch"] for r in layers),
        "layers": len(layers),
        "min_test_predictions_identical": min(r["test_predictions_identical"] for r in layers),
        "pooled_test_predictions_identical": (
            sum(r["test_predictions_identical"] * r["n_test"] for r in layers)
            / sum(r["n_test"] for r in layers)),
        "max_abs_test_difference_in_se": max(abs(r["test_difference_in_se"]) for r in layers),
        "all_converged": [all(all(c) for c in (r["converged"][0] for r in layers)),
                          all(all(c) for c in (r["converged"][1] for r in layers))],
    }
    cold = [r["sklearn_cold_vs_warm"] for r in layers if "sklearn_cold_vs_warm" in r]
    if cold:
        out["sklearn_cold_vs_warm"] = {
            "max_abs_objective_relative_difference": max(
                abs(v) for r in cold for v in r["objective_relative_difference"]),
            "min_test_predictions_identical_per_c": min(
                v for r in cold for v in r["test_predictions_identical_per_c"])}
    out["torch_vs_sklearn_min_test_predictions_identical_per_c"] = min(
        v for r in layers for v in r["test_predictions_identical_per_c"])
    return out


def demo_probes(demo: Path) -> dict[str, tuple[Any, Any, str]]:
    """Every logistic probe of the demo's sweep config: its recipe, dataset and task."""
    from speechrank.audio import load_dataset
    from speechrank.demo import DemoSettings, sweep_config
    from speechrank.probes import resolve_task
    from speechrank.sweep import probe_recipe

    raw = sweep_config(demo / "corpus", DemoSettings(out=demo))
    out = {}
    for probe in raw["probe"]:
        options = {k: v for k, v in probe.items() if k not in ("name", "task", "data",
                                                               "domain", "solver")}
        dataset = load_dataset(probe["data"])
        recipe = probe_recipe(resolve_task(probe["task"], dataset).kind, options)
        out[probe["name"]] = (recipe, dataset, probe["task"])
    return out


def _with_solver(recipe: Any, solver: str) -> Any:
    return dataclasses.replace(recipe, logistic=dataclasses.replace(recipe.logistic,
                                                                     solver=solver))


def time_probes(demo: Path, checkpoint: str, cache: Path, rounds: int, number: int
                ) -> list[dict[str, Any]]:
    """The demo's six probes of one checkpoint, features already cached: each side runs them
    as the sweep does (``run_probe`` per probe, one frame memo and one fit cache per side and
    checkpoint, so ks-unseen reuses ks's fits), ``rounds`` times, the sides' order rotating."""
    from speechrank.encoders import load_encoder
    from speechrank.extract import FrameMemo
    from speechrank.probes import FitCache, ProbeRun, run_probe

    encoder = load_encoder(str(demo / "run" / checkpoint))
    probes = demo_probes(demo)
    threads = torch.get_num_threads()
    sides = list(PROBE_SIDES)
    out = []
    for round_ in range(rounds):
        shift = (number + round_) % len(sides)
        for side in sides[shift:] + sides[:shift]:
            solver, workers, side_threads = PROBE_SIDES[side]
            torch.set_num_threads(side_threads)
            memo, fits = FrameMemo(), FitCache()
            seconds, load = {}, _load()
            try:
                for name, (recipe, dataset, task) in probes.items():
                    started = time.perf_counter()
                    run_probe(encoder, dataset, task,
                              run=ProbeRun(config=_with_solver(recipe, solver), cache_dir=cache,
                                           memo=memo, fits=fits, fit_workers=workers),
                              seed=0, progress=False)
                    seconds[name] = round(time.perf_counter() - started, 3)
            finally:
                torch.set_num_threads(threads)
            out.append({"checkpoint": checkpoint, "round": round_, "side": side,
                        "probe_seconds": round(sum(seconds.values()), 2),
                        "per_probe": seconds, "fits_reused": fits.reused,
                        "load_before": load, "load_after": _load()})
            print(checkpoint, side, out[-1]["probe_seconds"], seconds, load, flush=True)
    return out


def fill_cache(demo: Path, checkpoint: str, cache: Path) -> None:
    """Encode what the demo's probes need of one checkpoint into ``cache`` (not timed)."""
    from speechrank.encoders import load_encoder
    from speechrank.probes.run import ProbeRun, logistic_problems

    encoder = load_encoder(str(demo / "run" / checkpoint))
    for recipe, dataset, task in demo_probes(demo).values():
        logistic_problems(encoder, dataset, task, run=ProbeRun(config=recipe, cache_dir=cache),
                          seed=0)


def fit_part(args: argparse.Namespace, caches: dict[str, Path], scratch: Path,
             save: Any) -> dict[str, Any]:
    """The ``fits`` part: FSDD's probes first, then every logistic probe of each demo
    checkpoint; ``save`` gets the section so far after every probe (``complete`` false until
    the last), so that a run cut short leaves what it measured."""
    from speechrank.encoders import load_encoder
    from speechrank.probes.run import ProbeRun, logistic_problems

    load_before = os.getloadavg()
    fits: list[dict[str, Any]] = []

    def record(data: str, probe: str, recipe: Any, problems: list[Any], number: int,
               tight_dtype: str | None, **extra: Any) -> None:
        order = ("sklearn", "torch") if number % 2 == 0 else ("torch", "sklearn")
        tight = dataclasses.replace(recipe.logistic, tol=args.tight_tol,
                                    max_iter=args.tight_max_iter,
                                    fit_dtype=tight_dtype or recipe.logistic.fit_dtype)
        entry = {"data": data, **extra, "probe": probe,
                 "dims": {s: list(np.shape(v[0])) for s, v in problems[0].splits.items()},
                 "classes": len(np.unique(problems[0].splits["train"][1])),
                 "recipe": compare(problems, recipe.logistic, order=order, cold=True),
                 "tight": compare(problems, tight, order=order, cold=False)}
        print(extra.get("checkpoint", data), probe, json.dumps(entry["recipe"]["summary"]),
              entry["recipe"]["seconds"], json.dumps(entry["tight"]["summary"]), flush=True)
        fits.append(entry)
        save(section(complete=False))

    def section(complete: bool) -> dict[str, Any]:
        return {
            **environment(load_before), "complete": complete, **summarise_fits(fits, args)}

    if args.fsdd.is_dir():
        from speechrank.probes.config import UtteranceProbeConfig

        for number, task in enumerate(("ks", "sid")):
            run = ProbeRun(config=UtteranceProbeConfig(),
                           cache_dir=args.fsdd_cache or scratch / "fsdd-cache")
            recipe, problems = logistic_problems("random:tiny", f"fsdd:{args.fsdd}", task,
                                                 run=run, seed=0, max_seconds=1.0)
            record("fsdd random:tiny (max_seconds 1.0, seed 0)", task, recipe, problems,
                   number, None)
    for number, checkpoint in enumerate(args.checkpoints):
        encoder = load_encoder(str(args.demo / "run" / checkpoint))
        for name, (recipe, dataset, task) in demo_probes(args.demo).items():
            _, problems = logistic_problems(encoder, dataset, task,
                                            run=ProbeRun(config=recipe,
                                                         cache_dir=caches[checkpoint]), seed=0)
            record("demo", name, recipe, problems, number, "float64", checkpoint=checkpoint)
    return section(complete=True)


def summarise_fits(fits: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The worst case over every probe of the ``fits`` part, at the recipe's tolerance (with
    scikit-learn against itself, cold against warm started, as the yardstick) and at the tight
    one."""
    def worst(part: str, key: str, fn: Any = max) -> Any:
        return fn(f[part]["summary"][key] for f in fits)

    cold = [f["recipe"]["summary"]["sklearn_cold_vs_warm"] for f in fits]
    return {
        "tight": {"tol": args.tight_tol, "max_iter": args.tight_max_iter,
                  "fit_dtype": "float64 (the demo's probes), the recipe's (FSDD)"},
        "equivalence": {
            part: {"max_abs_objective_relative_difference":
                   worst(part, "max_abs_objective_relative_difference"),
                   "same_c": f"{sum(f[part]['summary']['same_c'] for f in fits)} of "
                             f"{sum(f[part]['summary']['layers'] for f in fits)}",
                   "min_test_predictions_identical":
                       worst(part, "min_test_predictions_identical", min),
                   "min_pooled_test_predictions_identical":
                       worst(part, "pooled_test_predictions_identical", min),
                   "max_abs_test_difference_in_se":
                       worst(part, "max_abs_test_difference_in_se"),
                   "min_test_predictions_identical_per_c":
                       worst(part, "torch_vs_sklearn_min_test_predictions_identical_per_c",
                             min)}
            for part in ("recipe", "tight")},
        "sklearn_cold_vs_warm_at_the_recipe": {
            "max_abs_objective_relative_difference": max(
                c["max_abs_objective_relative_difference"] for c in cold),
            "min_test_predictions_identical_per_c": min(
                c["min_test_predictions_identical_per_c"] for c in cold)},
        "fit_seconds": {part: {solver: round(sum(f[part]["seconds"][solver] for f in fits), 2)
                               for solver in ("sklearn", "torch")}
                        for part in ("recipe", "tight")},
        "fits": fits,
    }


def sweep_part(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    load_before = os.getloadavg()
    sweeps: list[dict[str, Any]] = []
    score_differences: list[dict[str, Any]] = []
    sides = list(SIDES)
    for number, checkpoint in enumerate(args.checkpoints):
        turn = sides[number % len(sides):] + sides[:number % len(sides)]
        runs = {side: sweep_once(args.demo, checkpoint, side, scratch) for side in turn}
        reference = _test_scores(runs["sklearn"]["store"])
        for side in ("torch",):
            variant = _test_scores(runs[side]["store"])
            for key, (value, se) in sorted(reference.items()):
                diff = variant[key][0] - value
                score_differences.append({
                    "checkpoint": checkpoint, "side": side, "task": key[0], "layer": key[1],
                    "metric": key[2], "sklearn": value, "difference": diff,
                    "in_standard_errors": diff / se if se > 0 else math.nan})
        for run in runs.values():
            print(run["checkpoint"], run["side"], run["probe_seconds"], run["unit_seconds"],
                  flush=True)
            run.pop("store")
            sweeps.append({k: v for k, v in run.items() if k != "cache"})
    in_se = [abs(d["in_standard_errors"]) for d in score_differences
             if math.isfinite(d["in_standard_errors"])]
    return {
        **environment(load_before),
        "probe_seconds_per_checkpoint": {
            side: [r["probe_seconds"] for r in sweeps if r["side"] == side] for side in SIDES},
        "test_scores_compared": len(score_differences),
        "max_abs_score_difference_in_se": max(in_se),
        "median_abs_score_difference_in_se": statistics.median(in_se),
        "sweeps": sweeps,
        "score_differences": score_differences,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=Path("/work/demo-seeds/seed-0"),
                        help="a finished demo directory (read only)")
    parser.add_argument("--checkpoints", nargs="+",
                        default=["checkpoint-000000", "checkpoint-000300", "checkpoint-000600"])
    parser.add_argument("--parts", nargs="+", default=["probes", "fits", "sweeps"],
                        choices=["probes", "fits", "sweeps"],
                        help="what to run; each replaces its own section of --out")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the probe timing")
    parser.add_argument("--tight-tol", type=float, default=1e-5)
    parser.add_argument("--tight-max-iter", type=int, default=3000)
    parser.add_argument("--fsdd", type=Path, default=FSDD,
                        help="the FSDD corpus (skipped when missing)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="feature cache for the demo's checkpoints (default: a scratch "
                             "one per checkpoint; a copy of the demo's own fills it at once)")
    parser.add_argument("--fsdd-cache", type=Path, default=None,
                        help="feature cache for the FSDD probes (default: a scratch one)")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    from speechrank.encoders import configure_cpu_threads

    configure_cpu_threads()
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result.update({"benchmark": "bench_batched_probes", "what": __doc__.split("\n\n")[0]})
    with tempfile.TemporaryDirectory(prefix="speechrank-batched-") as tmp:
        scratch = Path(tmp)
        caches = {c: args.cache or scratch / f"cache-{c}" for c in args.checkpoints}
        if {"probes", "fits"} & set(args.parts):
            for checkpoint in args.checkpoints:
                fill_cache(args.demo, checkpoint, caches[checkpoint])
        if "probes" in args.parts:
            load_before = os.getloadavg()
            runs = [run for number, checkpoint in enumerate(args.checkpoints)
                    for run in time_probes(args.demo, checkpoint, caches[checkpoint],
                                           args.rounds, number)]
            medians = {side: {c: statistics.median(r["probe_seconds"] for r in runs
                                                   if r["side"] == side and r["checkpoint"] == c)
                              for c in args.checkpoints} for side in PROBE_SIDES}
            result["probes"] = {
                **environment(load_before),
                "sides": {side: {"solver": v[0], "fit_workers": v[1], "torch_threads": v[2]}
                          for side, v in PROBE_SIDES.items()},
                "median_probe_seconds_per_checkpoint": medians,
                "mean_of_medians": {side: round(statistics.mean(m.values()), 2)
                                    for side, m in medians.items()},
                "runs": runs}
            print(json.dumps(result["probes"]["mean_of_medians"]), flush=True)
        if "fits" in args.parts:
            result["fits"] = fit_part(args, caches, scratch,
                                      save=lambda part: _write(args.out, {**result,
                                                                          "fits": part}))
            print(json.dumps(result["fits"]["equivalence"], indent=1), flush=True)
        if "sweeps" in args.parts:
            result["sweeps"] = sweep_part(args, scratch)
    _write(args.out, result)


def _write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
