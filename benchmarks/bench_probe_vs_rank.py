"""What the downstream probes cost next to the label-free metrics (issue 5).

For each model, on the same seeded FSDD subset (the usual split: index 0-4 test, 5-9 dev, the
rest train), every numbered layer:

- ``rank``: :func:`speechrank.rank.run_rank` end to end (every pooling and spectral metric);
- ``probe ks cold``: :func:`speechrank.probes.run_probe` for keyword spotting with an empty
  feature cache (header reads, decoding, one encoder pass for every layer, writing the cache,
  then one logistic probe per layer with ``C`` chosen on dev from 5 values);
- ``probe sid warm`` and ``probe ks warm``: the same with the cache filled by the cold run, so
  the encoder does not run (speaker and keyword probes share the features);
- ``probe sid cold``: speaker identification without the cache (``use_cache=False``).

The encoder part of a cold probe is reported separately (``encode_s``), so ``fit_s`` is the
probes' own cost. torch and BLAS threads are limited to ``--threads`` (default 1) while
measuring, so a shared machine's load distorts less; the load average is recorded. Results go
to ``benchmarks/results/probe_vs_rank.json`` and a markdown table is printed.

    .venv/bin/python benchmarks/bench_probe_vs_rank.py --fsdd ../shared/data/fsdd
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from speechrank.audio import load_dataset
from speechrank.audio.splits import subset
from speechrank.encoders import load_encoder
from speechrank.probes import ProbeRun, run_probe
from speechrank.rank import run_rank
from speechrank.spec import MeasureSpec

HERE = Path(__file__).resolve().parent


def _timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _best_layer(result: Any) -> dict[str, Any]:
    test = result.scores("test", "accuracy")
    dev = result.scores("dev", "accuracy")
    chosen = max(dev, key=lambda layer: (dev[layer], -int(layer)))  # picked on dev
    return {"test_accuracy": {k: round(v, 4) for k, v in test.items()},
            "best_on_dev": chosen, "its_test_accuracy": round(test[chosen], 4)}


def bench_model(spec: str, data: str, n: int) -> dict[str, Any]:
    encoder = load_encoder(spec)
    dataset = subset(load_dataset(data), n, seed=0)
    layers = [name for name in encoder.layer_names if name != "cnn"]
    run_rank(encoder, subset(dataset, 8, seed=1), MeasureSpec(num_utterances=None))  # warm-up
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as cache:
        t_rank, rank = _timed(lambda: run_rank(encoder, dataset, MeasureSpec(num_utterances=None)))
        t_ks_cold, ks = _timed(lambda: run_probe(encoder, dataset, "ks",
                                                 run=ProbeRun(cache_dir=cache), progress=False))
        t_sid_warm, sid = _timed(lambda: run_probe(encoder, dataset, "sid",
                                                   run=ProbeRun(cache_dir=cache), progress=False))
        t_ks_warm, ks_again = _timed(lambda: run_probe(encoder, dataset, "ks",
                                                       run=ProbeRun(cache_dir=cache),
                                                       progress=False))
        t_sid_cold, sid_cold = _timed(lambda: run_probe(encoder, dataset, "sid",
                                                        run=ProbeRun(use_cache=False),
                                                        progress=False))
        cache_bytes = sum(p.stat().st_size for p in Path(cache).rglob("*") if p.is_file())
    assert sid.info["cache"]["hit"] and ks_again.info["cache"]["hit"]
    assert [r.value for r in ks_again.rows] == [r.value for r in ks.rows]
    assert [r.value for r in sid_cold.rows] == [r.value for r in sid.rows]
    encode_cold = ks.info["encode_seconds"]
    return {
        "model": spec, "utterances": rank.info["counts"]["utterances_used"],
        "audio_seconds": rank.info["counts"]["audio_seconds"], "layers": len(layers),
        "dim": encoder.dim, "probe_counts": {k: ks.info["counts"][k]
                                             for k in ("train", "dev", "test")},
        "rank_s": round(t_rank, 3),
        "rank_rows": len(rank.rows),
        "probe_ks_cold_s": round(t_ks_cold, 3),
        "probe_ks_cold_encode_s": round(encode_cold, 3),
        "probe_ks_cold_fit_s": round(t_ks_cold - encode_cold, 3),
        "probe_sid_warm_s": round(t_sid_warm, 3),
        "probe_ks_warm_s": round(t_ks_warm, 3),
        "probe_sid_cold_s": round(t_sid_cold, 3),
        "probe_sid_cold_encode_s": round(sid_cold.info["encode_seconds"], 3),
        "cache_mib": round(cache_bytes / 2**20, 2),
        "ks": _best_layer(ks),
        "sid": _best_layer(sid),
        "chosen_c_ks": {r.layer: r.conventions["C"] for r in ks.rows
                        if r.split == "test" and r.metric == "accuracy"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsdd", default=str(HERE.parents[1] / "shared" / "data" / "fsdd"))
    parser.add_argument("--models", default="random:tiny,random:hubert-base")
    parser.add_argument("--utterances", default="600,300",
                        help="seeded FSDD subset size per model (one value, or one per model)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(HERE / "results" / "probe_vs_rank.json"))
    args = parser.parse_args()
    models = args.models.split(",")
    sizes = [int(s) for s in args.utterances.split(",")]
    sizes = sizes * len(models) if len(sizes) == 1 else sizes
    torch.set_num_threads(args.threads)
    results = []
    with threadpool_limits(limits=args.threads):
        for spec, n in zip(models, sizes, strict=True):
            results.append(bench_model(spec, f"fsdd:{args.fsdd}", n))
            print(json.dumps(results[-1]), flush=True)
    payload = {"benchmark": "probe_vs_rank", "threads": args.threads,
               "cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg(),
               "python": platform.python_version(), "torch": torch.__version__,
               "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    print("| model | utts | audio s | layers | rank s | probe ks cold s (encode + fit) "
          "| probe sid warm s | probe ks warm s | probe sid cold s | cache MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['model']} | {r['utterances']} | {r['audio_seconds']} | {r['layers']} | "
              f"{r['rank_s']} | {r['probe_ks_cold_s']} ({r['probe_ks_cold_encode_s']} + "
              f"{r['probe_ks_cold_fit_s']}) | {r['probe_sid_warm_s']} | "
              f"{r['probe_ks_warm_s']} | {r['probe_sid_cold_s']} | {r['cache_mib']} |")


if __name__ == "__main__":
    main()
