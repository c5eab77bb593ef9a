"""What `speechrank rank` costs on top of the encoder's forward pass (issue 3's target: the
metrics add at most 10 %).

For each model, on the same FSDD utterances and the same length-sorted batches:

- ``forward``: the bare encoder forward over batches already decoded into memory;
- ``forward+metrics``: the same forward plus every accumulator update (sum, mean, frames
  poolings, every layer) and every spectral metric at the end: what rank adds to a forward;
- ``rank end to end``: :func:`speechrank.rank.run_rank` from file paths (header reads, decoding,
  resampling, batching, forward, accumulators, metrics), as a user runs it.

Each timing is the best of ``--repeats`` runs. Results go to
``benchmarks/results/rank_overhead.json`` and a markdown table is printed.

    .venv/bin/python benchmarks/bench_rank_overhead.py --fsdd ../shared/data/fsdd
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from speechrank.audio import load_dataset
from speechrank.audio.splits import subset
from speechrank.encoders import load_encoder
from speechrank.extract import iter_encoded, plan_utterances
from speechrank.metrics import SPECTRAL_METRIC_NAMES
from speechrank.rank import LayerAccumulators, frame_quotas, metric_rows, run_rank

HERE = Path(__file__).resolve().parent


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def bench_model(spec: str, data: str, n: int, repeats: int) -> dict:
    encoder = load_encoder(spec)
    dataset = subset(load_dataset(data), n, seed=0)
    planned = plan_utterances(encoder, dataset.utterances)
    layers = [name for name in encoder.layer_names if name != "cnn"]
    # Decode once; keep each batch's waveforms so the forward timings see no I/O.
    batches = []
    for batch in iter_encoded(encoder, dataset.utterances, layers=layers[:1], planned=planned):
        batches.append(batch)
    waves = []
    from speechrank.audio import load_audio

    for batch in batches:
        decoded = [load_audio(u.path, encoder.sample_rate) for u in batch.utterances]
        lengths = torch.tensor([len(w) for w in decoded])
        padded = torch.zeros(len(decoded), int(lengths.max()))
        for i, w in enumerate(decoded):
            padded[i, : len(w)] = torch.from_numpy(w)
        waves.append((padded, lengths))
    audio_seconds = sum(float(lengths.sum()) for _, lengths in waves) / encoder.sample_rate

    def forward() -> None:
        for padded, lengths in waves:
            encoder.encode(padded, lengths, layers)

    quotas = frame_quotas([p.num_frames for p in planned], 25_600)
    quota = {p.utterance.uid: q for p, q in zip(planned, quotas, strict=True)}

    def forward_and_metrics() -> None:
        accs = LayerAccumulators({name: encoder.layer_dims[name] for name in layers},
                                 ("sum", "mean", "frames"), frame_quota=quota)
        for batch, (padded, lengths) in zip(batches, waves, strict=True):
            out = encoder.encode(padded, lengths, layers)
            batch.output = out
            accs.update(batch)
        metric_rows(accs, SPECTRAL_METRIC_NAMES, model=spec, checkpoint=spec, step=None,
                    dataset=data)

    def end_to_end() -> None:
        run_rank(encoder, dataset, num_utterances=None)

    forward()  # warm-up (lazy kernels, allocator)
    t_forward = _best(forward, repeats)
    t_metrics = _best(forward_and_metrics, repeats)
    t_rank = _best(end_to_end, repeats)
    return {
        "model": spec, "utterances": len(planned), "audio_seconds": round(audio_seconds, 2),
        "layers": len(layers), "dim": encoder.dim, "batches": len(batches),
        "forward_s": round(t_forward, 3), "forward_metrics_s": round(t_metrics, 3),
        "rank_end_to_end_s": round(t_rank, 3),
        "metrics_overhead": round(t_metrics / t_forward - 1, 4),
        "end_to_end_overhead": round(t_rank / t_forward - 1, 4),
        "realtime_factor_rank": round(audio_seconds / t_rank, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsdd", default=str(HERE.parents[1] / "shared" / "data" / "fsdd"))
    parser.add_argument("--models", default="random:tiny,random:hubert-base")
    parser.add_argument("--utterances", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results" / "rank_overhead.json"))
    args = parser.parse_args()
    results = [bench_model(spec, f"fsdd:{args.fsdd}", args.utterances, args.repeats)
               for spec in args.models.split(",")]
    payload = {"benchmark": "rank_overhead", "torch_threads": torch.get_num_threads(),
               "cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg(),
               "python": platform.python_version(), "torch": torch.__version__,
               "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    print("| model | utterances | audio s | forward s | forward+metrics s | rank end to end s "
          "| metrics overhead | end-to-end overhead |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['model']} | {r['utterances']} | {r['audio_seconds']} | {r['forward_s']} | "
              f"{r['forward_metrics_s']} | {r['rank_end_to_end_s']} | "
              f"{100 * r['metrics_overhead']:.1f} % | {100 * r['end_to_end_overhead']:.1f} % |")


if __name__ == "__main__":
    main()
