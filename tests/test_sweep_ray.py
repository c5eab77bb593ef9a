"""`speechrank sweep --ray`: same store as the serial sweep, retried workers, resumed drivers.

The Ray tests share one local cluster of 2 CPUs (module fixture: Ray starts in 10-20 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from speechrank.cli import main
from speechrank.store import ResultStore
from speechrank.sweep import SweepConfig, find_checkpoints, plan_units, run_name

from .tone_sweep import serial_sweep_one_thread, write_tone_sweep
from .tone_sweep import snapshot as _snapshot
from .tone_sweep import unit_count as _unit_count

UNITS = 4  # 2 checkpoints x (rank + 1 probe)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two random checkpoints, a small tone manifest, and the serial sweep's store at one
    torch thread (as each Ray task runs: the same float sums)."""
    root = tmp_path_factory.mktemp("sweep_ray")
    write_tone_sweep(root, 2)
    serial = root / "serial.sqlite"
    assert serial_sweep_one_thread(root, serial) == UNITS
    return root, _snapshot(serial)


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from speechrank.sweep.ray_executor import connect

    assert connect("local", num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_plan_units_keys_and_order(setup):
    root, _ = setup
    cfg = SweepConfig.from_toml(root / "sweep.toml")
    checkpoints = find_checkpoints(root / "checkpoints.txt")
    units = plan_units(checkpoints, cfg, run_name(checkpoints, root / "checkpoints.txt"))
    assert [(u.kind, u.checkpoint.step) for u in units] == [
        ("rank", 0), ("probe", 0), ("rank", 100), ("probe", 100)]
    assert len({u.key for u in units}) == UNITS
    assert units[1].probe is not None and units[1].key.endswith("|probe|pitch")


def test_ray_missing_fails_with_one_line(setup, tmp_path, monkeypatch, capsys):
    root, _ = setup
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code = main(["sweep", str(root / "checkpoints.txt"), "--config", str(root / "sweep.toml"),
                 "--store", str(tmp_path / "s.sqlite"), "--ray", "local"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "pip install 'speechrank[ray]'" in err
    assert not (tmp_path / "s.sqlite").exists()


def test_bad_resources_rejected(setup, tmp_path):
    pytest.importorskip("ray")
    from speechrank.errors import SpeechrankError
    from speechrank.sweep.ray_executor import RayExecutor, sweep_on_ray

    root, _ = setup
    with pytest.raises(SpeechrankError, match="cpus-per-unit"):
        sweep_on_ray(root / "checkpoints.txt", root / "sweep.toml", tmp_path / "s.sqlite",
                     RayExecutor(cpus_per_unit=0))


@pytest.mark.slow
def test_ray_sweep_equals_serial_and_resumes_as_done(setup, cluster, tmp_path):
    from speechrank.sweep.ray_executor import sweep_on_ray

    root, serial = setup
    store = tmp_path / "ray.sqlite"
    lines: list[str] = []
    summary = sweep_on_ray(root / "checkpoints.txt", root / "sweep.toml", store,
                           log=lines.append)
    assert (summary.units_done, summary.units_reused) == (UNITS, 0)
    assert len(lines) == UNITS and all("on Ray" in line for line in lines)
    assert _snapshot(store) == serial
    again = sweep_on_ray(root / "checkpoints.txt", root / "sweep.toml", store)
    assert (again.units_done, again.units_reused, again.rows_written) == (0, UNITS, 0)
    assert _snapshot(store) == serial


@pytest.mark.slow
def test_worker_killed_mid_unit_is_retried_nothing_lost_or_duplicated(setup, cluster, tmp_path):
    from speechrank.sweep.ray_executor import PausePoint, RayExecutor, sweep_on_ray

    root, serial = setup
    cfg = SweepConfig.from_toml(root / "sweep.toml")
    checkpoints = find_checkpoints(root / "checkpoints.txt")
    target = plan_units(checkpoints, cfg, run_name(checkpoints, root / "checkpoints.txt"))[2]
    pause_dir = tmp_path / "pause"
    pause_dir.mkdir()
    store = tmp_path / "killed.sqlite"
    outcome: dict[str, object] = {}

    def drive() -> None:
        try:
            outcome["summary"] = sweep_on_ray(
                root / "checkpoints.txt", root / "sweep.toml", store,
                RayExecutor(pause=PausePoint(unit_key=target.key, directory=str(pause_dir))))
        except BaseException as err:  # surfaced by the assertions below
            outcome["error"] = err

    driver = threading.Thread(target=drive)
    driver.start()
    started = pause_dir / "started"
    deadline = time.monotonic() + 300  # a bound for a broken test, not a race
    while not started.exists() and driver.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), outcome
    victim = int(started.read_text())
    # The paused task is mid-unit: its checkpoint is loaded, nothing of it is committed.
    with ResultStore(store, create=False) as opened:
        assert not opened.is_done(target.key)
    os.kill(victim, signal.SIGKILL)
    driver.join(timeout=300)
    assert not driver.is_alive()
    assert "error" not in outcome, outcome.get("error")
    summary = outcome["summary"]
    assert summary.units_done == UNITS
    attempts = sorted(p.name for p in pause_dir.glob("attempt-*"))
    assert len(attempts) == 2 and f"attempt-{victim}" in attempts  # killed, then retried
    assert _unit_count(store) == UNITS
    snapshot = _snapshot(store)
    assert len(snapshot) == len(serial) == len(set(snapshot))  # nothing lost or duplicated
    assert snapshot == serial


@pytest.mark.slow
def test_driver_killed_and_restarted_resumes_from_the_store(setup, cluster, tmp_path):
    from speechrank.sweep.ray_executor import sweep_on_ray

    root, serial = setup
    store = tmp_path / "driver.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    # The driver, in a child process, announces its first committed unit and waits to be
    # killed: the kill lands at a known point. (Polling the store instead raced the driver,
    # which commits a checkpoint's units together and can commit all of them between polls.)
    child_code = (
        "import sys, time\n"
        "from speechrank.sweep.ray_executor import RayExecutor, sweep_on_ray\n"
        "def log(line):\n"
        "    if ' rows in ' in line:\n"
        "        print('UNITS 1', flush=True)\n"
        "        time.sleep(600)\n"
        "sweep_on_ray(sys.argv[1], sys.argv[2], sys.argv[3], RayExecutor(address=sys.argv[4]),\n"
        "             log=log)\n"
        "print('FINISHED', flush=True)\n")
    child = subprocess.Popen(
        [sys.executable, "-c", child_code, str(root / "checkpoints.txt"),
         str(root / "sweep.toml"), str(store), cluster],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    announced = child.stdout.readline().split()  # blocks until the driver is at its point
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert announced == ["UNITS", "1"], child.stderr.read()[-2000:]
    assert child.returncode == -signal.SIGKILL
    committed = _unit_count(store)
    assert committed == 1

    resumed = sweep_on_ray(root / "checkpoints.txt", root / "sweep.toml", store)
    assert resumed.units_reused == committed
    assert resumed.units_done == UNITS - committed
    assert _unit_count(store) == UNITS
    assert _snapshot(store) == serial
