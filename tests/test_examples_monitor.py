"""The monitor examples run end to end (small settings) and print the logged rank table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import require_fsdd

REPO = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> str:
    data = ["--data", f"fsdd:{require_fsdd()}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    done = subprocess.run([sys.executable, str(REPO / "examples" / script), *data, *args],
                          capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _table(stdout: str) -> dict[int, list[float]]:
    rows = {}
    for line in stdout.splitlines():
        cells = line.split()
        if cells and re.fullmatch(r"\d+", cells[0]) and len(cells) > 2:
            rows[int(cells[0])] = [float(c) for c in cells[1:] if re.fullmatch(r"[\d.]+", c)]
    return rows


@pytest.mark.slow
def test_lightning_example(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    out = _run("lightning_monitor.py", "--size", "micro", "--steps", "4", "--every", "2",
               "--heldout", "12", "--train-utterances", "24", "--batch-size", "4",
               "--store", str(store))
    assert "RankMe-t per layer" in out
    table = _table(out)
    assert sorted(table) == [0, 2, 4]
    assert all(len(v) == 3 and all(x >= 1.0 for x in v) for v in table.values())  # micro: 0-2
    from speechrank.store import ResultStore

    with ResultStore(store, create=False) as results:
        assert {r.step for r in results.rows()} == {0, 2, 4}


@pytest.mark.slow
def test_hf_trainer_example(tmp_path: Path) -> None:
    out = _run("hf_trainer_monitor.py", "--steps", "4", "--every", "2", "--heldout", "10",
               "--train-utterances", "24", "--batch-size", "4", "--output-dir", str(tmp_path))
    assert "training loss: step 2:" in out
    table = _table(out)
    assert sorted(table) == [0, 2, 4]
    assert all(len(v) == 5 for v in table.values())  # layers 0-4 of the tiny wav2vec 2.0
