"""`speechrank demo` end to end, scaled down: corpus, pretraining, sweep, correlate, report."""

from __future__ import annotations

import json

import pytest

from speechrank import jsonsafe
from speechrank.cli import main
from speechrank.demo import DemoSettings, headline_rows, run_demo
from speechrank.errors import SpeechrankError
from speechrank.store import ResultStore


@pytest.mark.slow
def test_demo_small_end_to_end_and_reuse(tmp_path, monkeypatch):
    settings = DemoSettings(out=tmp_path / "demo", corpus_minutes=4.0, pretrain_steps=24,
                            pretrain_minutes=None, save_steps=(0, 8, 16), rank_utterances=120)
    lines: list[str] = []
    summary = run_demo(settings, progress=False, log=lines.append)
    page = tmp_path / "demo" / "report" / "index.html"
    assert page.is_file() and summary.report == str(page)
    html = page.read_text()
    assert "RankMe" in html or "rankme" in html

    with ResultStore(summary.store, create=False) as store:
        rows = store.rows()
    checkpoints = {r.checkpoint for r in rows}
    assert len(checkpoints) == 4  # steps 0, 8, 16 and the final 24
    tasks = {(r.task, r.domain) for r in rows if r.task}
    assert tasks == {("ks", "in"), ("sid", "in"), ("pr", "in"), ("ks-unseen", "out"),
                     ("sid-de", "out"), ("pr-de", "out")}
    assert {r.layer for r in rows if r.metric == "rankme"} == {"0", "1", "2", "3", "4"}
    # every probe row says its fit ran in float32 (the demo's named variant)
    assert {r.conventions.get("fit_dtype") for r in rows if r.task} == {"float32"}

    heads = headline_rows(summary.headline)
    assert {(h["task"], h["domain"]) for h in heads} == tasks
    for h in heads:
        assert h["within_n"] >= 1
    # one verdict per task: RankMe-t beside the step and the loss the sweep recorded
    assert len(summary.verdicts) == len(tasks)
    assert all("RankMe-t" in v for v in summary.verdicts)
    assert not any("no loss recorded" in v for v in summary.verdicts)

    # A rerun in the same directory reuses every stage, every unit of the sweep, and the
    # analysis and report: nothing is correlated or drawn again, the page is untouched.
    before = (page.read_bytes(), page.stat().st_mtime_ns)
    calls = _count_analysis_calls(monkeypatch)
    again = run_demo(settings, progress=False, log=lines.append)
    assert "corpus" in again.reused and "pretrain" in again.reused
    assert any(item.startswith("sweep") for item in again.reused)
    assert "report" in again.reused and calls == []
    assert (page.read_bytes(), page.stat().st_mtime_ns) == before
    assert jsonsafe.plain(again.headline) == jsonsafe.plain(summary.headline)
    assert again.progress == json.loads(jsonsafe.dumps(summary.progress))
    assert again.verdicts == summary.verdicts

    # Something new in the store: the analysis and the report are made again.
    with ResultStore(summary.store) as store:
        store.set_meta("note", "a new entry")
    third = run_demo(settings, progress=False, log=lines.append)
    assert "report" not in third.reused
    assert calls.count("correlate") == 1 and "write_report" in calls and "save" in calls
    assert jsonsafe.plain(third.headline) == jsonsafe.plain(summary.headline)
    assert third.verdicts == summary.verdicts


def _count_analysis_calls(monkeypatch) -> list[str]:
    """Record every call of the demo's analysis and drawing functions (by name)."""
    import speechrank.analysis
    import speechrank.analysis.progress
    import speechrank.report
    import speechrank.report.plots

    calls: list[str] = []
    for module, name in ((speechrank.analysis, "correlate"),
                         (speechrank.analysis.progress, "training_progress"),
                         (speechrank.report, "write_report"),
                         (speechrank.report.plots, "save")):
        original = getattr(module, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    return calls


def test_demo_refuses_a_foreign_directory(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("precious")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "thesis.tex" in capsys.readouterr().err
    with pytest.raises(SpeechrankError):
        from speechrank.demo import check_output_dir

        check_output_dir(tmp_path / "thesis.tex")


def test_headline_table_reads_at_80_columns():
    from rich.console import Console

    from speechrank.cli import to_rich
    from speechrank.demo import HEADLINE_LEGEND, DemoSummary, headline_table

    def row(task, domain, score, rho, n, layer_rate, layer_n, ck_rate, ck_n):
        return {"metric": "rankme", "pooling": "sum", "task": task, "domain": domain,
                "score": score, "within_rho_median": rho, "within_n": n,
                "best_layer_agreement": layer_rate, "best_layer_n": layer_n,
                "checkpoint_agreement": ck_rate, "checkpoint_n": ck_n}

    headline = [row("ks-unseen", "out", "accuracy", 0.4123, 5, 0.5, 6, 0.2, 5),
                row("sid-de", "out", "accuracy", float("nan"), 0, 0.0, 0, 0.0, 0),
                row("pr", "in", "frame_accuracy", -0.75, 5, 1.0, 6, 0.6, 5),
                row("pr-de", "out", "per", 0.1, 5, 1 / 3, 6, 0.4, 5)]
    summary = DemoSummary(out="o", report="r", store="s", headline=headline, stages={},
                          reused=[])
    console = Console(width=80, record=True, color_system=None)
    console.print(to_rich(headline_table(summary)))
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "frame_accuracy" in text and "+0.41" in text and "-0.75" in text
    assert "3/6" in text and "2/6" in text and "n/a" in text  # k of n points behind each rate
    assert " ".join(HEADLINE_LEGEND.split()[:6]) in " ".join(text.split())
