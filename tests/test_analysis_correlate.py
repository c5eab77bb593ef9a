"""correlate(): pairing, orientation, best-layer agreement, regret, checkpoint selection,
phases, variants and NaN handling on hand-made tables."""

from __future__ import annotations

import json
import math

import pytest
from rich.console import Console
from scipy import stats

from speechrank.analysis import correlate, orientation, render_tables
from speechrank.analysis.options import AnalysisOptions
from speechrank.cli import to_rich
from speechrank.errors import SpeechrankError
from speechrank.results import ResultRow, dumps_json
from speechrank.store import ResultStore


def metric_row(ckpt: str, step: int | None, layer: str, value: float, *, metric="rankme",
               pooling="sum", conventions=None, model="m") -> ResultRow:
    return ResultRow(model, ckpt, step, "unlabelled", layer, pooling, metric, value, 100, 16,
                     conventions=conventions or {"eps": 1e-7})


def score_row(ckpt: str, step: int | None, layer: str, value: float, *, task="ks",
              score="accuracy", domain="in", split="test", model="m") -> ResultRow:
    return ResultRow(model, ckpt, step, "labelled", layer, "mean", score, value, 50, 16,
                     task=task, split=split, domain=domain, conventions={"seed": 0})


def table(metric_values: dict[tuple[int, str], float],
          score_values: dict[tuple[int, str], float], **score_kw) -> list[ResultRow]:
    """Rows from {(step, layer): value} dicts; checkpoint names are ``c<step>``."""
    rows = [metric_row(f"c{s}", s, layer, v) for (s, layer), v in metric_values.items()]
    rows += [score_row(f"c{s}", s, layer, v, **score_kw)
             for (s, layer), v in score_values.items()]
    return rows


def only(records, **match):
    found = [r for r in records if all(getattr(r, k) == v for k, v in match.items())]
    assert len(found) == 1, found
    return found[0]


STEPS = [0, 10, 20, 30, 40]


def test_monotone_within_layer_gives_rho_one():
    metric = {(s, layer): s + 100 * int(layer) for s in STEPS for layer in "012"}
    score = {(s, layer): 0.1 * s + 0.01 * int(layer) for s in STEPS for layer in "012"}
    rep = correlate(table(metric, score), AnalysisOptions(n_bootstrap=50))
    assert len(rep.within_layer) == 3
    for c in rep.within_layer:
        assert c.spearman == pytest.approx(1.0) and c.kendall == pytest.approx(1.0)
        assert c.n == 5 and c.reason == ""
    (summary,) = rep.summary
    assert summary.within_rho_median == pytest.approx(1.0) and summary.within_n == 3
    assert summary.n_checkpoints == 5 and summary.n_layers == 3 and summary.n_points == 15


def test_reversed_series_gives_minus_one_and_per_flips_the_sign():
    metric = {(s, "1"): float(s) for s in STEPS}
    falling = {(s, "1"): 1.0 - 0.01 * s for s in STEPS}
    acc = correlate(table(metric, falling), AnalysisOptions(n_bootstrap=0))
    per = correlate(table(metric, falling, task="pr", score="per"), AnalysisOptions(n_bootstrap=0))
    assert only(acc.within_layer, layer="1").spearman == pytest.approx(-1.0)
    # a falling PER is an improving model: oriented, the metric agrees perfectly
    c = only(per.within_layer, layer="1")
    assert c.spearman == pytest.approx(1.0) and c.score_orientation == -1
    assert per.settings["orientation"]["scores"] == {"per": -1}


def test_noisy_series_match_scipy():
    metric = {(s, "0"): v for s, v in zip(STEPS, [3.0, 1.0, 4.0, 1.5, 5.0], strict=True)}
    score = {(s, "0"): v for s, v in zip(STEPS, [0.2, 0.3, 0.5, 0.1, 0.4], strict=True)}
    rep = correlate(table(metric, score), AnalysisOptions(n_bootstrap=200))
    c = only(rep.within_layer, layer="0")
    x, y = [3.0, 1.0, 4.0, 1.5, 5.0], [0.2, 0.3, 0.5, 0.1, 0.4]
    assert c.spearman == pytest.approx(stats.spearmanr(x, y).statistic)
    assert c.kendall_p == pytest.approx(stats.kendalltau(x, y).pvalue)
    assert c.spearman_low <= c.spearman <= c.spearman_high


