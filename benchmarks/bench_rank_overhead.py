"""What `speechrank rank` costs on top of the encoder's forward pass (issue 3's target: the
metrics add at most 10 %).

For each model, on the same FSDD utterances and the same length-sorted batches:

- ``forward``: the bare encoder forward over batches already decoded into memory;
- ``forward+metrics``: the same forward plus every accumulator update (sum, mean, frames
  poolings, every layer) and every spectral metric at the end: what rank adds to a forward.
  Inside this run the forward calls and the metric work are timed apart, so the overhead is
  also read as metric seconds over forward seconds *of the same run*: on a shared virtual
  machine two runs of the same forward differ by up to 10 %, as much as the target, so the
  difference of two wall times alone cannot resolve it;
- ``rank end to end``: :func:`speechrank.rank.run_rank` from file paths (header reads, decoding,
  resampling, batching, forward, accumulators, metrics), as a user runs it, with its forward
  calls timed apart the same way.

Wall times are the best of ``--repeats`` runs; in-run overheads are the median over the repeats.
Results go to ``benchmarks/results/rank_overhead.json`` and a markdown table is printed.

    .venv/bin/python benchmarks/bench_rank_overhead.py --fsdd ../shared/data/fsdd
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from speechrank.accumulate import RowLabels
from speechrank.audio import load_audio, load_dataset
from speechrank.audio.splits import subset
from speechrank.encoders import load_encoder
from speechrank.extract import iter_encoded, plan_utterances
from speechrank.metrics import SPECTRAL_METRIC_NAMES
from speechrank.rank import LayerAccumulators, frame_quotas, metric_rows, run_rank
from speechrank.spec import MeasureSpec

HERE = Path(__file__).resolve().parent


class _TimedEncoder:
    """Wraps an encoder so that the seconds spent inside ``encode`` add up in ``seconds``."""

    def __init__(self, encoder) -> None:
        self._encoder = encoder
        self.seconds = 0.0

    def __getattr__(self, name: str):
        return getattr(self._encoder, name)

    def encode(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self._encoder.encode(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started


def bench_model(spec: str, data: str, n: int, repeats: int) -> dict:
    encoder = load_encoder(spec)
    dataset = subset(load_dataset(data), n, seed=0)
    planned = plan_utterances(encoder, dataset.utterances)
    layers = [name for name in encoder.layer_names if name != "cnn"]
    # Decode once; keep each batch's waveforms so the forward timings see no I/O.
    batches = list(iter_encoded(encoder, dataset.utterances, layers=layers[:1], planned=planned))
    waves = []
    for batch in batches:
        decoded = [load_audio(u.path, encoder.sample_rate) for u in batch.utterances]
        lengths = torch.tensor([len(w) for w in decoded])
        padded = torch.zeros(len(decoded), int(lengths.max()))
        for i, w in enumerate(decoded):
            padded[i, : len(w)] = torch.from_numpy(w)
        waves.append((padded, lengths))
    audio_seconds = sum(float(lengths.sum()) for _, lengths in waves) / encoder.sample_rate
    quotas = frame_quotas([p.num_frames for p in planned], 25_600)
    quota = {p.utterance.uid: q for p, q in zip(planned, quotas, strict=True)}

    def forward() -> float:
        started = time.perf_counter()
        for padded, lengths in waves:
            encoder.encode(padded, lengths, layers)
        return time.perf_counter() - started

    def forward_and_metrics() -> tuple[float, float, float, float]:
        started = time.perf_counter()
        t_forward = t_update = 0.0
        accs = LayerAccumulators({name: encoder.layer_dims[name] for name in layers},
                                 ("sum", "mean", "frames"), frame_quota=quota)
        for batch, (padded, lengths) in zip(batches, waves, strict=True):
            t0 = time.perf_counter()
            batch.output = encoder.encode(padded, lengths, layers)
            t1 = time.perf_counter()
            accs.update(batch)
            t_forward += t1 - t0
            t_update += time.perf_counter() - t1
        t0 = time.perf_counter()
        accs.flush()
        t_update += time.perf_counter() - t0
        t0 = time.perf_counter()
        metric_rows(accs, SPECTRAL_METRIC_NAMES,
                    RowLabels(model=spec, checkpoint=spec, step=None, dataset=data))
        t_metrics = time.perf_counter() - t0
        return time.perf_counter() - started, t_forward, t_update, t_metrics

    def end_to_end() -> tuple[float, float]:
        timed = _TimedEncoder(encoder)
        started = time.perf_counter()
        run_rank(timed, dataset, MeasureSpec(num_utterances=None))
        return time.perf_counter() - started, timed.seconds

    forward()  # warm-up (lazy kernels, allocator)
    walls: dict[str, list[float]] = {"forward": [], "metrics": [], "rank": []}
    parts: dict[str, list[float]] = {"update": [], "metrics": [], "inner_forward": [],
                                     "metric_overhead": [], "rank_forward": [],
                                     "rank_overhead": []}
    for _ in range(repeats):  # interleaved, so slow phases of the machine hit every mode
        walls["forward"].append(forward())
        wall, t_fwd, t_upd, t_met = forward_and_metrics()
        walls["metrics"].append(wall)
        parts["inner_forward"].append(t_fwd)
        parts["update"].append(t_upd)
        parts["metrics"].append(t_met)
        parts["metric_overhead"].append((t_upd + t_met) / t_fwd)
        wall, t_fwd = end_to_end()
        walls["rank"].append(wall)
        parts["rank_forward"].append(t_fwd)
        parts["rank_overhead"].append(wall / t_fwd - 1)
    t_forward, t_metrics, t_rank = (min(walls[k]) for k in ("forward", "metrics", "rank"))
    return {
        "model": spec, "utterances": len(planned), "audio_seconds": round(audio_seconds, 2),
        "layers": len(layers), "dim": encoder.dim, "batches": len(batches),
        "repeats": repeats,
        "forward_s": round(t_forward, 3), "forward_metrics_s": round(t_metrics, 3),
        "rank_end_to_end_s": round(t_rank, 3),
        "update_s": round(statistics.median(parts["update"]), 3),
        "metrics_s": round(statistics.median(parts["metrics"]), 3),
        "metrics_overhead_in_run": round(statistics.median(parts["metric_overhead"]), 4),
        "metrics_overhead_in_run_all": [round(x, 4) for x in parts["metric_overhead"]],
        "end_to_end_overhead_in_run": round(statistics.median(parts["rank_overhead"]), 4),
        "metrics_overhead_wall": round(t_metrics / t_forward - 1, 4),
        "end_to_end_overhead_wall": round(t_rank / t_forward - 1, 4),
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
          "| updates s | metrics s | metrics overhead (in run) | end-to-end overhead (in run) "
          "| metrics overhead (walls) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['model']} | {r['utterances']} | {r['audio_seconds']} | {r['forward_s']} | "
              f"{r['forward_metrics_s']} | {r['rank_end_to_end_s']} | {r['update_s']} | "
              f"{r['metrics_s']} | {100 * r['metrics_overhead_in_run']:.1f} % | "
              f"{100 * r['end_to_end_overhead_in_run']:.1f} % | "
              f"{100 * r['metrics_overhead_wall']:.1f} % |")


if __name__ == "__main__":
    main()
