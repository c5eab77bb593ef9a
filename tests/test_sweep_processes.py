"""The sweep's process executor: checkpoints side by side in worker processes, one writer.

Same store as the serial sweep at one thread, a killed driver resumes from the store, a killed
worker fails in one line and a rerun finishes; how many workers "auto" chooses.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from speechrank.errors import SpeechrankError
from speechrank.store import ResultStore
from speechrank.sweep import (
    SweepConfig,
    find_checkpoints,
    plan_units,
    plan_workers,
    run_name,
    sweep,
)
from speechrank.sweep.process_executor import WORKER_BASE_BYTES

from .tone_sweep import serial_sweep_one_thread, write_tone_sweep
from .tone_sweep import snapshot as _snapshot
from .tone_sweep import unit_count as _unit_count

CHECKPOINTS = 3
UNITS = 2 * CHECKPOINTS  # rank + 1 probe each


def _gone(pid: int) -> bool:
    """The process ended (a zombie nobody reaped counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Three random checkpoints, a small tone manifest, and the serial sweep's store at one
    torch thread (as each worker runs)."""
    root = tmp_path_factory.mktemp("sweep_processes")
    write_tone_sweep(root, CHECKPOINTS)
    serial = root / "serial.sqlite"
    assert serial_sweep_one_thread(root, serial) == UNITS
    return root, _snapshot(serial)


# ------------------------------------------------------------------------- how many workers
def test_auto_runs_one_worker_per_core_with_the_cores_shared():
    many = 64 * WORKER_BASE_BYTES
    assert plan_workers("auto", checkpoints=12, cores=2, memory=many) == (2, 1)
    assert plan_workers("auto", checkpoints=3, cores=16, memory=many) == (3, 5)
    # one checkpoint to do, one core, or a GPU: this process, every core
    assert plan_workers("auto", checkpoints=1, cores=2, memory=many) == (1, 2)
    assert plan_workers("auto", checkpoints=12, cores=1, memory=many) == (1, 1)
    assert plan_workers("auto", checkpoints=12, device="cuda", cores=8, memory=many) == (1, 8)
    # memory bounds the workers: each holds its frame memo and about WORKER_BASE_BYTES more
    assert plan_workers("auto", checkpoints=12, cores=16, memo_gb=1.0,
                        memory=6 * WORKER_BASE_BYTES) == (3, 5)
    assert plan_workers(4, checkpoints=2, cores=8) == (2, 4)
    for bad in (0, -1, "many", True, 1.5):
        with pytest.raises(SpeechrankError, match="auto"):
            plan_workers(bad, checkpoints=3, cores=2)


@given(workers=st.one_of(st.just("auto"), st.integers(1, 64)), checkpoints=st.integers(1, 100),
       cores=st.integers(1, 128), memory=st.integers(0, 2**40))
def test_plan_stays_within_checkpoints_and_cores(workers, checkpoints, cores, memory):
    n, threads = plan_workers(workers, checkpoints=checkpoints, cores=cores, memory=memory)
    assert 1 <= n <= checkpoints and threads >= 1
    assert n * threads <= max(cores, n)  # never more threads than cores, beyond 1 each
    if workers == "auto":
        assert n <= cores


def test_checkpoint_workers_option_is_checked(tmp_path):
    base = "[rank]\ndata = 'x.csv'\n[options]\n"
    for good, expected in (("", "auto"), ("checkpoint_workers = 'auto'", "auto"),
                           ("checkpoint_workers = 3", 3)):
        (tmp_path / "ok.toml").write_text(base + good + "\n")
        assert SweepConfig.from_toml(tmp_path / "ok.toml").checkpoint_workers == expected
    for bad in ("0", "'two'", "true", "1.5"):
        (tmp_path / "bad.toml").write_text(base + f"checkpoint_workers = {bad}\n")
        with pytest.raises(SpeechrankError, match="checkpoint_workers"):
            SweepConfig.from_toml(tmp_path / "bad.toml")


def test_cli_workers_is_checked(tmp_path, capsys):
    from speechrank.cli import main

    (tmp_path / "s.toml").write_text("[rank]\ndata = 'x.csv'\n")
    args = ["sweep", "random:tiny@0", "--config", str(tmp_path / "s.toml"), "--store",
            str(tmp_path / "s.sqlite"), "-q"]
    assert main([*args, "--workers", "none"]) == 2
    assert "--workers must be 'auto' or an integer" in capsys.readouterr().err
    assert main([*args, "--workers", "2", "--ray", "local"]) == 2
    assert "--workers does not apply with --ray" in capsys.readouterr().err


# ------------------------------------------------------------------------- sweeps
@pytest.mark.slow
def test_process_sweep_equals_serial_and_resumes_as_done(setup, tmp_path):
    root, serial = setup
    store = tmp_path / "processes.sqlite"
    lines: list[str] = []
    summary = sweep(root / "checkpoints.txt", root / "sweep.toml", store, workers=2,
                    log=lines.append, progress=False)
    assert (summary.units_done, summary.units_reused) == (UNITS, 0)
    unit_lines = [line for line in lines if " rows in " in line]
    assert len(unit_lines) == UNITS and all(" in worker " in line for line in unit_lines)
    pids = {line.rsplit(" in worker ", 1)[1] for line in unit_lines}
    assert len(pids) == 2 and str(os.getpid()) not in pids  # two processes, not this one
    assert _snapshot(store) == serial
    # each unit's recorded time is its work in the worker (as logged), not the driver's commit
    logged = sorted(float(line.rsplit(" rows in ", 1)[1].split(" s")[0]) for line in unit_lines)
    with ResultStore(store, create=False) as db:
        recorded = sorted(float(f"{unit.wall_s:.1f}") for unit in db.units())
    assert recorded == logged
    again = sweep(root / "checkpoints.txt", root / "sweep.toml", store, workers=2,
                  progress=False)
    assert (again.units_done, again.units_reused, again.rows_written) == (0, UNITS, 0)
    assert _snapshot(store) == serial


@pytest.mark.slow
def test_driver_killed_and_resumed_equals_uninterrupted(setup, tmp_path):
    root, serial = setup
    killed = tmp_path / "killed.sqlite"
    # The driver, in a child process, announces its worker processes after its second unit is
    # committed and waits to be killed: the kill lands at a known point, never a random one.
    child_code = (
        "import multiprocessing, sys, time\n"
        "from speechrank.sweep import sweep\n"
        "done = []\n"
        "def log(line):\n"
        "    if ' rows in ' not in line:\n"
        "        return\n"
        "    done.append(line)\n"
        "    if len(done) == 2:\n"
        "        pids = [str(p.pid) for p in multiprocessing.active_children()]\n"
        "        print('UNITS 2', *pids, flush=True)\n"
        "        time.sleep(600)\n"
        "sweep(sys.argv[1], sys.argv[2], sys.argv[3], workers=2, log=log, progress=False)\n"
        "print('FINISHED', flush=True)\n")
    child = subprocess.Popen(
        [sys.executable, "-c", child_code, str(root / "checkpoints.txt"),
         str(root / "sweep.toml"), str(killed)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    announced = child.stdout.readline().split()  # blocks until the driver is at its point
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    assert announced[:2] == ["UNITS", "2"], child.stderr.read()[-2000:]
    assert child.returncode == -signal.SIGKILL
    workers = [int(pid) for pid in announced[2:]]
    assert len(workers) == 2
    deadline = time.monotonic() + 60  # a bound for a broken test, not a race
    while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in workers)  # orphaned workers left on their own
    assert _unit_count(killed) == 2

    resumed = sweep(root / "checkpoints.txt", root / "sweep.toml", killed, workers=2,
                    progress=False)
    assert (resumed.units_reused, resumed.units_done) == (2, UNITS - 2)
    assert _unit_count(killed) == UNITS
    assert _snapshot(killed) == serial


@pytest.mark.slow
def test_worker_killed_fails_in_one_line_and_a_rerun_finishes(setup, tmp_path):
    from speechrank.sweep import ProcessExecutor, run_units
    from speechrank.sweep.checkpoint_task import PausePoint
    from speechrank.sweep.series import find_series

    root, serial = setup
    cfg = SweepConfig.from_toml(root / "sweep.toml")
    checkpoints = find_checkpoints(root / "checkpoints.txt")
    target = plan_units(checkpoints, cfg, run_name(checkpoints, root / "checkpoints.txt"))[3]
    assert target.kind == "probe"  # the second checkpoint's probe: its rank unit is done
    pause_dir = tmp_path / "pause"
    pause_dir.mkdir()
    store = tmp_path / "broken.sqlite"
    outcome: dict[str, object] = {}
    executor = ProcessExecutor(workers=2, threads=1,
                               pause=PausePoint(unit_key=target.key, directory=str(pause_dir)))

    def drive() -> None:
        try:
            outcome["summary"] = run_units(find_series(root / "checkpoints.txt"), cfg, store,
                                           executor, progress=False)
        except BaseException as err:  # surfaced by the assertions below
            outcome["error"] = err

    driver = threading.Thread(target=drive)
    driver.start()
    started = pause_dir / "started"
    deadline = time.monotonic() + 300  # a bound for a broken test, not a race
    while not started.exists() and driver.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), outcome
    os.kill(int(started.read_text()), signal.SIGKILL)
    driver.join(timeout=300)
    assert not driver.is_alive()
    error = outcome.get("error")
    assert isinstance(error, SpeechrankError), outcome
    assert "worker process died" in str(error) and "\n" not in str(error)
    with ResultStore(store, create=False) as opened:
        assert not opened.is_done(target.key)
    with sqlite3.connect(store) as db:  # only whole units: every row belongs to a done unit
        assert db.execute("SELECT COUNT(*) FROM results WHERE unit NOT IN "
                          "(SELECT key FROM units)").fetchone()[0] == 0
        assert all(n == stored for n, stored in db.execute(
            "SELECT n_results, (SELECT COUNT(*) FROM results WHERE unit = units.key) "
            "FROM units"))
    assert _unit_count(store) < UNITS

    again = sweep(root / "checkpoints.txt", root / "sweep.toml", store, workers=2,
                  progress=False)
    assert again.units_done + again.units_reused == UNITS
    assert _snapshot(store) == serial
