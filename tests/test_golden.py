"""The redesign keeps the numbers: `rank` and `probe` on FSDD (random:tiny, seed 0) against
golden JSON files written before it (tests/golden/).

Rank values must agree to 1e-9 relative, probe scores exactly; wall times, paths and versions
are not compared. Regenerate a golden file only for an intended change of numbers, with the
command recorded in its test below.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from speechrank.cli import main

GOLDEN = Path(__file__).resolve().parent / "golden"


def _rows(path: Path) -> dict[tuple, dict]:
    rows = json.loads(path.read_text())["results"]
    keyed = {(r["layer"], r["pooling"], r["metric"], r["task"], r["split"]): r for r in rows}
    assert len(keyed) == len(rows), f"{path.name}: duplicate row keys"
    return keyed


def _compare(golden: Path, fresh: Path, *, rel: float) -> None:
    want, got = _rows(golden), _rows(fresh)
    assert sorted(got) == sorted(want)
    for key, row in want.items():
        new = got[key]
        for field in ("n_rows", "dim", "conventions", "model", "checkpoint", "step"):
            assert new[field] == row[field], (key, field)
        a, b = row["value"], new["value"]
        if a is None or (isinstance(a, float) and math.isnan(a)):
            assert b is None or math.isnan(b), key
        elif rel == 0.0:
            assert b == a, (key, a, b)
        else:
            assert b == pytest.approx(a, rel=rel, abs=0.0), key


def _fsdd_spec(fsdd_root: Path) -> str:
    # The golden files were written with the spec as the CLI saw it from the repository root.
    return "fsdd:../shared/data/fsdd" if fsdd_root.exists() else ""


def test_rank_golden(fsdd_root, tmp_path, monkeypatch):
    monkeypatch.chdir(GOLDEN.parents[1])
    out = tmp_path / "rank.json"
    assert main(["rank", "random:tiny", _fsdd_spec(fsdd_root), "--num-utterances", "200",
                 "--max-frames", "2000", "--seed", "0", "--quiet", "--json", str(out)]) == 0
    _compare(GOLDEN / "rank_fsdd_tiny.json", out, rel=1e-9)
    summary = json.loads(out.read_text())
    golden = json.loads((GOLDEN / "rank_fsdd_tiny.json").read_text())
    assert summary["counts"] == golden["counts"]
    assert summary["data"]["info"] == golden["data"]["info"]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["ks", "sid"])
def test_probe_golden(task, fsdd_root, tmp_path, monkeypatch):
    monkeypatch.chdir(GOLDEN.parents[1])
    out = tmp_path / f"probe_{task}.json"
    assert main(["probe", "random:tiny", _fsdd_spec(fsdd_root), "--task", task,
                 "--layers", "0,2", "--max-seconds", "1.0", "--no-cache", "--seed", "0",
                 "--quiet", "--json", str(out)]) == 0
    golden = GOLDEN / f"probe_{task}_fsdd_tiny.json"
    _compare(golden, out, rel=0.0)
    summary, want = json.loads(out.read_text()), json.loads(golden.read_text())
    for field in ("counts", "classes", "chance", "fits", "splits", "train_class_counts"):
        assert summary[field] == want[field], field
