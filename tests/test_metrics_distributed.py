"""SpectralAccumulator.all_reduce across 2 processes on gloo equals one process."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from speechrank.metrics import MetricInputError, SpectralAccumulator, compute_metrics

WORLD = 2
DIM = 12


def _rows() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((301, DIM)) * np.geomspace(2, 0.1, DIM) + 0.5).astype(np.float32)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        shard = np.array_split(_rows(), WORLD)[rank]
        acc = SpectralAccumulator(DIM)
        acc.update(torch.from_numpy(shard))
        assert acc.all_reduce() is acc
        acc.save(Path(out_dir) / f"rank{rank}.safetensors")
        # an empty accumulator on one rank still takes part in the sum
        empty_or_not = SpectralAccumulator(DIM)
        if rank == 0:
            empty_or_not.update(_rows()[:5])
        empty_or_not.all_reduce()
        assert empty_or_not.n_rows == 5
        # accumulators of different dim refuse on every rank, without hanging
        try:
            SpectralAccumulator(DIM + rank).all_reduce()
        except MetricInputError as exc:
            (Path(out_dir) / f"dim_error{rank}.txt").write_text(str(exc))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_all_reduce_over_two_gloo_processes_equals_one_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    one = SpectralAccumulator(DIM)
    one.update(_rows())
    expected = compute_metrics(one)
    for rank in range(WORLD):
        reduced = SpectralAccumulator.load(tmp_path / f"rank{rank}.safetensors")
        assert reduced.n_rows == one.n_rows == 301
        np.testing.assert_allclose(reduced.gram, one.gram, rtol=1e-12)
        np.testing.assert_allclose(reduced.column_sums, one.column_sums, rtol=1e-12)
        got = compute_metrics(reduced)
        for name, result in expected.items():
            if result.is_defined:
                assert got[name].value == pytest.approx(result.value, rel=1e-9), name
        assert "different dim" in (tmp_path / f"dim_error{rank}.txt").read_text()
