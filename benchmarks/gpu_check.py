"""GPU check: what a machine with a GPU must confirm (runs in well under 5 minutes on one GPU).

1. ``accumulators``: the float64 Gram accumulator on CUDA against the CPU's, on the same
   float32 rows (random, and real encoder frames): every spectral metric equal to 1e-6
   relative (the target), with the largest difference recorded.
2. ``autocast``: ``speechrank rank`` of a random-init HuBERT-base on FSDD recordings on the
   CPU (float32) against CUDA with a bfloat16 autocast forward (the tool's default on CUDA)
   and with float16 weights, float64 accumulation in both: the difference the reduced-precision
   forward makes, per metric (reported, not held to 1e-6: it changes the frames themselves).
3. ``nccl``: an NCCL all-reduce of accumulators across every local GPU (one process per GPU,
   ``torch.multiprocessing``), against the CPU sum of the same rows (1e-6 relative).
4. ``throughput``: random-init HuBERT-base forward on CUDA (bf16 autocast) as a real-time
   factor (audio seconds per wall second), batches of 8 x 10 s.
5. ``probes``: ``speechrank rank`` and ``speechrank probe --task ks`` of random-init HuBERT-base
   on 200 FSDD recordings on CUDA, timed; then the keyword probe's arrays (13 layers x 768)
   fitted by the batched logistic solver on CUDA and on the CPU (the same features): the same
   C chosen and every test score within its standard error of the CPU's (the target), with
   the objectives' largest relative difference and the fit times (and scikit-learn's on the
   CPU, the reference).

Without CUDA it says so in one line and exits with status 0, writing a JSON that records it.

Usage:
    python benchmarks/gpu_check.py                  # writes benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --out /tmp/gpu.json --files 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from speechrank.metrics import SPECTRAL_METRIC_NAMES, SpectralAccumulator, compute_metrics  # noqa: E402
from speechrank.spec import MeasureSpec  # noqa: E402

FSDD = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"
RESULTS = ROOT / "benchmarks" / "results" / "gpu_check.json"
TOLERANCE = 1e-6


def relative_differences(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Per-key ``|a - b| / |a|`` (keys must match; NaN on both sides counts as equal)."""
    if a.keys() != b.keys():
        raise ValueError(f"different keys: {sorted(set(a) ^ set(b))}")
    out = {}
    for key, x in a.items():
        y = b[key]
        if np.isnan(x) and np.isnan(y):
            out[key] = 0.0
        else:
            out[key] = float(abs(x - y) / max(abs(x), 1e-300))
    return out


def metric_values(acc: SpectralAccumulator) -> dict[str, float]:
    return {name: float(result.value)
            for name, result in compute_metrics(acc, SPECTRAL_METRIC_NAMES).items()}


def accumulate(blocks: list[torch.Tensor], device: str) -> SpectralAccumulator:
    acc = SpectralAccumulator(blocks[0].shape[1], device=device)
    for block in blocks:
        acc.update(block.to(device))
    return acc


def check_accumulators(device: str, seed: int = 0, blocks: int = 10) -> dict[str, Any]:
    """CPU against ``device`` on the same float32 rows (``blocks`` x 2000 of them, random and
    low-rank, and 300 random rows that take the few-rows route)."""
    gen = torch.Generator().manual_seed(seed)
    n = 2000 * blocks
    cases = {
        f"random_{n}x768": [torch.randn(2000, 768, generator=gen) for _ in range(blocks)],
        f"low_rank_{n}x768": [torch.randn(2000, 64, generator=gen)
                              @ torch.randn(64, 768, generator=gen) for _ in range(blocks)],
        "few_rows_300x768": [torch.randn(300, 768, generator=gen)],
    }
    out: dict[str, Any] = {}
    for name, blocks in cases.items():
        diffs = relative_differences(metric_values(accumulate(blocks, "cpu")),
                                     metric_values(accumulate(blocks, device)))
        out[name] = {"max_relative_difference": max(diffs.values()), "per_metric": diffs}
    worst = max(case["max_relative_difference"] for case in out.values())
    return {"device": device, "cases": out, "max_relative_difference": worst,
            "tolerance": TOLERANCE, "passed": worst <= TOLERANCE}