def test_best_layer_agreement_and_regret():
    metric = {(0, "0"): 1.0, (0, "1"): 3.0, (0, "2"): 2.0,
              (10, "0"): 1.0, (10, "1"): 2.0, (10, "2"): 3.0}
    score = {(0, "0"): 0.5, (0, "1"): 0.6, (0, "2"): 0.7,
             (10, "0"): 0.1, (10, "1"): 0.2, (10, "2"): 0.3}
    rep = correlate(table(metric, score), AnalysisOptions(n_bootstrap=0))
    a = only(rep.best_layer, checkpoint="c0")
    assert (a.picked, a.best, a.agree) == ("1", ("2",), False)
    assert a.regret == pytest.approx(0.1) and a.picked_score == 0.6 and a.best_score == 0.7
    b = only(rep.best_layer, checkpoint="c10")
    assert (b.picked, b.best, b.agree, b.regret) == ("2", ("2",), True, 0.0)
    (s,) = rep.summary
    assert s.best_layer_agreement == pytest.approx(0.5) and s.best_layer_n == 2
    assert s.best_layer_regret_mean == pytest.approx(0.05)
    # across layers at c0: metric ranks 1,3,2 vs score ranks 1,2,3
    c0 = only(rep.across_layers, checkpoint="c0")
    assert c0.spearman == pytest.approx(0.5) and c0.n == 3 and c0.step == 0


def test_per_regret_is_in_per_units_and_positive():
    metric = {(0, "0"): 5.0, (0, "1"): 2.0, (0, "2"): 1.0}
    per = {(0, "0"): 0.30, (0, "1"): 0.20, (0, "2"): 0.10}
    rep = correlate(table(metric, per, task="pr", score="per"), AnalysisOptions(n_bootstrap=0))
    sel = only(rep.best_layer, checkpoint="c0")
    assert (sel.picked, sel.best, sel.agree) == ("0", ("2",), False)
    assert sel.picked_score == 0.30 and sel.best_score == 0.10
    assert sel.regret == pytest.approx(0.20)


def test_metric_ties_pick_the_first_layer_and_score_ties_all_count_as_best():
    metric = {(0, "0"): 2.0, (0, "1"): 2.0, (0, "2"): 1.0}
    score = {(0, "0"): 0.5, (0, "1"): 0.9, (0, "2"): 0.9}
    rep = correlate(table(metric, score), AnalysisOptions(n_bootstrap=0))
    sel = only(rep.best_layer, checkpoint="c0")
    assert sel.picked == "0" and sel.picked_ties == 2
    assert sel.best == ("1", "2") and sel.agree is False
    assert sel.regret == pytest.approx(0.4)


def test_checkpoint_selection_per_layer():
    metric = {(s, layer): v for layer, vals in {"0": [1, 2, 3], "1": [3, 2, 1]}.items()
              for s, v in zip([0, 10, 20], vals, strict=True)}
    score = {(s, layer): v for layer, vals in {"0": [0.1, 0.2, 0.3], "1": [0.1, 0.2, 0.3]}
             .items() for s, v in zip([0, 10, 20], vals, strict=True)}
    rep = correlate(table(metric, score), AnalysisOptions(n_bootstrap=0))
    l0 = only(rep.best_checkpoint, layer="0")
    assert (l0.picked, l0.picked_step, l0.best, l0.agree, l0.regret) == (
        "c20", 20, ("c20",), True, 0.0)
    l1 = only(rep.best_checkpoint, layer="1")
    assert (l1.picked, l1.picked_step, l1.agree) == ("c0", 0, False)
    assert l1.regret == pytest.approx(0.2)
    (s,) = rep.summary
    assert s.checkpoint_agreement == pytest.approx(0.5) and s.checkpoint_n == 2
    assert s.within_rho_min == pytest.approx(-1.0) and s.within_rho_max == pytest.approx(1.0)


