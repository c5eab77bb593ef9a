"""Reusing a finished report: the store's content digest, the inputs record, and `speechrank
report` run again on an unchanged store (nothing computed, the page untouched)."""

from __future__ import annotations

import math

import pytest

from speechrank.cli import main
from speechrank.report.inputs import INPUTS_FILE, forget, is_current, remember, report_inputs
from speechrank.results import ResultRow
from speechrank.store import CheckpointRecord, ResultStore


def _rows(shift: float = 0.0) -> list[ResultRow]:
    rows = []
    for step in (0, 100, 200):
        for layer in ("0", "1", "2"):
            rank = 10.0 + step / 50 + int(layer) + shift
            rows.append(ResultRow("run", f"c{step}", step, "data", layer, "sum", "rankme",
                                  rank, 30, 8))
            rows.append(ResultRow("run", f"c{step}", step, "data", layer, "mean", "accuracy",
                                  0.3 + rank / 100, 20, 8, task="ks", split="test",
                                  domain="in"))
    return rows


def _store(path, rows, *, nan=False):
    with ResultStore(path) as store:
        with store.unit("run|c0|rank|data") as work:
            work.add_rows(rows)
        store.record_checkpoint(CheckpointRecord(run="run", checkpoint="c0", path="/m/c0",
                                                 format="speechrank", step=0))
        store.set_meta("sweep_config", {"seed": 0})
        if nan:
            store.add_rows([ResultRow("run", "c0", 0, "data", "3", "sum", "rankme", math.nan,
                                      30, 8)])
        return store.content_digest()


def test_content_digest_follows_content_not_write_times(tmp_path):
    first = _store(tmp_path / "a.sqlite", _rows())
    assert len(first) == 64
    # the same content written again, later, in another file: the same digest
    assert _store(tmp_path / "b.sqlite", _rows()) == first
    with ResultStore(tmp_path / "a.sqlite") as store:
        store.record_checkpoint(CheckpointRecord(run="run", checkpoint="c0", path="/m/c0",
                                                 format="speechrank", step=0))
        with store.unit("run|c0|rank|data") as work:  # recommitted with the same rows
            work.add_rows(_rows())
        assert store.content_digest() == first
        store.add_rows([ResultRow("run", "c0", 0, "data", "9", "sum", "rankme", 1.0, 3, 2)])
        added = store.content_digest()
    assert added != first
    # one value changed by one ulp, a NaN, a meta entry, a checkpoint's training record
    assert _store(tmp_path / "c.sqlite", [dataclass_replace(r, value=math.nextafter(
        r.value, math.inf)) if i == 0 else r for i, r in enumerate(_rows())]) != first
    assert _store(tmp_path / "d.sqlite", _rows(), nan=True) != first
    with ResultStore(tmp_path / "b.sqlite") as store:
        store.set_meta("note", "x")
        assert store.content_digest() != first
        before = store.content_digest()
        store.record_checkpoint(CheckpointRecord(run="run", checkpoint="c0", path="/m/c0",
                                                 format="speechrank", step=0,
                                                 training={"loss": 2.0}))
        assert store.content_digest() != before


def dataclass_replace(row: ResultRow, **changes) -> ResultRow:
    import dataclasses

    return dataclasses.replace(row, **changes)


def test_a_report_is_current_only_for_the_same_inputs_and_whole(tmp_path):
    _store(tmp_path / "s.sqlite", _rows())
    page = tmp_path / "out"
    (page / "img").mkdir(parents=True)
    (page / "index.html").write_text('<img src="img/a.png"><img src="img/b.png">')
    (page / "img" / "a.png").write_bytes(b"png")
    (page / "img" / "b.png").write_bytes(b"png")
    with ResultStore(tmp_path / "s.sqlite") as store:
        inputs = report_inputs(store, {"seed": 0, "n_bootstrap": 10})
        other = report_inputs(store, {"seed": 1, "n_bootstrap": 10})
    assert not is_current(page, inputs)  # nothing recorded yet
    remember(page, inputs)
    assert is_current(page, inputs) and not is_current(page, other)
    assert not is_current(page, inputs, [tmp_path / "missing.json"])
    (page / "img" / "b.png").unlink()
    assert not is_current(page, inputs)  # an image the page shows is gone
    (page / "img" / "b.png").write_bytes(b"png")
    assert is_current(page, inputs)
    forget(page)
    assert not (page / INPUTS_FILE).exists() and not is_current(page, inputs)
    forget(tmp_path / "nowhere")  # nothing to forget is fine
    assert not is_current(tmp_path / "nowhere", inputs)


@pytest.mark.slow
def test_report_command_reuses_an_unchanged_report(tmp_path, monkeypatch, capsys):
    import speechrank.analysis
    import speechrank.report
    import speechrank.report.html

    store = tmp_path / "s.sqlite"
    _store(store, _rows())
    out = tmp_path / "report"
    args = ["report", str(store), str(out), "--bootstrap", "20"]
    assert main(args) == 0
    page = out / "index.html"
    before = (page.read_bytes(), page.stat().st_mtime_ns)
    calls: list[str] = []
    for module, name in ((speechrank.report, "write_report"),
                         (speechrank.report.html, "correlate"),
                         (speechrank.analysis, "correlate"),
                         (speechrank.report.html.plots, "save")):
        original = getattr(module, name)

        def counted(*a, _original=original, _name=name, **k):
            calls.append(_name)
            return _original(*a, **k)

        monkeypatch.setattr(module, name, counted)
    capsys.readouterr()
    assert main(args) == 0  # the same store, the same options: nothing is computed
    assert calls == []
    assert "unchanged" in capsys.readouterr().out
    assert (page.read_bytes(), page.stat().st_mtime_ns) == before

    assert main([*args[:-1], "21"]) == 0  # another option: drawn again
    assert "write_report" in calls and "save" in calls
    calls.clear()
    with ResultStore(store) as opened:  # a new row in the store: drawn again
        opened.add_rows([ResultRow("run", "c0", 0, "data", "9", "sum", "rankme", 1.0, 3, 2)])
    assert main([*args[:-1], "21"]) == 0
    assert "write_report" in calls
    calls.clear()
    assert main([*args[:-1], "21"]) == 0
    assert calls == []
