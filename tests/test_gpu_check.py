"""benchmarks/gpu_check.py: its CPU-safe parts, its no-CUDA exit, and (with a GPU) the check."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_relative_differences_known_answers(gpu_check):
    diffs = gpu_check.relative_differences({"a": 2.0, "b": float("nan"), "c": -4.0},
                                           {"a": 2.5, "b": float("nan"), "c": -4.0})
    assert diffs == {"a": 0.25, "b": 0.0, "c": 0.0}
    with pytest.raises(ValueError, match="different keys"):
        gpu_check.relative_differences({"a": 1.0}, {"b": 1.0})


def test_accumulator_check_runs_on_the_cpu(gpu_check):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = gpu_check.check_accumulators("cpu", blocks=1)
    finally:
        torch.set_num_threads(threads)
    assert out["passed"] and out["max_relative_difference"] == 0.0
    assert set(out["cases"]) == {"random_2000x768", "low_rank_2000x768", "few_rows_300x768"}
    per_metric = out["cases"]["random_2000x768"]["per_metric"]
    assert "rankme" in per_metric and all(math.isfinite(v) for v in per_metric.values())


def test_without_cuda_it_exits_cleanly_with_one_line(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().count("\n") == 0 and "no CUDA device" in done.stdout
    payload = json.loads(out.read_text())
    assert payload["cuda"] is False and payload["skipped"] == "no CUDA device"


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_accumulators_equal_the_cpu(gpu_check):
    out = gpu_check.check_accumulators("cuda")
    assert out["passed"], out


def test_probe_check_runs_on_the_cpu(gpu_check, one_torch_thread):
    """The probe step's code path, with the CPU standing in for the GPU (a small model and
    few files): the same device on both sides gives the same fits."""
    out = gpu_check.check_probes(60, model="random:tiny", device="cpu")
    assert out["passed"] and out["max_objective_relative_difference"] == 0.0
    assert out["rank_rows"] > 0 and out["probe_rows"] > 0
    assert {"cpu", "sklearn_cpu"} <= set(out["fit_seconds"])
    assert len(out["layers"]) == 5 and out["dims"]["train"][1] == 128
