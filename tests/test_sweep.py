"""`speechrank sweep`: config parsing, checkpoint order, and resume after SIGKILL."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from speechrank.cli import main
from speechrank.errors import SpeechrankError
from speechrank.store import ResultStore
from speechrank.sweep import SweepConfig, find_checkpoints, sweep

from .tone_sweep import write_tone_sweep


@pytest.fixture(scope="module")
def sweep_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    write_tone_sweep(root, 3, extra_options=(
        "checkpoint_workers = 1  # this process (the process executor: "
        "test_sweep_processes.py)\n"))
    return root


def _snapshot(path: Path) -> list[tuple]:
    with ResultStore(path, create=False) as store:
        return sorted((r.checkpoint, r.step, r.layer, r.pooling, r.metric, r.task, r.split,
                       round(r.value, 12), r.n_rows) for r in store.rows())


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[rank]\ndata = 'x'\nwat = 1\n")
    with pytest.raises(SpeechrankError, match="wat"):
        SweepConfig.from_toml(bad)
    bad.write_text("[[probe]]\ntask = 'ks'\n")
    with pytest.raises(SpeechrankError, match="missing"):
        SweepConfig.from_toml(bad)
    bad.write_text("not toml [")
    with pytest.raises(SpeechrankError, match="TOML"):
        SweepConfig.from_toml(bad)
    with pytest.raises(SpeechrankError, match="not found"):
        SweepConfig.from_toml(tmp_path / "missing.toml")


def test_checkpoints_ordered_by_step(tmp_path):
    for name in ("checkpoint-200", "checkpoint-0", "checkpoint-1000", "checkpoint-1200"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        if name != "checkpoint-1200":  # no weights yet: incomplete, not listed
            (tmp_path / name / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "not-a-model").mkdir()
    found = find_checkpoints(tmp_path)
    assert [c.step for c in found] == [0, 200, 1000]
    assert {c.format for c in found} == {"huggingface"}
    with pytest.raises(SpeechrankError):
        find_checkpoints(tmp_path / "nope")


@pytest.mark.slow
def test_sweep_killed_and_resumed_equals_uninterrupted(sweep_setup, tmp_path):
    root = sweep_setup
    whole = tmp_path / "whole.sqlite"
    summary = sweep(root / "checkpoints.txt", root / "sweep.toml", whole, progress=False)
    assert summary.units_done == 6 and summary.units_reused == 0
    rows = _snapshot(whole)
    assert {r[0] for r in rows} == {"random:tiny@0", "random:tiny@1", "random:tiny@2"}
    assert {r[5] for r in rows} == {"", "pitch"}
    with ResultStore(whole, create=False) as store:
        assert [(c.checkpoint, c.step, c.format) for c in store.checkpoints()] == [
            ("random:tiny@0", 0, "random"), ("random:tiny@1", 100, "random"),
            ("random:tiny@2", 200, "random")]

    # The same sweep in a child process, killed with SIGKILL at a point the child announces:
    # after its second unit is committed it prints a line and waits to be killed, so the
    # child can never finish first and the kill never lands at a random moment.
    killed = tmp_path / "killed.sqlite"
    child_code = (
        "import sys, time\n"
        "from speechrank.sweep import sweep\n"
        "done = []\n"
        "def log(line):\n"
        "    done.append(line)\n"
        "    if len(done) == 2:\n"
        "        print('UNITS 2', flush=True)\n"
        "        time.sleep(600)\n"
        "sweep(sys.argv[1], sys.argv[2], sys.argv[3], log=log)\n"
        "print('FINISHED', flush=True)\n")
    child = subprocess.Popen(
        [sys.executable, "-c", child_code, str(root / "checkpoints.txt"),
         str(root / "sweep.toml"), str(killed)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    announced = child.stdout.readline().strip()  # blocks until the child is at its point
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    assert announced == "UNITS 2", child.stderr.read()[-2000:]
    assert child.returncode == -signal.SIGKILL
    with sqlite3.connect(killed, timeout=1) as db:
        assert db.execute("SELECT COUNT(*) FROM units").fetchone()[0] == 2

    resumed = sweep(root / "checkpoints.txt", root / "sweep.toml", killed, progress=False)
    assert resumed.units_reused >= 2
    assert resumed.units_done + resumed.units_reused == 6
    assert _snapshot(killed) == rows

    again = sweep(root / "checkpoints.txt", root / "sweep.toml", killed, progress=False)
    assert again.units_done == 0 and again.units_reused == 6
    assert _snapshot(killed) == rows


@pytest.mark.slow
def test_cli_sweep_correlate_report(sweep_setup, tmp_path, capsys):
    root = sweep_setup
    store = tmp_path / "s.sqlite"
    assert main(["sweep", str(root / "checkpoints.txt"), "--config", str(root / "sweep.toml"),
                 "--store", str(store), "--quiet", "--csv", str(tmp_path / "s.csv")]) == 0
    assert (tmp_path / "s.csv").read_text().count("\n") > 10
    assert main(["correlate", str(store), "--bootstrap", "50", "--json",
                 str(tmp_path / "c.json")]) == 0
    payload = json.loads((tmp_path / "c.json").read_text())
    assert payload["summary"], payload.keys()
    assert main(["report", str(store), str(tmp_path / "report"), "--bootstrap", "50"]) == 0
    assert (tmp_path / "report" / "index.html").is_file()
    out = capsys.readouterr().out
    assert "report:" in out
