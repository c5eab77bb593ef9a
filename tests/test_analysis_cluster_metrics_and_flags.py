"""correlate and the report with the cluster metrics and flags (cluster metrics oriented
lower-is-better; not-converged and dominated values noted)."""

from __future__ import annotations

import pytest

from speechrank.analysis import correlate
from speechrank.analysis.options import AnalysisOptions
from speechrank.results import ResultRow
from speechrank.store import ResultStore, conventions_hash

STEPS = [0, 10, 20, 30, 40]


def _rows() -> list[ResultRow]:
    rows = []
    for s in STEPS:
        for layer in "01":
            score = 0.5 + 0.01 * s + 0.001 * int(layer)
            conv = {"eps": 1e-7,
                    "convergence": {"converged": s != 40, "last_change": 0.01 if s != 40
                                    else 0.05},
                    "dominance": {"dominated": layer == "1", "first_direction_share": 0.95}}
            rows.append(ResultRow("m", f"c{s}", s, "u", layer, "sum", "rankme", 10.0 + s,
                                  100, 16, conventions=conv))
            # inertia falls as the probe improves: lower is better clustering
            rows.append(ResultRow("m", f"c{s}", s, "u", layer, "frames", "kmeans_inertia",
                                  0.9 - 0.01 * s, 400, 16, conventions={"n_clusters": 8}))
            rows.append(ResultRow("m", f"c{s}", s, "u", layer, "frames", "davies_bouldin",
                                  3.0 - 0.02 * s, 400, 16, conventions={"n_clusters": 8}))
            rows.append(ResultRow("m", f"c{s}", s, "l", layer, "mean", "accuracy", score, 50,
                                  16, task="ks", split="test", domain="in",
                                  conventions={"seed": 0}))
    return rows


def test_cluster_metrics_are_negated_and_flags_noted():
    report = correlate(_rows(), AnalysisOptions(n_bootstrap=20))
    by_metric = {s.metric: s for s in report.summary}
    for name in ("kmeans_inertia", "davies_bouldin"):
        assert by_metric[name].pair.metric_orientation == -1
        assert by_metric[name].within_rho_median == pytest.approx(1.0)
    assert report.settings["orientation"]["metrics"]["kmeans_inertia"] == -1
    notes = " ".join(report.notes)
    assert "2 of 10 values not converged" in notes
    assert "5 of 10 values dominated by one direction" in notes
    (flags,) = report.settings["flags"].values()
    assert flags == {"values": 10, "not_converged": 2, "dominated": 5}


def test_flags_do_not_change_a_stored_value_identity():
    a, b = _rows()[0], _rows()[0]
    b = ResultRow(**{**b.to_dict(), "conventions": {**b.conventions,
                                                     "convergence": {"converged": True}}})
    assert conventions_hash(a.conventions) == conventions_hash(b.conventions)


def test_report_lists_the_new_metrics_and_notes(tmp_path):
    from speechrank.report import write_report

    with ResultStore(tmp_path / "s.sqlite") as store:
        store.add_rows(_rows())
        index = write_report(store, tmp_path / "out", n_bootstrap=20)
    html = index.read_text(encoding="utf-8")
    assert "kmeans_inertia" in html and "davies_bouldin" in html
    assert "not converged" in html and "dominated by one direction" in html
