"""`rank` and `probe` under torchrun: sharding, the process group, and 2 processes == 1."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from speechrank import distributed
from speechrank.errors import SpeechrankError

from .conftest import write_csv_manifest

SRC = Path(__file__).resolve().parents[1] / "src"
# --standalone: a rendezvous on a free port (the default 29500 may be taken by another job)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@given(st.lists(st.integers(), max_size=40), st.integers(1, 9))
def test_shards_partition_the_list_whatever_the_world_size(items, world):
    shares = [distributed.shard(items, distributed.Distributed(
        rank=r, world_size=world, local_rank=r, backend="gloo", device="cpu", timeout_s=1.0))
        for r in range(world)]
    assert sorted(x for share in shares for x in share) == sorted(items)
    assert sum(len(share) for share in shares) == len(items)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    # round-robin by position: item i goes to process i % world
    for i, item in enumerate(items):
        assert shares[i % world][i // world] == item


def test_single_process_is_the_identity(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.env_world() is None
    assert distributed.setup("cpu") is None and distributed.current() is None
    assert distributed.shard([3, 1, 2]) == [3, 1, 2]
    assert distributed.gather("x") == ["x"]
    assert distributed.sum_values([1, 2.5]) == [1.0, 2.5]
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.setup("cpu") is None  # torchrun with one process: nothing to join


def test_bad_environment_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SpeechrankError, match="outside WORLD_SIZE"):
        distributed.env_world()
    monkeypatch.setenv("RANK", "zero")
    with pytest.raises(SpeechrankError, match="not numeric"):
        distributed.env_world()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(SpeechrankError, match=distributed.TIMEOUT_ENV):
        distributed.setup("cpu")


DYING_PEER = textwrap.dedent("""
    import os, sys
    from speechrank import distributed
    from speechrank.cli import _fail
    from speechrank.errors import SpeechrankError

    job = distributed.setup("cpu")
    assert job is not None and job.world_size == 2
    if job.rank == 1:
        os._exit(3)  # dies before its first collective
    try:
        distributed.sum_values([1.0])
    except SpeechrankError as err:
        _fail(f"error: {err}")
        sys.exit(2)
    sys.exit(0)
""")


def test_a_dead_process_fails_the_job_with_one_line_not_a_hang(tmp_path):
    script = tmp_path / "peer.py"
    script.write_text(DYING_PEER)
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True,
                              env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                       MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                                       **{distributed.TIMEOUT_ENV: "60"}))
             for r in (0, 1)]
    errs = [p.communicate(timeout=180)[1] for p in procs]
    assert procs[1].returncode == 3
    assert procs[0].returncode == 2, errs[0]
    lines = errs[0].strip().splitlines()
    assert len(lines) == 1 and "another process died" in lines[0], errs[0]


@pytest.fixture(scope="module")
def fsdd_manifest(tmp_path_factory, fsdd_root):
    """54 FSDD recordings: digits 0-2 by 3 speakers, 6 takes each (train/dev/test)."""
    root = tmp_path_factory.mktemp("fsdd_manifest")
    rows = [{"path": str(fsdd_root / "recordings" / f"{d}_{spk}_{i}.wav"), "digit": str(d),
             "split": "test" if i < 1 else ("dev" if i < 2 else "train")}
            for d in range(3) for spk in ("george", "jackson", "theo") for i in range(6)]
    return write_csv_manifest(root / "fsdd.csv", rows)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _values(payload: dict) -> dict[tuple, float]:
    return {(r["layer"], r["pooling"], r["metric"], r["split"], r["n_rows"]): r["value"]
            for r in payload["results"]}


@pytest.mark.slow
def test_rank_two_torchrun_processes_equal_one(fsdd_manifest, tmp_path):
    command = ["-m", "speechrank", "rank", "random:tiny", str(fsdd_manifest), "-q",
               "--max-frames", "3000"]
    one = _run([sys.executable, *command, "--json", "one.json"], tmp_path)
    two = _run([*TORCHRUN, "--nproc-per-node", "2", *command, "--json", "two.json"], tmp_path)
    single = json.loads((tmp_path / "one.json").read_text())
    double = json.loads((tmp_path / "two.json").read_text())
    assert single["distributed"]["world_size"] == 1
    assert double["distributed"]["world_size"] == 2
    assert double["distributed"]["backend"] == "gloo"
    assert double["counts"] == single["counts"]
    a, b = _values(single), _values(double)
    assert a.keys() == b.keys() and len(a) > 20
    for key, value in a.items():
        if value is None:
            assert b[key] is None
        else:
            assert math.isclose(b[key], value, rel_tol=1e-6), (key, value, b[key])
    # only rank 0 prints: the same tables, once
    assert two.stdout.count("utterances") == one.stdout.count("utterances") >= 1


@pytest.mark.slow
def test_probe_two_torchrun_processes_equal_one(fsdd_manifest, tmp_path):
    command = ["-m", "speechrank", "probe", "random:tiny", str(fsdd_manifest), "--task",
               "label:digit", "-q", "--no-cache", "--batch-seconds", "0.01"]
    # batches of one utterance: the same forward, so the same features in both runs
    _run([sys.executable, *command, "--json", "one.json"], tmp_path)
    _run([*TORCHRUN, "--nproc-per-node", "2", *command, "--json", "two.json"], tmp_path)
    single = json.loads((tmp_path / "one.json").read_text())
    double = json.loads((tmp_path / "two.json").read_text())
    assert double["distributed"]["world_size"] == 2
    assert double["counts"] == single["counts"]
    assert _values(double) == _values(single)  # the same features, the same fits
