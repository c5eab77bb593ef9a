"""Choosing runs without labels: do label-free metrics rank pretraining runs where the loss cannot?

Runs of the built-in encoder that differ in what makes their losses incomparable (targets,
codebook size, masking, learning rate), a second seed, the untrained initialisation, and runs
meant to go wrong while their loss still falls, each trained for 600 steps from a recipe file
in ``benchmarks/recipes/`` (``speechrank pretrain --recipe``) on the demo's corpus, with the
rank monitor on the corpus's held-out test clips at every checkpoint (every 50 steps; its
collapse alarm is recorded, not acted on). Each run is then swept, as its own model, into ONE
store with the demo's rank data and its in-domain ks, pr and sid probes
(:func:`speechrank.demo.sweep_config`), measuring RankMe-t and its relatives and the cluster
metrics. Phases, each resumable:

    # the demo's corpus (60 minutes, probe splits 2:1:3), or an existing one
    speechrank corpus /work/model-selection/corpus --minutes 60 --probe-splits 2:1:3
    # one run: train (resumes), then sweep (into the shared store; resumes)
    python benchmarks/bench_model_selection.py train default --work /work/model-selection
    python benchmarks/bench_model_selection.py sweep default --work /work/model-selection
    # or every run, split between two workers that run side by side (--threads 1 each)
    python benchmarks/bench_model_selection.py all --share 0/2 --work /work/model-selection &
    python benchmarks/bench_model_selection.py all --share 1/2 --work /work/model-selection &
    # the JSON (benchmarks/results/model_selection.json)
    python benchmarks/bench_model_selection.py collect --work /work/model-selection

``collect`` writes a ``runs`` list (recipe, seed, steps, and per swept checkpoint the step, the
training record, the probes' test scores per layer and the metrics per layer), an
``across_runs`` block (per metric and probe task, across runs at the last step: the Spearman
rho with its bootstrap interval and the regret of choosing the best run by the metric, from
:func:`speechrank.analysis.across_runs.compare_runs`) and a ``collapse`` block (per run, the
steps at which the monitor's alarm fired against the steps at which the probes and the loss
show damage). ks rests on about 500 test clips (standard error about 0.02), and differences
under about 0.1 between runs are within the noise of one seed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

from _record import environment
from _runs import read_log, training_summary

HERE = Path(__file__).resolve().parent
RECIPES = HERE / "recipes"
RESULT = HERE / "results" / "model_selection.json"

STEPS = 600
SAVE_EVERY = 50
#: The checkpoints every run is swept at; runs that go wrong are swept between them too, to
#: place the damage.
SWEEP_STEPS = (0, 200, 400, 600)
DAMAGE_STEPS = (100, 300, 500)
#: Runs meant to go wrong while their loss still falls (see their recipe files).
WRONG_RUNS = ("shuffled_targets", "hubert_k2", "lr_ramp_x10")
HEALTHY_RUN = "default"
TASKS = ("ks", "pr", "sid")
#: The label-free metrics measured (every pooling of the demo: sum, mean, frames; the cluster
#: metrics on the frames pooling only).
METRICS = ("rankme", "rankme_centered", "erank_cov", "alpha_req", "kmeans_inertia",
           "davies_bouldin")
#: k of the cluster metrics: 1,024 (whetten2025) costs minutes per layer on one core
#: (benchmarks/results/cluster_cost.json); 50 is the default recipe's number of targets.
N_CLUSTERS = 50
MAIN_SCORE = {"ks": "accuracy", "sid": "accuracy", "pr": "frame_accuracy"}


def recipe_names() -> list[str]:
    return sorted(path.stem for path in RECIPES.glob("*.toml"))


def _write_json(path: Path, payload: Any) -> None:
    from speechrank import jsonsafe

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(jsonsafe.dumps(payload, indent=1) + "\n")  # NaN (no value) as null
    tmp.replace(path)


# ----------------------------------------------------------------------------- train

def train(name: str, work: Path, threads: int) -> None:
    """Train one recipe for 600 steps with the rank monitor (resumes a killed run)."""
    from speechrank.errors import SpeechrankError
    from speechrank.monitor.pretrain import pretrain_with_monitor
    from speechrank.pretrain import TrainRun, load_recipe

    run = work / "runs" / name
    done, failed = run / "bench-train.json", run / "bench-train-error.json"
    if done.is_file() or failed.is_file():
        print(f"[{name}] trained already", flush=True)
        return
    load_before = os.getloadavg()
    started = time.perf_counter()
    try:
        plan = TrainRun(steps=STEPS, save_every=SAVE_EVERY, resume=True, num_threads=threads,
                        log_every=10)
        summary, _ = pretrain_with_monitor(
            f"synthetic:{work / 'corpus'}#split=pretrain", run, monitor_data="auto", run=plan,
            config=load_recipe(RECIPES / f"{name}.toml"), progress=False)
    except SpeechrankError as err:  # a diverging recipe ends its run; its checkpoints stay
        _write_json(failed, {"error": str(err), **environment(load_before)})
        print(f"[{name}] stopped: {err}", flush=True)
        return
    _write_json(done, {"summary": summary.to_dict(), "wall_seconds":
                       round(time.perf_counter() - started, 1), **environment(load_before)})
    print(f"[{name}] {summary.final_step} steps, {summary.steps_per_second:.2f} steps/s, "
          f"final loss {summary.final_loss:.3f}", flush=True)


# ----------------------------------------------------------------------------- sweep

def sweep_settings(work: Path) -> dict[str, Any]:
    """The demo's sweep (rank data, ks, pr and sid probes) with the metrics of this benchmark."""
    from speechrank.demo import DemoSettings, sweep_config

    raw = sweep_config(work / "corpus", DemoSettings(out=work, fit_workers=1,
                                                    checkpoint_workers=1))
    raw["rank"].update(metrics=list(METRICS), n_clusters=N_CLUSTERS)
    raw["probe"] = [probe for probe in raw["probe"] if probe["name"] in TASKS]
    # two workers side by side already fill two cores: one checkpoint at a time each
    raw["options"]["memo_gb"] = 1.0
    return raw


