"""Which pretraining recipe makes the built-in encoder better than its random initialisation?

Each named recipe (:data:`RECIPES`, fields of :class:`speechrank.pretrain.TrainConfig`) trains
the default 4-layer encoder from the same initialisation (seed 0) on the pretraining split of a
demo-sized synthetic corpus, and its checkpoints are probed in-domain on the test split of a
second, noisy-pretraining corpus with the same probe speakers (keyword spotting ``ks``, and
frame phone accuracy ``pr`` with the demo's fast frame probe). Three steps:

    # 1. corpora: clean pretraining clips (the default) and noisy ones (speechrank 0.1)
    speechrank corpus /tmp/recipes/clean
    speechrank corpus /tmp/recipes/noisy --pretrain-snr-db same
    # 2. one run per recipe (``--threads 1`` lets two run side by side on 2 cores)
    python benchmarks/bench_pretrain_recipes.py train hubert_k50 --corpus /tmp/recipes/clean \
        --out /tmp/recipes/runs --steps 600
    # 3. probes of the chosen checkpoints, then the JSON
    python benchmarks/bench_pretrain_recipes.py probe /tmp/recipes/runs/hubert_k50 \
        --corpus /tmp/recipes/noisy --steps 0,300,600
    python benchmarks/bench_pretrain_recipes.py collect /tmp/recipes/runs/*

``collect`` writes ``benchmarks/results/pretrain_recipes.json``: for each run, its recipe (read
from the checkpoint), the training rate and final masked-prediction accuracy from its log, and
the probes' test scores per layer at each probed checkpoint. One seed per recipe: the keyword
test split holds 113 clips (binomial standard error about 0.045), so differences between
recipes below about 0.1 in ``ks`` are within noise; ``pr`` scores 5,000 frames of 22 sentences.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from _runs import training_summary

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "pretrain_recipes.json"

_LINEAR = {"schedule": "linear", "warmup_steps": 60}
_HUBERT = {"targets": "hubert", "input_snr_db": [0, 20], **_LINEAR}
#: The recipes compared (what differs from TrainConfig's fields; see the module docstring).
RECIPES: dict[str, dict[str, Any]] = {
    "bestrq_legacy": {"targets": "bestrq", "learning_rate": 1e-3, "warmup_steps": 200,
                      "mask_prob": 0.02, "mask_span": 20, "input_snr_db": None,
                      "unmasked_weight": 0.0, "schedule": "inverse_sqrt"},
    "bestrq_denoise": {"targets": "bestrq", "input_snr_db": [0, 20], "unmasked_weight": 0.0,
                       "learning_rate": 1e-3, "mask_prob": 0.02, "mask_span": 20, **_LINEAR},
    "hubert_k100_lr1e-3": {**_HUBERT, "num_clusters": 100, "unmasked_weight": 0.5,
                           "mask_prob": 0.05, "learning_rate": 1e-3},
    "hubert_k100_unmasked1": {**_HUBERT, "num_clusters": 100, "unmasked_weight": 1.0,
                              "mask_prob": 0.05, "learning_rate": 2e-3},
    "hubert_k50": {**_HUBERT, "num_clusters": 50, "unmasked_weight": 0.5, "mask_prob": 0.08,
                   "learning_rate": 2e-3},
    "hubert_k50_lr3e-3_unmasked1": {**_HUBERT, "num_clusters": 50, "unmasked_weight": 1.0,
                                    "mask_prob": 0.08, "learning_rate": 3e-3},
    "hubert_k50_batch8": {**_HUBERT, "num_clusters": 50, "unmasked_weight": 0.5,
                          "mask_prob": 0.08, "learning_rate": 2e-3, "batch_size": 8},
    "hubert_k100_deltas": {**_HUBERT, "num_clusters": 100, "kmeans_deltas": True,
                           "unmasked_weight": 0.5, "mask_prob": 0.08, "learning_rate": 2e-3},
}


def train(name: str, corpus: Path, out: Path, steps: int, saves: list[int],
          threads: int) -> None:
    from speechrank.pretrain import TrainConfig, TrainRun, pretrain

    fields = dict(RECIPES[name])
    if isinstance(fields.get("input_snr_db"), list):
        fields["input_snr_db"] = tuple(fields["input_snr_db"])
    summary = pretrain(f"synthetic:{corpus}#split=pretrain", out / name,
                       TrainRun(steps=steps, save_steps=saves, num_threads=threads, log_every=50),
                       config=TrainConfig(**fields), progress=False)
    print(f"{name}: {summary.steps_per_second:.2f} steps/s, masked-prediction accuracy "
          f"{summary.final_accuracy:.3f}")


def probe(run: Path, corpus: Path, steps: list[int], cache: Path) -> None:
    from speechrank.probes import ProbeRun, run_probe
    from speechrank.probes.config import FrameProbeConfig, LogisticConfig

    fast = FrameProbeConfig(logistic=LogisticConfig(c_grid=(0.01, 0.1, 1.0), max_iter=100),
                            max_frames={"train": 2500, "dev": 5000, "test": 5000})
    data = f"synthetic:{corpus}#manifest=train,dev,test"
    path = run / "probes.json"
    scores = json.loads(path.read_text()) if path.is_file() else {}
    for step in steps:
        checkpoint = run / f"checkpoint-{step:06d}"
        entry: dict[str, Any] = {}
        for task in ("ks", "pr"):
            result = run_probe(str(checkpoint), data, task,
                               run=ProbeRun(cache_dir=cache, config=fast if task == "pr" else None),
                               progress=False)
            test = result.scores("test")
            entry[task] = [round(test[layer], 4) for layer in sorted(test, key=int)]
        scores[str(step)] = entry
        print(run.name, step, json.dumps(entry), flush=True)
    path.write_text(json.dumps(scores, indent=1))


def _run_record(run: Path) -> dict[str, Any]:
    probes_path = run / "probes.json"
    return {
        "run": run.name,
        **training_summary(run),
        "test_scores_by_step": json.loads(probes_path.read_text())
        if probes_path.is_file() else {},
    }


def collect(runs: list[Path], note: str) -> None:
    result = {
        "benchmark": "bench_pretrain_recipes",
        "what": "test scores per layer (layers 0-4) of ks accuracy and pr frame accuracy "
                "(fast frame probe) at probed checkpoints, one seed per recipe",
        "note": note,
        "collected_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average_at_collection": [round(x, 2) for x in os.getloadavg()],
        "runs": [_run_record(run) for run in runs if (run / "train_log.jsonl").is_file()],
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULT} ({len(result['runs'])} runs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("recipe", choices=sorted(RECIPES))
    t.add_argument("--corpus", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--steps", type=int, default=600)
    t.add_argument("--saves", default="0,150,300,600")
    t.add_argument("--threads", type=int, default=1)
    p = sub.add_parser("probe")
    p.add_argument("run", type=Path)
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--steps", default="0,300,600")
    p.add_argument("--cache", type=Path, default=Path("/tmp/speechrank-recipe-cache"))
    c = sub.add_parser("collect")
    c.add_argument("runs", type=Path, nargs="+")
    c.add_argument("--note", default="")
    args = parser.parse_args()
    if args.command == "train":
        train(args.recipe, args.corpus, args.out, args.steps,
              [int(s) for s in args.saves.split(",")], args.threads)
    elif args.command == "probe":
        probe(args.run, args.corpus, [int(s) for s in args.steps.split(",")], args.cache)
    else:
        collect(args.runs, args.note)


if __name__ == "__main__":
    main()