def test_fewer_than_three_checkpoints_and_constant_series():
    metric = {(0, "0"): 1.0, (10, "0"): 2.0,
              (0, "1"): 1.0, (10, "1"): 2.0, (20, "1"): 3.0}
    score = {(0, "0"): 0.1, (10, "0"): 0.2,
             (0, "1"): 0.5, (10, "1"): 0.5, (20, "1"): 0.5}
    rep = correlate(table(metric, score), AnalysisOptions(n_bootstrap=10))
    c0 = only(rep.within_layer, layer="0")
    assert math.isnan(c0.spearman) and "fewer than 3" in c0.reason and c0.n == 2
    c1 = only(rep.within_layer, layer="1")
    assert math.isnan(c1.spearman) and c1.reason == "constant score"
    (s,) = rep.summary
    assert math.isnan(s.within_rho_median) and s.within_n == 0
    # layer 1 has three checkpoints with the same score: all are best, the pick agrees
    assert only(rep.best_checkpoint, layer="1").agree is True


def test_non_finite_cells_are_dropped_with_a_note():
    metric = {(s, "0"): float(s) for s in STEPS}
    metric[(20, "0")] = math.nan
    score = {(s, "0"): 0.01 * s for s in STEPS}
    rep = correlate(table(metric, score), AnalysisOptions(n_bootstrap=0))
    assert only(rep.within_layer, layer="0").n == 4
    assert any("non-finite" in n for n in rep.notes)


def test_phases_split_at_the_metric_minimum():
    # V-shaped metric (collapse then recovery); the score follows the dip but recovers late
    steps = [0, 10, 20, 30, 40, 50]
    m = [10.0, 6.0, 2.0, 4.0, 8.0, 12.0]
    sc = [0.9, 0.7, 0.5, 0.45, 0.6, 0.8]
    rows = table({(s, "3"): v for s, v in zip(steps, m, strict=True)},
                 {(s, "3"): v for s, v in zip(steps, sc, strict=True)})
    rep = correlate(rows, AnalysisOptions(n_bootstrap=0))
    collapse = only(rep.phases, phase="collapse")
    recovery = only(rep.phases, phase="recovery")
    assert collapse.checkpoint == "c20" and collapse.step == 20 and collapse.n == 3
    assert collapse.spearman == pytest.approx(1.0)
    assert recovery.n == 4
    assert recovery.spearman == pytest.approx(stats.spearmanr(m[2:], sc[2:]).statistic)
    (s,) = rep.summary
    assert s.collapse_rho_median == pytest.approx(1.0) and s.collapse_n == 1


def test_phase_without_collapse_has_a_reason():
    rows = table({(s, "0"): float(s) for s in STEPS}, {(s, "0"): 0.01 * s for s in STEPS})
    rep = correlate(rows, AnalysisOptions(n_bootstrap=0))
    collapse = only(rep.phases, phase="collapse")
    assert math.isnan(collapse.spearman) and "first checkpoint" in collapse.reason
    assert only(rep.phases, phase="recovery").spearman == pytest.approx(1.0)


def test_phases_need_steps():
    rows = [metric_row(f"c{i}", None, "0", float(i)) for i in range(4)]
    rows += [score_row(f"c{i}", None, "0", 0.1 * i) for i in range(4)]
    rep = correlate(rows, AnalysisOptions(n_bootstrap=0))
    assert all("training step" in c.reason for c in rep.phases)
    assert only(rep.within_layer, layer="0").spearman == pytest.approx(1.0)


def test_conventions_variants_are_not_mixed():
    rows = []
    for s in STEPS:
        rows.append(metric_row(f"c{s}", s, "0", float(s), conventions={"eps": 1e-7, "x": s}))
        rows.append(metric_row(f"c{s}", s, "0", -float(s), conventions={"eps": 1e-5, "x": s}))
        rows.append(score_row(f"c{s}", s, "0", 0.01 * s))
    rep = correlate(rows, AnalysisOptions(n_bootstrap=0))
    by_variant = {c.metric_variant: c.spearman for c in rep.within_layer}
    assert by_variant == {"eps=1e-05": pytest.approx(-1.0), "eps=1e-07": pytest.approx(1.0)}
    assert any("variants" in n for n in rep.notes)