def sweep_steps(name: str) -> tuple[int, ...]:
    return tuple(sorted(SWEEP_STEPS + (DAMAGE_STEPS if name in WRONG_RUNS else ())))


def sweep(name: str, work: Path, threads: int) -> None:
    """Sweep the run's checkpoints at :func:`sweep_steps` into the shared store (resumes)."""
    import torch

    from speechrank.sweep import SweepConfig
    from speechrank.sweep import sweep as run_sweep

    torch.set_num_threads(threads)
    run = work / "runs" / name
    paths = [run / f"checkpoint-{step:06d}" for step in sweep_steps(name)]
    paths = [path for path in paths if path.is_dir()]
    listing = work / "sweeps" / f"{name}.txt"  # a list file: the run is the checkpoints' parent
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{path}\n" for path in paths))
    load_before = os.getloadavg()
    started = time.perf_counter()
    summary = run_sweep(listing, SweepConfig.from_dict(sweep_settings(work)),
                        work / "results.sqlite",
                        log=lambda line: print(f"[{name}] {line}", flush=True))
    _write_json(work / "sweeps" / f"{name}.json", {
        "checkpoints": [path.name for path in paths], "units_reused": summary.units_reused,
        "wall_seconds": round(time.perf_counter() - started, 1), **environment(load_before)})


def run_all(share: str, work: Path, threads: int) -> None:
    """Train then sweep every ``n``-th recipe (``share`` = ``i/n``), the runs meant to go
    wrong first."""
    index, count = (int(part) for part in share.split("/"))
    names = sorted(recipe_names(), key=lambda n: (n not in WRONG_RUNS, n != HEALTHY_RUN, n))
    for name in names[index::count]:
        train(name, work, threads)
        sweep(name, work, threads)


# ----------------------------------------------------------------------------- collect

def _layer_key(layer: str) -> tuple[int, Any]:
    return (0, int(layer)) if layer.isdigit() else (1, layer)


