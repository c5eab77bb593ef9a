"""Two CPU processes on gloo measure the same values as one process."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from speechrank.errors import SpeechrankError
from speechrank.monitor import RankMonitor
from speechrank.spec import MeasureSpec
from tests.test_monitor_core import ToyEncoder, toy_encoder, waves

SETTINGS = MeasureSpec.for_monitor(poolings=["sum", "mean", "frames"],
                                   metrics=["rankme", "erank_cov"], max_frames=200,
                                   batch_seconds=2.5, seed=3)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    # Built before the process group exists: it must start sharing once it does.
    early = RankMonitor(toy_encoder(ToyEncoder(seed=1)), waves(26, seed=9), SETTINGS)
    clustered = RankMonitor(toy_encoder(ToyEncoder(seed=1)), waves(6, seed=9),
                            MeasureSpec.for_monitor(metrics="rankme,kmeans_inertia",
                                                    poolings="frames", n_clusters=2))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        monitor = RankMonitor(toy_encoder(ToyEncoder(seed=1)), waves(26, seed=9), SETTINGS)
        values = monitor(step=5)
        second = monitor(step=6)
        early_values = early(step=5)
        try:  # the cluster row stores are not merged across processes
            clustered(step=0)
            refused = ""
        except SpeechrankError as err:
            refused = str(err)
        protocol = RankMonitor(toy_encoder(ToyEncoder(seed=1)), waves(26, seed=9),
                               SETTINGS.replace(protocol="aldeneh2025"))
        protocol_rows = protocol.measure(step=5).rows
        report = {"values": values, "second": second, "early": early_values,
                  "early_world": early.world,
                  "my_utterances": sum(len(b.utterances)
                                 for b in monitor.heldout.batches_for(rank, world)),
                  "world": monitor.world, "rank": monitor.rank, "refused": refused,
                  "protocol_convergence": [("convergence" in r.conventions)
                                           for r in protocol_rows],
                  "protocol_names": sorted({r.conventions["protocol"] for r in protocol_rows}),
                  "n_rows": sorted({r.n_rows for r in monitor.last.rows if r.pooling == "sum"})}
        Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    single = RankMonitor(toy_encoder(ToyEncoder(seed=1)), waves(26, seed=9), SETTINGS)
    expected = single(step=5)
    assert [r["world"] for r in reports] == [2, 2] and [r["rank"] for r in reports] == [0, 1]
    # Each process encoded only its share; together they cover the set once.
    shares = [r["my_utterances"] for r in reports]
    assert min(shares) > 0 and sum(shares) == single.heldout.num_utterances == 26
    for report in reports:
        assert report["n_rows"] == [26]
        assert report["values"].keys() == expected.keys()
        for key, value in expected.items():
            got = report["values"][key]
            assert abs(got - value) <= 1e-9 * abs(value), (key, got, value)
        assert report["second"] == report["values"]
        assert report["early_world"] == 2
        assert all(abs(report["early"][k] - v) <= 1e-9 * abs(v) for k, v in expected.items())
        assert "kmeans_inertia cannot be measured across processes" in report["refused"]
        # a protocol turns convergence on, but not across processes
        assert report["protocol_convergence"] and not any(report["protocol_convergence"])
        assert report["protocol_names"] == ["aldeneh2025"]