def test_split_domain_task_and_metric_filters():
    metric = {(s, "0"): float(s) for s in STEPS}
    rows = table(metric, {(s, "0"): 0.01 * s for s in STEPS}, domain="in")
    rows += [score_row(f"c{s}", s, "0", 1 - 0.01 * s, domain="out") for s in STEPS]
    rows += [score_row(f"c{s}", s, "0", 0.5, split="dev") for s in STEPS]
    rows += [score_row(f"c{s}", s, "0", 0.01 * s, task="sid") for s in STEPS]
    rows += [metric_row(f"c{s}", s, "0", float(s), metric="alpha_req") for s in STEPS]
    rep = correlate(rows, AnalysisOptions(n_bootstrap=0))
    got = {(c.metric, c.task, c.domain): round(c.spearman, 6) for c in rep.within_layer}
    assert got == {("rankme", "ks", "in"): 1.0, ("rankme", "ks", "out"): -1.0,
                   ("rankme", "sid", "in"): 1.0, ("alpha_req", "ks", "in"): -1.0,
                   ("alpha_req", "ks", "out"): 1.0, ("alpha_req", "sid", "in"): -1.0}
    only_ks = correlate(rows, AnalysisOptions(n_bootstrap=0, tasks=["ks"], metrics=["rankme"]))
    assert {(s.task, s.domain) for s in only_ks.summary} == {("ks", "in"), ("ks", "out")}
    dev = correlate(rows, AnalysisOptions(n_bootstrap=0, probe_split="dev", tasks=["ks"]))
    assert all(c.reason == "constant score" for c in dev.within_layer)
    none = correlate(rows, AnalysisOptions(probe_split="train"))
    assert none.summary == [] and any("split 'train'" in n for n in none.notes)


def test_orientation_rules():
    assert orientation("per", kind="score") == -1
    assert orientation("WER", kind="score") == -1
    assert orientation("accuracy", kind="score") == 1
    assert orientation("alpha_req", kind="metric") == -1
    assert orientation("rankme", kind="metric") == 1
    assert orientation("rankme", kind="metric", overrides={"rankme": -1}) == -1
    with pytest.raises(SpeechrankError):
        orientation("x", kind="score", overrides={"x": 2})


def test_models_are_not_mixed():
    rows = table({(s, "0"): float(s) for s in STEPS}, {(s, "0"): 0.01 * s for s in STEPS})
    rows += [metric_row(f"c{s}", s, "0", -float(s), model="other") for s in STEPS]
    rows += [score_row(f"c{s}", s, "0", 0.01 * s, model="other") for s in STEPS]
    rep = correlate(rows, AnalysisOptions(n_bootstrap=0))
    assert {(c.model, round(c.spearman, 6)) for c in rep.within_layer} == {
        ("m", 1.0), ("other", -1.0)}


def test_bootstrap_streams_do_not_depend_on_other_pairs():
    vals = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0]
    steps = [0, 10, 20, 30, 40, 50]
    rows = table({(s, "0"): v for s, v in zip(steps, vals, strict=True)},
                 {(s, "0"): v for s, v in zip(steps, [0.1, 0.3, 0.2, 0.5, 0.4, 0.6],
                                              strict=True)})
    alone = correlate(rows, AnalysisOptions(n_bootstrap=300, seed=4))
    extra = rows + [metric_row(f"c{s}", s, "0", float(s), metric="erank_cov") for s in steps]
    both = correlate(extra, AnalysisOptions(n_bootstrap=300, seed=4))
    a = only(alone.within_layer, metric="rankme")
    b = only(both.within_layer, metric="rankme")
    assert a == b
    other = correlate(rows, AnalysisOptions(n_bootstrap=300, seed=5))
    assert a != only(other.within_layer, metric="rankme")