def _checkpoints(store: Any, name: str) -> list[dict[str, Any]]:
    """Per swept checkpoint: step, training record, probe test scores and metrics per layer."""
    out = []
    for record in store.checkpoints(run=name):
        rows = store.rows(model=name, checkpoint=record.checkpoint)
        if not rows:  # recorded when its run's sweep began, not measured yet
            continue
        probes: dict[str, dict[str, dict[str, float]]] = {}
        metrics: dict[str, dict[str, float]] = {}
        for row in rows:
            if row.task in TASKS and row.split == "test" and row.metric == MAIN_SCORE[row.task]:
                entry = {"score": round(row.value, 4)}
                se = row.conventions.get("standard_error")
                if isinstance(se, (int, float)):
                    entry["standard_error"] = round(float(se), 4)
                probes.setdefault(row.task, {})[row.layer] = entry
            elif not row.task and row.metric in METRICS:
                key = f"{row.metric}/{row.pooling}"
                metrics.setdefault(key, {})[row.layer] = round(row.value, 6)
        out.append({
            "step": record.step, "checkpoint": record.checkpoint,
            "training": dict(record.training),
            "probes": {task: dict(sorted(layers.items(), key=lambda kv: _layer_key(kv[0])))
                       for task, layers in sorted(probes.items())},
            "metrics": {key: dict(sorted(layers.items(), key=lambda kv: _layer_key(kv[0])))
                        for key, layers in sorted(metrics.items())},
        })
    return sorted(out, key=lambda c: c["step"])


def _loss_curve(log: list[dict[str, Any]]) -> list[list[float]]:
    """``[step, loss, masked accuracy]`` of every logged training window (10 steps)."""
    return [[r["step"], round(r["loss"], 4), round(r["accuracy"], 4)]
            for r in log if r["event"] == "train"]


