"""The redesign keeps the numbers: `rank` and `probe` on FSDD (random:tiny, seed 0) against
golden JSON files written before it (tests/golden/).

Rank values must agree to 1e-6 relative, probe scores to 1e-4 absolute; wall times, paths and
versions are not compared, nor the conventions that describe a value's outcome rather than how
it was made (the store's volatile keys, e.g. a probe score's standard error). The golden files
were written with one torch thread, and a float32 forward on two threads moves RankMe by ~1e-8,
so the comparison runs on one thread too. The tolerances are those of the float32 forward
pass, not of the metrics: on another processor torch and OpenBLAS take other SIMD kernels,
which moved RankMe by 1.2e-8 relative and a probe's train macro-F1 by 4e-6 (an lbfgs path
turning on the last bits of the features) while every count-based score stayed identical; a
change of method moves these values by orders of magnitude more. (Rank conventions near zero,
such as an alpha-ReQ intercept of 0.0099, also get 1e-7 absolute.) Regenerate a golden file
only for an intended change of numbers, with the command recorded in its test below.

The probe files of the default solver (the batched torch one) are ``probe_TASK_fsdd_tiny.json``;
scikit-learn's lbfgs, the reference solver, must still give the numbers it gave before the
batched solver existed: ``probe_TASK_fsdd_tiny_sklearn.json`` are those files as written then,
unchanged, so their rows name the solver ``lbfgs`` and lack the conventions and fit records
added since (:data:`ADDED_SINCE_SKLEARN_GOLDEN`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from speechrank.cli import main
from speechrank.store import VOLATILE_CONVENTION_KEYS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _kept(conventions: dict) -> dict:
    return {k: v for k, v in conventions.items() if k not in VOLATILE_CONVENTION_KEYS}


GOLDEN = Path(__file__).resolve().parent / "golden"

#: What the scikit-learn golden files predate: per row, the recorded solver's name (``lbfgs``
#: then, ``sklearn-lbfgs`` now) and the class weighting; per layer's fit, the iterations per C.
ADDED_SINCE_SKLEARN_GOLDEN = {"conventions": {"class_weight": "none"},
                              "renamed": {"solver": ("lbfgs", "sklearn-lbfgs")},
                              "fits": ("n_iter_per_c",)}


def _as_sklearn_golden(fresh: Path, out: Path) -> None:
    """``fresh`` (a ``--solver sklearn`` run) written as the scikit-learn golden files record
    it, after checking that what they predate has the value it must have."""
    summary = json.loads(fresh.read_text())
    for row in summary["results"]:
        conventions = row["conventions"]
        for key, value in ADDED_SINCE_SKLEARN_GOLDEN["conventions"].items():
            assert conventions.pop(key) == value, key
        for key, (old, new) in ADDED_SINCE_SKLEARN_GOLDEN["renamed"].items():
            assert conventions[key] == new, key
            conventions[key] = old
    for fit in summary["fits"].values():
        for key in ADDED_SINCE_SKLEARN_GOLDEN["fits"]:
            assert len(fit.pop(key)) == len(fit["converged_per_c"]), key
    out.write_text(json.dumps(summary))


def _rows(path: Path) -> dict[tuple, dict]:
    rows = json.loads(path.read_text())["results"]
    keyed = {(r["layer"], r["pooling"], r["metric"], r["task"], r["split"]): r for r in rows}
    assert len(keyed) == len(rows), f"{path.name}: duplicate row keys"
    return keyed


def _close(a, b, *, rel: float, abs_tol: float) -> bool:
    """Equal structure, equal non-float leaves, floats within the tolerance (NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel=rel, abs_tol=abs_tol)
                                            for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, rel=rel, abs_tol=abs_tol)
                                        for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        if math.isnan(a):
            return math.isnan(b)
        return b == pytest.approx(a, rel=rel, abs=abs_tol)
    return a == b


def _compare(golden: Path, fresh: Path, *, rel: float = 0.0, abs_tol: float = 0.0) -> None:
    want, got = _rows(golden), _rows(fresh)
    assert sorted(got) == sorted(want)
    for key, row in want.items():
        new = got[key]
        for field in ("n_rows", "dim", "model", "checkpoint", "step"):
            assert new[field] == row[field], (key, field)
        assert _close(_kept(row["conventions"]), _kept(new["conventions"]), rel=rel,
                      abs_tol=abs_tol), key
        a, b = row["value"], new["value"]
        if a is None or (isinstance(a, float) and math.isnan(a)):
            assert b is None or math.isnan(b), key
        else:
            assert b == pytest.approx(a, rel=rel, abs=abs_tol), key


def _fsdd_spec(fsdd_root: Path) -> str:
    # The golden files were written with the spec as the CLI saw it from the repository root.
    return "fsdd:../shared/data/fsdd" if fsdd_root.exists() else ""


def test_rank_golden(fsdd_root, tmp_path, monkeypatch):
    monkeypatch.chdir(GOLDEN.parents[1])
    out = tmp_path / "rank.json"
    assert main(["rank", "random:tiny", _fsdd_spec(fsdd_root), "--num-utterances", "200",
                 "--max-frames", "2000", "--seed", "0", "--quiet", "--json", str(out)]) == 0
    _compare(GOLDEN / "rank_fsdd_tiny.json", out, rel=1e-6, abs_tol=1e-7)
    summary = json.loads(out.read_text())
    golden = json.loads((GOLDEN / "rank_fsdd_tiny.json").read_text())
    assert summary["counts"] == golden["counts"]
    assert summary["data"]["info"] == golden["data"]["info"]


@pytest.fixture(scope="module")
def golden_feature_cache(tmp_path_factory):
    """One feature cache for the probe golden runs: the first run encodes FSDD and writes the
    float32 features, the others (both tasks use the same clips and layers) read the same
    values back, instead of encoding FSDD four times."""
    return tmp_path_factory.mktemp("golden-features")


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["default", "sklearn"])
@pytest.mark.parametrize("task", ["ks", "sid"])
def test_probe_golden(task, solver, fsdd_root, tmp_path, monkeypatch, golden_feature_cache):
    monkeypatch.chdir(GOLDEN.parents[1])
    out = tmp_path / f"probe_{task}.json"
    chosen = [] if solver == "default" else ["--solver", solver]
    assert main(["probe", "random:tiny", _fsdd_spec(fsdd_root), "--task", task,
                 "--layers", "0,2", "--max-seconds", "1.0", "--cache-dir",
                 str(golden_feature_cache), "--seed", "0", *chosen, "--quiet", "--json",
                 str(out)]) == 0
    golden = GOLDEN / f"probe_{task}_fsdd_tiny.json"
    if solver == "sklearn":
        golden = GOLDEN / f"probe_{task}_fsdd_tiny_sklearn.json"
        _as_sklearn_golden(out, out)
    _compare(golden, out, abs_tol=1e-4)
    summary, want = json.loads(out.read_text()), json.loads(golden.read_text())
    for field in ("counts", "classes", "chance", "splits", "train_class_counts"):
        assert summary[field] == want[field], field
    # The chosen C and convergence exactly; the dev curve within one dev clip, since at a C
    # that was not chosen another processor's float path may flip a clip.
    assert _close(want["fits"], summary["fits"], rel=0.0,
                  abs_tol=1.0 / want["counts"]["dev"] + 1e-9)
    for layer, fit in want["fits"].items():
        assert summary["fits"][layer]["C"] == fit["C"], layer