def _rank_values(device: str, files: int, dtype: str | None) -> dict[str, float]:
    from speechrank.encoders import load_encoder
    from speechrank.rank import run_rank

    paths = sorted(FSDD.glob("*.wav"))[:: max(1, 3000 // files)][:files]
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            os.symlink(path, Path(tmp) / path.name)
        encoder = load_encoder("random:hubert-base", device=device, dtype=dtype)
        result = run_rank(encoder, tmp, MeasureSpec(num_utterances=None, seed=0))
    return {f"{r.layer}/{r.pooling}/{r.metric}": r.value for r in result.rows}


def check_autocast(files: int) -> dict[str, Any]:
    """Metric values of a CUDA bf16-autocast and a float16 forward against the CPU's."""
    torch.manual_seed(0)
    cpu = _rank_values("cpu", files, None)
    out: dict[str, Any] = {"files": files, "model": "random:hubert-base"}
    for name, dtype in (("bfloat16_autocast", None), ("float16_weights", "float16")):
        diffs = relative_differences(cpu, _rank_values("cuda", files, dtype))
        by_metric: dict[str, float] = {}
        for key, value in diffs.items():
            metric = key.rsplit("/", 1)[1]
            by_metric[metric] = max(by_metric.get(metric, 0.0), value)
        out[name] = {"max_relative_difference": max(diffs.values()),
                     "median_relative_difference": float(np.median(list(diffs.values()))),
                     "max_by_metric": by_metric}
    return out


def _nccl_worker(rank: int, world: int, port: int, result_path: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    try:
        rows = torch.randn(4000, 512, generator=torch.Generator().manual_seed(rank))
        acc = accumulate([rows], f"cuda:{rank}").all_reduce()
        if rank == 0:
            every = [torch.randn(4000, 512, generator=torch.Generator().manual_seed(r))
                     for r in range(world)]
            diffs = relative_differences(metric_values(accumulate(every, "cpu")),
                                         metric_values(acc))
            Path(result_path).write_text(json.dumps(
                {"world_size": world, "n_rows": acc.n_rows,
                 "max_relative_difference": max(diffs.values()), "per_metric": diffs}))
    finally:
        dist.destroy_process_group()


def check_nccl() -> dict[str, Any]:
    import socket

    import torch.multiprocessing as mp

    world = torch.cuda.device_count()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "nccl.json")
        mp.spawn(_nccl_worker, args=(world, port, path), nprocs=world, join=True)
        out = json.loads(Path(path).read_text())
    out.update(tolerance=TOLERANCE, passed=out["max_relative_difference"] <= TOLERANCE)
    return out


def throughput(batches: int = 10, batch: int = 8, seconds: float = 10.0) -> dict[str, Any]:
    """Random-init HuBERT-base forward on CUDA as a real-time factor."""
    from speechrank.encoders import load_encoder

    encoder = load_encoder("random:hubert-base", device="cuda")
    samples = int(seconds * encoder.sample_rate)
    gen = torch.Generator().manual_seed(0)
    waves = 0.1 * torch.randn(batch, samples, generator=gen)
    lengths = torch.full((batch,), samples, dtype=torch.long)
    for _ in range(2):  # warm-up: kernels, autotuning
        encoder.encode(waves.cuda(), lengths.cuda(), None)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(batches):
        output = encoder.encode(waves.cuda(), lengths.cuda(), None)
        _ = [frames.float().sum().item() for frames in output.layers.values()]
    torch.cuda.synchronize()
    wall = time.perf_counter() - started
    audio = batches * batch * seconds
    return {"model": "random:hubert-base", "autocast": "bfloat16", "batch": batch,
            "seconds_per_utterance": seconds, "audio_seconds": audio,
            "wall_seconds": round(wall, 3), "real_time_factor": round(audio / wall, 1),
            "gpu": torch.cuda.get_device_name(0)}


def fsdd_subset(folder: Path, files: int) -> Path:
    """``files`` FSDD recordings (a seeded draw: every split, digit and speaker) linked into
    ``folder``."""
    paths = sorted(FSDD.glob("*.wav"))
    folder.mkdir(parents=True, exist_ok=True)
    for index in sorted(np.random.default_rng(0).choice(len(paths), files, replace=False)):
        os.symlink(paths[index], folder / paths[index].name)
    return folder


def check_probes(files: int, model: str = "random:hubert-base", device: str = "cuda"
                 ) -> dict[str, Any]:
    """Rank and the keyword probe of ``model`` on ``files`` FSDD recordings on ``device``,
    timed, and the batched solver on ``device`` against the CPU on the same arrays."""
    import dataclasses

    from speechrank.encoders import load_encoder
    from speechrank.probes import run_probe
    from speechrank.probes.linear import fit_logistic_probes, path_objectives
    from speechrank.probes.run import ProbeRun, logistic_problems
    from speechrank.probes.stderr import clustered_accuracy_se
    from speechrank.rank import run_rank

    def synced() -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter()

    out: dict[str, Any] = {"model": model, "files": files, "device": device, "task": "ks"}
    with tempfile.TemporaryDirectory() as tmp:
        data = f"fsdd:{fsdd_subset(Path(tmp) / 'fsdd', files)}"
        encoder = load_encoder(model, device=device)
        started = synced()
        rank = run_rank(encoder, data, MeasureSpec(num_utterances=None, seed=0))
        out["rank_seconds"] = round(synced() - started, 2)
        started = synced()
        probe = run_probe(encoder, data, "ks", run=ProbeRun(cache_dir=Path(tmp) / "cache"), seed=0)
        out["probe_seconds"] = round(synced() - started, 2)
        out["probe_encode_seconds"] = probe.info["encode_seconds"]
        out["rank_rows"], out["probe_rows"] = len(rank.rows), len(probe.rows)
        recipe, problems = logistic_problems(encoder, data, "ks",
                                             run=ProbeRun(cache_dir=Path(tmp) / "cache"), seed=0)
        config = dataclasses.replace(recipe.logistic, solver="torch")
        splits = [p.splits for p in problems]
        fits, seconds = {}, {}
        for where in ("cpu", device, device):  # the second run on the device: warm kernels
            started = synced()
            fits[where] = fit_logistic_probes(splits, config, device=where)
            seconds[where] = round(synced() - started, 3)
        started = time.perf_counter()
        reference = fit_logistic_probes(splits, dataclasses.replace(config, solver="sklearn"))
        seconds["sklearn_cpu"] = round(time.perf_counter() - started, 3)
    layers, passed = [], True
    for problem, cpu, there in zip(problems, fits["cpu"], fits[device], strict=True):
        se = clustered_accuracy_se(cpu.correct["test"], problem.clusters["test"])
        diff = there.scores["test"]["accuracy"] - cpu.scores["test"]["accuracy"]
        objectives = [path_objectives(f, problem.splits, config) for f in (cpu, there)]
        rel = max(abs(b - a) / abs(a) for a, b in zip(*objectives, strict=True))
        ok = cpu.chosen_c == there.chosen_c and abs(diff) <= se
        passed &= ok
        layers.append({"layer": problem.layer, "C": [cpu.chosen_c, there.chosen_c],
                       "test_accuracy": [cpu.scores["test"]["accuracy"],
                                         there.scores["test"]["accuracy"]],
                       "standard_error": se, "max_objective_relative_difference": rel,
                       "sklearn_test_accuracy": reference[len(layers)].scores["test"]["accuracy"],
                       "passed": ok})
    out.update(fit_seconds=seconds, layers=layers, passed=passed,
               max_objective_relative_difference=max(r["max_objective_relative_difference"]
                                                     for r in layers),
               dims={name: list(np.shape(v[0])) for name, v in problems[0].splits.items()})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--files", type=int, default=100, help="FSDD files for autocast")
    parser.add_argument("--probe-files", type=int, default=200,
                        help="FSDD files for the rank and probe timing")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": torch.__version__, "python": platform.python_version(),
        "cuda": torch.cuda.is_available(),
    }
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); "
              "nothing to check, run it on a machine with a GPU")
        result["skipped"] = "no CUDA device"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        return 0
    started = time.perf_counter()
    result["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    steps = [("accumulators", lambda: check_accumulators("cuda")),
             ("nccl", check_nccl), ("throughput", throughput)]
    if FSDD.is_dir():
        steps.insert(1, ("autocast", lambda: check_autocast(args.files)))
        steps.append(("probes", lambda: check_probes(args.probe_files)))
    else:
        result["autocast"] = {"skipped": f"FSDD recordings not found at {FSDD}"}
        result["probes"] = {"skipped": f"FSDD recordings not found at {FSDD}"}
    for name, step in steps:
        t0 = time.perf_counter()
        result[name] = step()
        result[name]["check_seconds"] = round(time.perf_counter() - t0, 2)
        print(f"{name}: {json.dumps(result[name])[:400]}", flush=True)
    result["wall_seconds"] = round(time.perf_counter() - started, 2)
    result["passed"] = bool(result["accumulators"]["passed"] and result["nccl"]["passed"]
                            and result["probes"].get("passed", True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} ({'passed' if result['passed'] else 'FAILED'})")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