def _monitor_series(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The monitor's RankMe-t per layer and live alarm flags at every checkpoint."""
    series = []
    for r in log:
        if r["event"] != "monitor":
            continue
        values = r["values"]
        rank = {key.rsplit("_", 1)[1]: round(value, 3) for key, value in values.items()
                if key.startswith("rankme_t/layer_")}
        flagged = sorted((key.rsplit("_", 1)[1] for key, value in values.items()
                          if key.startswith("collapse/layer_") and value == 1.0),
                         key=_layer_key)
        series.append({"step": r["step"], "rankme_t": rank, "alarm_layers": flagged})
    return series


def run_record(name: str, work: Path, store: Any) -> dict[str, Any]:
    run = work / "runs" / name
    log = read_log(run)
    summary = training_summary(run)
    failed = run / "bench-train-error.json"
    recipe = summary["recipe"]
    return {
        "run": name,
        "recipe_file": f"benchmarks/recipes/{name}.toml",
        "recipe": recipe,
        "seed": recipe.get("seed"),
        "steps": summary["steps"],
        "training": {k: v for k, v in summary.items() if k not in ("recipe", "steps")},
        "train_error": json.loads(failed.read_text())["error"] if failed.is_file() else None,
        "loss_curve": _loss_curve(log),
        "monitor": _monitor_series(log),
        "checkpoints": _checkpoints(store, name),
    }


def _best(checkpoint: dict[str, Any], task: str) -> tuple[float, float] | None:
    """The best layer's test score and its standard error at a checkpoint."""
    layers = checkpoint["probes"].get(task)
    if not layers:
        return None
    best = max(layers.values(), key=lambda entry: entry["score"])
    return best["score"], best.get("standard_error", 0.0)


def _replayed_alarms(series: list[dict[str, Any]], patience: tuple[int, ...]
                     ) -> dict[str, Any]:
    """The monitor's collapse alarm replayed on the logged RankMe-t values (the detector's
    defaults: floor 2, drop 0.5 from the best so far), so a resumed run reads as one run."""
    from speechrank.monitor import CollapseDetector, CollapseStop

    detector = CollapseDetector()
    fired: list[dict[str, Any]] = []
    stops: dict[str, int | None] = {f"patience_{p}": None for p in patience}
    for entry in series:
        alarms = detector.check(entry["step"], {f"rankme_t/layer_{layer}": (layer, value)
                                                 for layer, value in entry["rankme_t"].items()})
        if alarms:
            fired.append({"step": entry["step"],
                          "layers": {a.layer: {"value": round(a.value, 3), "reason": a.reason,
                                               "best": None if a.best is None
                                               else round(a.best, 3), "streak": a.streak}
                                     for a in alarms}})
        for p in patience:
            if stops[f"patience_{p}"] is None and CollapseStop(patience=p)(alarms):
                stops[f"patience_{p}"] = entry["step"]
    return {"fired": fired, "first_step": fired[0]["step"] if fired else None,
            "would_stop_at": stops}


def _probe_damage(record: dict[str, Any], healthy: dict[str, Any] | None) -> dict[str, Any]:
    """Per task, the first swept step at which the run's best layer scores more than two
    standard errors below its own initialisation (step 0), and below the healthy default
    run at the same step."""
    checkpoints = record["checkpoints"]
    by_step = {c["step"]: c for c in healthy["checkpoints"]} if healthy else {}
    damage: dict[str, Any] = {}
    for task in TASKS:
        first = next((c for c in checkpoints if c["step"] == 0), None)
        start = _best(first, task) if first else None
        below_init = below_default = None
        for checkpoint in checkpoints:
            now = _best(checkpoint, task)
            if now is None or checkpoint["step"] == 0:
                continue
            if below_init is None and start is not None and \
                    now[0] < start[0] - 2 * max(now[1], start[1]):
                below_init = checkpoint["step"]
            other = by_step.get(checkpoint["step"])
            ref = _best(other, task) if other else None
            if below_default is None and ref is not None and \
                    now[0] < ref[0] - 2 * max(now[1], ref[1]):
                below_default = checkpoint["step"]
        damage[task] = {"below_its_initialisation": below_init,
                        "below_the_default_run": below_default}
    return damage


def _loss_damage(curve: list[list[float]]) -> dict[str, Any]:
    """When the loss shows damage: the first step (after the first 100) whose 50-step mean
    loss is higher than the previous 50 steps'; and how far the loss fell overall."""
    losses = {int(step): loss for step, loss, _ in curve}
    steps = sorted(losses)
    rise = None
    for end in range(150, (steps[-1] if steps else 0) + 1, 50):
        now = [losses[s] for s in steps if end - 50 < s <= end]
        before = [losses[s] for s in steps if end - 100 < s <= end - 50]
        if now and before and statistics.fmean(now) > statistics.fmean(before):
            rise = end
            break
    first = [losses[s] for s in steps if s <= 50]
    last = [losses[s] for s in steps if s > steps[-1] - 50] if steps else []
    return {"first_rise_step": rise,
            "mean_loss_first_50_steps": round(statistics.fmean(first), 4) if first else None,
            "mean_loss_last_50_steps": round(statistics.fmean(last), 4) if last else None}


def collapse_block(records: list[dict[str, Any]]) -> dict[str, Any]:
    healthy = next((r for r in records if r["run"] == HEALTHY_RUN), None)
    runs = {}
    for record in records:
        runs[record["run"]] = {
            "meant_to_go_wrong": record["run"] in WRONG_RUNS,
            "alarm": _replayed_alarms(record["monitor"], (1, 2)),
            "live_alarm_steps": [e["step"] for e in record["monitor"] if e["alarm_layers"]],
            "probe_damage": _probe_damage(record, healthy),
            "loss": _loss_damage(record["loss_curve"]),
            "train_error": record["train_error"],
        }
    return {
        "alarm": "the rank monitor of `speechrank pretrain` (RankMe-t, sum pooling, of every "
                 "layer on up to 500 held-out test clips / 600 s), checked at every checkpoint "
                 f"(every {SAVE_EVERY} steps); it fires when a layer's value is below 2 or "
                 "more than 0.5 below its best so far",
        "definitions": {
            "would_stop_at": "the step at which CollapseStop(patience=1) (stop at the "
                             "first alarm) or CollapseStop(patience=2) (the default, "
                             "`--stop-on-collapse`) would have ended the run",
            "below_its_initialisation": "first swept step whose best-layer test score is more "
                                        "than 2 standard errors below the same run's step 0",
            "below_the_default_run": "first swept step whose best-layer test score is more "
                                     "than 2 standard errors below the default run's at "
                                     "that step",
            "first_rise_step": "first step (from 150) whose 50-step mean training loss is "
                               "above the previous 50 steps' (None: the loss kept falling)",
        },
        "runs": runs,
    }


def across_runs_block(store_path: Path) -> dict[str, Any]:
    """Across runs at step 600, per signal (metric/pooling, or the loss) and task, on the
    probe's main test score: rho with its bootstrap interval and the regret of choosing the
    best run, per layer and over layers (:func:`compare_runs`, the ``correlate --across runs``
    analysis)."""
    from speechrank.analysis import AnalysisOptions
    from speechrank.analysis.across_runs import compare_runs
    from speechrank.errors import SpeechrankError
    from speechrank.store import ResultStore

    with ResultStore(store_path, create=False) as store:
        try:
            result = compare_runs(store, step=STEPS,
                                  options=AnalysisOptions(metrics=list(METRICS),
                                                          tasks=list(TASKS)))
        except SpeechrankError as err:  # an unfinished store: fewer than 2 runs at step 600
            return {"step": STEPS, "error": str(err)}
    full = result.to_dict()

    def main_score(entry: dict[str, Any]) -> bool:
        return MAIN_SCORE.get(entry["task"]) == entry["score"]

    summary_keys = ("signal", "task", "score", "n_layers", "rho_median", "rho_min", "rho_max",
                    "n_significant", "regret_fraction_mean", "regret_fraction_se", "n_best")
    record_keys = ("signal", "task", "layer", "n_runs", "spearman", "spearman_low",
                   "spearman_high", "picked", "best", "picked_score", "best_score", "regret",
                   "regret_fraction")
    return {
        "step": full["step"], "runs": full["runs"], "left_out": full["left_out"],
        "settings": full["settings"], "notes": full["notes"],
        "summary": [{k: e[k] for k in summary_keys} for e in full["summary"] if main_score(e)],
        "records": [{k: e[k] for k in record_keys} for e in full["records"] if main_score(e)],
    }


#: Runs that train at all and do not go wrong: what is left to rank once the broken runs
#: are told apart.
NOT_WORKING = (*WRONG_RUNS, "untrained")
WORKING_SIGNALS = ("rankme/sum", "rankme_centered/sum", "erank_cov/sum", "loss")


def working_runs_block(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Across the working runs only (every run but those meant to go wrong and the untrained
    one), at step 600: per signal and task, the median over layers of the Spearman rho with
    the probe's test score. Separating broken runs from working ones is one question; ordering
    working runs whose losses differ in kind (targets, codebook size, masking) is another."""
    from scipy.stats import spearmanr

    last = {}
    for record in records:
        final = [c for c in record["checkpoints"] if c["step"] == STEPS]
        if record["run"] not in NOT_WORKING and final:
            last[record["run"]] = final[0]
    runs = sorted(last)
    out: dict[str, dict[str, float | None]] = {}
    for signal in WORKING_SIGNALS:
        for task in TASKS:
            rhos = []
            for layer in sorted(last[runs[0]]["probes"].get(task, {}), key=_layer_key) \
                    if runs else []:
                scores = [last[r]["probes"][task][layer]["score"] for r in runs]
                values = ([-last[r]["training"]["loss"] for r in runs] if signal == "loss"
                          else [last[r]["metrics"][signal][layer] for r in runs])
                rhos.append(float(spearmanr(values, scores)[0]))
            out.setdefault(signal, {})[task] = (round(statistics.median(rhos), 3)
                                                if rhos else None)
    return {"runs": runs, "step": STEPS,
            "what": "median over layers of the Spearman rho with the probe's test score "
                    "(minus the loss for the loss)", "rho_median": out}


#: Label-free layer choices reported per run: RankMe-t's highest layer (the paper's negative
#: result), the defaults users take, and effective-rank and spectral-decay alternatives
#: measured here (IsoScore needs the participation ratio, which these sweeps do not measure;
#: the demo's correlate reports it).
LAYER_SELECTORS = ("rankme/sum", "rankme/frames", "erank_cov/frames", "erank_cov/sum",
                   "alpha_req/frames", "rankme_centered/frames", "last layer", "first layer")


def layer_choice_block(store_path: Path) -> dict[str, Any]:
    """Per run, task and label-free selector: the regret of choosing each checkpoint's layer
    by it, as a fraction of the score range over layers (mean and standard error over the
    swept checkpoints), from ``speechrank correlate --json`` on the benchmark's store."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "correlate.json"
        subprocess.run([sys.executable, "-m", "speechrank", "correlate", str(store_path),
                        "--metrics", ",".join(METRICS), "--no-detail", "--bootstrap", "200",
                        "--json", str(target)], check=True, stdout=subprocess.DEVNULL)
        full = json.loads(target.read_text())
    out: dict[str, Any] = {}
    for entry in full["layer_choice_summary"]:
        if entry["selector"] not in LAYER_SELECTORS or \
                MAIN_SCORE.get(entry["task"]) != entry["score"] or entry["split"] != "test":
            continue
        out.setdefault(entry["model"], {}).setdefault(entry["task"], {})[entry["selector"]] = {
            "n_checkpoints": entry["n_checkpoints"], "n_best": entry["n_best"],
            "regret_fraction_mean": entry["regret_fraction_mean"],
            "regret_fraction_se": entry["regret_fraction_se"]}
    return {"selectors": list(LAYER_SELECTORS),
            "definition": "regret = (best - chosen) / (best - worst) of the probe's test score "
                          "across a checkpoint's layers; mean and standard error over the "
                          "run's swept checkpoints",
            "runs": out}


def collect(work: Path, note: str, out: Path = RESULT) -> None:
    from speechrank.store import ResultStore

    load_before = os.getloadavg()
    store_path = work / "results.sqlite"
    with ResultStore(store_path, create=False) as store:
        records = [run_record(name, work, store) for name in recipe_names()
                   if (work / "runs" / name / "train_log.jsonl").is_file()]
    phases = {}
    for name in recipe_names():
        for phase, path in (("train", work / "runs" / name / "bench-train.json"),
                            ("sweep", work / "sweeps" / f"{name}.json")):
            if path.is_file():
                payload = json.loads(path.read_text())
                phases.setdefault(name, {})[phase] = {
                    "wall_seconds": payload.get("wall_seconds"),
                    "torch_threads": payload.get("torch_threads"),
                    "load_average_before": payload.get("load_average_before"),
                    "load_average_after": payload.get("load_average_after")}
    result = {
        "benchmark": "bench_model_selection",
        "what": "runs of the built-in encoder (600 steps each, recipes in benchmarks/recipes) "
                "swept into one store with the demo's rank data and its ks, pr and sid probes; "
                "across runs at the last step, does a label-free metric or the loss rank the "
                "runs as the probes do, and does the collapse alarm see a run that goes wrong?",
        "note": note,
        "store": str(store_path),
        "steps": STEPS, "save_every": SAVE_EVERY, "sweep_steps": list(SWEEP_STEPS),
        "damage_steps": list(DAMAGE_STEPS), "runs_meant_to_go_wrong": list(WRONG_RUNS),
        "metrics": list(METRICS), "n_clusters": N_CLUSTERS, "tasks": list(TASKS),
        "collected_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "phases": phases,
        "runs": records,
        "across_runs": across_runs_block(store_path),
        "working_runs": working_runs_block(records),
        "layer_choice": layer_choice_block(store_path),
        "collapse": collapse_block(records),
        **environment(load_before),
    }
    _write_json(out, result)
    print(f"wrote {out} ({len(records)} runs)")


def _cell(value: float | None, digits: int = 2, sign: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


#: The README's rows: one pooling per metric (sum pooling is RankMe-t; the cluster metrics
#: exist on frames only), then the free signals.
TABLE_SIGNALS = ("rankme/sum", "rankme_centered/sum", "erank_cov/sum", "alpha_req/sum",
                 "kmeans_inertia/frames", "davies_bouldin/frames", "loss", "train_accuracy")


def table(result: dict[str, Any]) -> str:
    """The README's tables (markdown) from a collected JSON."""
    lines = []
    block = result["across_runs"]
    if "error" in block:
        return f"across runs: {block['error']}"
    lines.append(f"Across {len(block['runs'])} runs at step {block['step']}: median over "
                 "layers of the Spearman rho with the probe's test score (layers whose "
                 "interval excludes 0 / layers), and the regret of picking the run by the "
                 "signal, as a fraction of the score range over runs (mean ± SE over layers).")
    lines.append("")
    lines.append("| signal | " + " | ".join(TASKS) + " |")
    lines.append("|---|" + "---:|" * len(TASKS))
    summary = {(e["signal"], e["task"]): e for e in block["summary"]}
    for signal in TABLE_SIGNALS:
        cells = []
        for task in TASKS:
            e = summary.get((signal, task))
            if e is None:
                cells.append("n/a")
                continue
            cells.append(f"{_cell(e['rho_median'])} ({e['n_significant']}/{e['n_layers']}); "
                         f"{_cell(e['regret_fraction_mean'], sign=False)} ± "
                         f"{_cell(e['regret_fraction_se'], sign=False)}")
        lines.append(f"| {signal} | " + " | ".join(cells) + " |")
    working = result.get("working_runs")
    if working:
        lines.append("")
        lines.append(f"The {len(working['runs'])} working runs only ("
                     + ", ".join(working["runs"]) + "): median over layers of rho.")
        lines.append("")
        lines.append("| signal | " + " | ".join(TASKS) + " |")
        lines.append("|---|" + "---:|" * len(TASKS))
        for signal, cells in working["rho_median"].items():
            lines.append(f"| {signal} | " + " | ".join(_cell(cells[t]) for t in TASKS) + " |")
    lines.append("")
    lines.append("| run | alarm fires | patience 1 stops | patience 2 stops (default) "
                 "| ks / pr / sid below step 0 | ks / pr / sid below default "
                 "| loss first rises | loss first 50 → last 50 |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, run in result["collapse"]["runs"].items():
        damage = run["probe_damage"]

        def steps(key: str, damage: dict[str, Any] = damage) -> str:
            return " / ".join(str(damage[t][key]) if damage[t][key] is not None else "-"
                              for t in TASKS)

        loss = run["loss"]
        lines.append(
            f"| {name} | {run['alarm']['first_step'] or '-'} | "
            f"{run['alarm']['would_stop_at']['patience_1'] or '-'} | "
            f"{run['alarm']['would_stop_at']['patience_2'] or '-'} | "
            f"{steps('below_its_initialisation')} | {steps('below_the_default_run')} | "
            f"{loss['first_rise_step'] or '-'} | "
            f"{_cell(loss['mean_loss_first_50_steps'], sign=False)} → "
            f"{_cell(loss['mean_loss_last_50_steps'], sign=False)} |")
    choice = result.get("layer_choice", {}).get("runs", {})
    if choice:
        lines.append("")
        lines.append("| layer chosen by | " + " | ".join(TASKS) + " |")
        lines.append("|---|" + "---:|" * len(TASKS))
        for selector in result["layer_choice"]["selectors"]:
            cells = []
            for task in TASKS:
                values = [runs[task][selector]["regret_fraction_mean"] for runs in choice.values()
                          if task in runs and selector in runs[task]
                          and runs[task][selector]["regret_fraction_mean"] is not None]
                cells.append(f"{statistics.median(values):.2f} ({len(values)} runs)"
                             if values else "n/a")
            lines.append(f"| {selector} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("train", "sweep"):
        p = sub.add_parser(command)
        p.add_argument("recipe", choices=recipe_names())
        p.add_argument("--work", type=Path, required=True)
        p.add_argument("--threads", type=int, default=1)
    a = sub.add_parser("all")
    a.add_argument("--share", default="0/1", help="i/n: every n-th recipe from the i-th")
    a.add_argument("--work", type=Path, required=True)
    a.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("collect")
    c.add_argument("--work", type=Path, required=True)
    c.add_argument("--note", default="")
    c.add_argument("--out", type=Path, default=RESULT, help="where the JSON goes")
    t = sub.add_parser("table", help="print the README's tables from a collected JSON")
    t.add_argument("json", type=Path, nargs="?", default=RESULT)
    args = parser.parse_args()
    if args.command == "train":
        train(args.recipe, args.work, args.threads)
    elif args.command == "sweep":
        sweep(args.recipe, args.work, args.threads)
    elif args.command == "all":
        run_all(args.share, args.work, args.threads)
    elif args.command == "table":
        print(table(json.loads(args.json.read_text())))
    else:
        collect(args.work, args.note, args.out)


if __name__ == "__main__":
    main()