def test_bootstrap_intervals_do_not_depend_on_names_or_paths():
    # The demo's dataset specs hold its output directory; the same data analysed from another
    # directory (or under other checkpoint names) must give the same intervals.
    steps = [0, 10, 20, 30, 40, 50]
    metric = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0]
    score = [0.1, 0.3, 0.2, 0.5, 0.4, 0.6]

    def rows(where: str, prefix: str) -> list[ResultRow]:
        out = [ResultRow("m", f"{prefix}{s}", s, f"synthetic:{where}#manifest=train", "0", "sum",
                         "rankme", v, 100, 16, conventions={"eps": 1e-7})
               for s, v in zip(steps, metric, strict=True)]
        out += [ResultRow("m", f"{prefix}{s}", s, f"synthetic:{where}#manifest=test", "0", "mean",
                          "accuracy", v, 50, 16, task="ks", split="test", domain="in",
                          conventions={"seed": 0})
                for s, v in zip(steps, score, strict=True)]
        return out

    options = AnalysisOptions(n_bootstrap=300, seed=4)
    here = only(correlate(rows("/tmp/a/corpus", "c"), options).within_layer, metric="rankme")
    there = only(correlate(rows("/srv/b/corpus", "ckpt-"), options).within_layer,
                 metric="rankme")
    assert math.isfinite(here.spearman_low)
    assert (here.spearman_low, here.spearman_high, here.kendall_low, here.kendall_high) == (
        there.spearman_low, there.spearman_high, there.kendall_low, there.kendall_high)


def test_store_and_path_sources(tmp_path):
    rows = table({(s, "0"): float(s) for s in STEPS}, {(s, "0"): 0.01 * s for s in STEPS})
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        store.add_rows(rows)
        from_store = correlate(store, AnalysisOptions(n_bootstrap=20))
    from_path = correlate(path, AnalysisOptions(n_bootstrap=20))
    assert from_store.to_dict() == from_path.to_dict()
    with pytest.raises(SpeechrankError, match="no such results store"):
        correlate(tmp_path / "missing.sqlite")
    with pytest.raises(SpeechrankError):
        correlate(rows, AnalysisOptions(n_bootstrap=-1))


def test_to_dict_is_strict_json_and_tables_render():
    metric = {(s, layer): s + int(layer) for s in STEPS for layer in "01"}
    score = {(s, layer): 0.5 for s in STEPS for layer in "01"}  # constant: NaN statistics
    rep = correlate(table(metric, score, task="pr", score="per"), AnalysisOptions(n_bootstrap=10))
    payload = json.loads(dumps_json(rep.to_dict()))
    assert set(payload) == {"settings", "notes", "verdict", "verdicts", "baselines",
                            "layer_choice_summary", "layer_choice", "summary", "within_layer",
                            "across_layers", "phases", "best_layer", "best_checkpoint"}
    assert payload["verdict"][0]["outcome"] == "undefined"  # a constant score
    assert payload["within_layer"][0]["spearman"] is None
    assert payload["best_layer"][0]["best"] == ["0", "1"]
    console = Console(record=True, width=200)
    tables = render_tables(rep)
    # verdict, baselines, layer choice, headline, and the four pivots
    assert len(tables) == 8
    for t in tables:
        console.print(to_rich(t))
    text = console.export_text()
    assert "Rank vs probes: headline" in text and "per (−)" in text
    assert len(render_tables(rep, detail=False)) == 4


def test_tables_never_read_names_as_markup():
    metric = {(s, "0"): float(s) for s in STEPS}
    rows = table(metric, {(s, "0"): 0.01 * s for s in STEPS}, task="[bold]x[/]", domain="[/]")
    rows += [metric_row(f"c{s}", s, "[red]", float(s)) for s in STEPS]
    rows += [score_row(f"c{s}", s, "[red]", 0.01 * s, task="[bold]x[/]", domain="[/]")
             for s in STEPS]
    rep = correlate(rows, AnalysisOptions(n_bootstrap=0))
    console = Console(record=True, width=250)
    for t in render_tables(rep):
        console.print(to_rich(t))
    text = console.export_text()
    assert "[bold]x[/]" in text and "[red]" in text


def test_tables_fit_a_narrow_console():
    layers = [str(i) for i in range(13)]
    metric = {(s, layer): s + int(layer) for s in STEPS for layer in layers}
    score = {(s, layer): 0.01 * s - 0.001 * int(layer) for s in STEPS for layer in layers}
    rep = correlate(table(metric, score), AnalysisOptions(n_bootstrap=0))
    wide = render_tables(rep)
    narrow = render_tables(rep, width=80)
    assert len(narrow) > len(wide)
    console = Console(record=True, width=80)
    for t in narrow:
        console.print(to_rich(t))
    text = console.export_text()
    assert "…" not in text  # nothing was cut short
    assert max(len(line) for line in text.splitlines()) <= 80
    for layer in layers:  # every layer column is still there
        assert f" {layer} " in text
