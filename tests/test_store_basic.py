"""ResultStore: round trips, identity and upserts, units of work, errors, exports."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from speechrank.errors import SpeechrankError
from speechrank.results import ResultRow
from speechrank.store import SCHEMA_VERSION, ResultStore, conventions_hash

SRC = Path(__file__).resolve().parents[1] / "src"


def make_row(**kw) -> ResultRow:
    base = dict(model="tiny", checkpoint="ckpt-100", step=100, dataset="fsdd", layer="1",
                pooling="sum", metric="rankme", value=12.5, n_rows=300, dim=64,
                conventions={"eps": 1e-7, "centered": False})
    base.update(kw)
    return ResultRow(**base)


@pytest.fixture
def store(tmp_path):
    with ResultStore(tmp_path / "sub" / "results.sqlite") as s:
        yield s


def test_round_trip_keeps_every_field(store):
    rows = [
        make_row(),
        make_row(layer="cnn", value=math.nan, step=None, checkpoint="random"),
        make_row(task="ks", split="test", domain="out", metric="accuracy", pooling="mean",
                 value=0.75, conventions={"seed": 0, "C": [0.1, 1.0]}),
        make_row(layer="2", value=math.inf),
    ]
    assert store.add_rows(rows) == 4
    back = store.rows()
    assert len(back) == 4
    by_key = {(r.checkpoint, r.layer, r.metric): r for r in back}
    nan_row = by_key[("random", "cnn", "rankme")]
    assert nan_row.step is None and math.isnan(nan_row.value)
    assert by_key[("ckpt-100", "2", "rankme")].value == math.inf
    probe = by_key[("ckpt-100", "1", "accuracy")]
    assert (probe.task, probe.split, probe.domain, probe.pooling) == ("ks", "test", "out", "mean")
    assert probe.conventions == {"seed": 0, "C": [0.1, 1.0]}
    assert by_key[("ckpt-100", "1", "rankme")] == rows[0]


def test_pragmas_and_schema(store):
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert store.schema_version == SCHEMA_VERSION


def test_upsert_replaces_same_measurement(store):
    store.add_rows([make_row(value=1.0)])
    store.add_rows([make_row(value=2.0, step=101)])
    rows = store.rows()
    assert len(rows) == 1 and rows[0].value == 2.0 and rows[0].step == 101


def test_volatile_conventions_do_not_split_identity(store):
    store.add_rows([make_row(value=1.0, conventions={"eps": 1e-7, "wall_s": 3.2})])
    store.add_rows([make_row(value=1.5, conventions={"eps": 1e-7, "wall_s": 9.9,
                                                     "device": "cuda"})])
    rows = store.rows()
    assert len(rows) == 1 and rows[0].value == 1.5
    assert rows[0].conventions["device"] == "cuda"


def test_different_conventions_are_different_measurements(store):
    store.add_rows([make_row(conventions={"eps": 1e-7}), make_row(conventions={"eps": 1e-5})])
    assert store.count() == 2


@given(st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.floats(allow_nan=True),
                                                      st.text(max_size=5)), max_size=6))
def test_conventions_hash_ignores_key_order(conv):
    reordered = dict(reversed(list(conv.items())))
    assert conventions_hash(conv) == conventions_hash(reordered)
    assert len(conventions_hash(conv)) == 64


def test_filters(store):
    store.add_rows([make_row(layer=str(i), step=s, checkpoint=f"c{s}")
                    for i in range(3) for s in (10, 20)])
    store.add_rows([make_row(step=None, checkpoint="random")])
    assert store.count(layer=["0", "2"]) == 4
    assert store.count(step=None) == 1
    assert store.count(step=[None, 10]) == 4
    assert store.count(layer=[]) == 0
    ordered = store.rows(checkpoint="c10")
    assert [r.layer for r in ordered] == ["0", "1", "2"]
    assert store.rows()[0].checkpoint == "random"  # no step sorts first
    with pytest.raises(SpeechrankError, match="unknown filter"):
        store.rows(colour="red")


def test_layers_sort_numerically(store):
    store.add_rows([make_row(layer=x) for x in ["10", "2", "cnn", "0"]])
    assert [r.layer for r in store.rows()] == ["cnn", "0", "2", "10"]


def test_unit_commits_rows_and_bookkeeping_together(store):
    assert not store.is_done("u1")
    with store.unit("u1", meta={"n_utts": 3}) as work:
        work.add_rows([make_row(layer="0")])
        store.add_rows([make_row(layer="1")])  # joins the open unit
        assert store.count() == 0  # nothing visible before the unit ends
        work.meta["extra"] = "x"
    assert store.is_done("u1")
    assert store.count(unit="u1") == 2
    (rec,) = store.units()
    assert rec.key == "u1" and rec.status == "done" and rec.n_results == 2
    assert rec.meta == {"n_utts": 3, "extra": "x"} and rec.wall_s >= 0


def test_unit_records_the_seconds_of_work_done_elsewhere(store):
    import datetime as dt

    with store.unit("u1", seconds=125.0) as work:  # rows a worker computed in 125 s
        work.add_rows([make_row()])
    (rec,) = store.units()
    assert rec.wall_s == 125.0
    started = dt.datetime.fromisoformat(rec.started_at)
    finished = dt.datetime.fromisoformat(rec.finished_at)
    assert abs((finished - started).total_seconds() - 125.0) <= 1.0


def test_failed_unit_leaves_nothing(store):
    with pytest.raises(RuntimeError), store.unit("u1") as work:
        work.add_rows([make_row()])
        raise RuntimeError("boom")
    assert store.count() == 0 and not store.is_done("u1") and store.units() == []
    # the store is still usable and the rerun commits
    with store.unit("u1") as work:
        work.add_rows([make_row()])
    assert store.count() == 1


def test_rerun_of_unit_replaces_its_rows(store):
    with store.unit("u1") as work:
        work.add_rows([make_row(layer="0"), make_row(layer="1", value=1.0)])
    with store.unit("u1") as work:
        work.add_rows([make_row(layer="1", value=2.0)])
    rows = store.rows()
    assert [(r.layer, r.value) for r in rows] == [("1", 2.0)]
    assert len(store.units()) == 1


def test_units_do_not_nest(store):
    with pytest.raises(SpeechrankError, match="inside unit"), store.unit("a"), store.unit("b"):
        pass
    assert store.units() == []


def test_add_rows_rejects_non_rows(store):
    with pytest.raises(SpeechrankError, match="ResultRow"):
        store.add_rows([{"model": "x"}])


def test_sigkill_mid_unit_leaves_only_committed_units(tmp_path):
    path = tmp_path / "r.sqlite"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(SRC)!r})
        from speechrank.results import ResultRow
        from speechrank.store import ResultStore
        def row(layer):
            return ResultRow("m", "c", 1, "d", layer, "sum", "rankme", 1.0, 10, 4)
        store = ResultStore({str(path)!r})
        with store.unit("first") as w:
            w.add_rows([row("0")])
        with store.unit("second") as w:
            w.add_rows([row("1"), row("2")])
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with ResultStore(path) as store:
        assert store.is_done("first") and not store.is_done("second")
        assert [r.layer for r in store.rows()] == ["0"]
        # the resumed sweep recomputes only the missing unit, without duplicates
        for key, layers in (("first", ["0"]), ("second", ["1", "2"])):
            if not store.is_done(key):
                with store.unit(key) as w:
                    w.add_rows([make_row(model="m", checkpoint="c", step=1, dataset="d",
                                         layer=x, value=1.0, n_rows=10, dim=4, conventions={})
                                for x in layers])
        assert [r.layer for r in store.rows()] == ["0", "1", "2"]


def test_meta(store):
    assert store.get_meta("config") is None
    assert store.get_meta("config", {}) == {}
    store.set_meta("config", {"models": ["a", "b"], "n": 3})
    store.set_meta("started", "2025-01-01")
    store.set_meta("config", {"models": ["a"]})
    assert store.get_meta("config") == {"models": ["a"]}
    assert store.meta() == {"config": {"models": ["a"]}, "started": "2025-01-01"}


def test_reopen_sees_everything(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as s:
        s.add_rows([make_row()])
        s.set_meta("k", 1)
        with s.unit("u"):
            pass
    with ResultStore(path, create=False) as s:
        assert s.count() == 1 and s.get_meta("k") == 1 and s.is_done("u")


def test_not_sqlite_is_one_line_error(tmp_path):
    bad = tmp_path / "notes.sqlite"
    bad.write_text("this is not a database, just some text that is long enough " * 20)
    with pytest.raises(SpeechrankError, match="not a speechrank results store") as info:
        ResultStore(bad)
    assert "\n" not in str(info.value)


def test_foreign_sqlite_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(SpeechrankError, match="schema_version"):
        ResultStore(path)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "r.sqlite"
    ResultStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(SpeechrankError, match="newer"):
        ResultStore(path)


def test_missing_store_without_create(tmp_path):
    with pytest.raises(SpeechrankError, match="no such results store"):
        ResultStore(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()
    with pytest.raises(SpeechrankError, match="directory"):
        ResultStore(tmp_path)


def test_to_csv(store, tmp_path):
    rows = [make_row(), make_row(layer="cnn", step=None, value=math.nan, checkpoint="r"),
            make_row(task="sid", split="test", metric="accuracy", value=0.5, domain="in")]
    store.add_rows(rows)
    out = store.to_csv(tmp_path / "out" / "rows.csv")
    with out.open(newline="") as fh:
        records = list(csv.DictReader(fh))
    assert len(records) == 3
    first = records[0]
    assert first["checkpoint"] == "r" and first["step"] == "" and first["value"] == "nan"
    assert json.loads(records[1]["conventions"]) == {"eps": 1e-7, "centered": False}
    assert float(records[1]["value"]) == 12.5
    assert len(store.to_csv(tmp_path / "ks.csv", task="sid").read_text().splitlines()) == 2


def test_to_parquet(store, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    store.add_rows([make_row(), make_row(layer="cnn", step=None, value=math.nan)])
    table = pq.read_table(store.to_parquet(tmp_path / "rows.parquet"))
    data = table.to_pydict()
    assert table.num_rows == 2
    assert data["step"] == [100, None] or data["step"] == [None, 100]
    assert json.loads(data["conventions"][0]) == {"eps": 1e-7, "centered": False}


def test_to_parquet_without_pyarrow(store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(SpeechrankError, match="pyarrow"):
        store.to_parquet(tmp_path / "rows.parquet")


def test_two_connections_share_the_file(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as a, ResultStore(path) as b:
        with a.unit("x") as w:
            w.add_rows([make_row()])
        assert b.is_done("x") and b.count() == 1
    assert not os.path.exists(str(path) + "-journal")


def test_checkpoint_records_round_trip_and_replace(store):
    from speechrank.store import CheckpointRecord

    first = CheckpointRecord(run="run-a", checkpoint="checkpoint-000100", path="/x/100",
                             format="speechrank", step=100, digest="abc",
                             training={"loss": 2.5, "accuracy": 0.1})
    store.record_checkpoint(first)
    store.record_checkpoint(CheckpointRecord(run="run-a", checkpoint="checkpoint-000000",
                                             path="/x/0", format="speechrank", step=0))
    store.record_checkpoint(CheckpointRecord(run="run-b", checkpoint="c", path="/y",
                                             format="huggingface", step=None))
    assert [c.step for c in store.checkpoints("run-a")] == [0, 100]
    assert store.checkpoints("run-a")[1] == first
    assert store.checkpoints("run-a")[0].training == {}
    store.record_checkpoint(dataclasses.replace(first, training={"loss": 2.0}))
    assert store.checkpoints("run-a")[1].training == {"loss": 2.0}
    assert len(store.checkpoints()) == 3


def test_version_1_store_is_migrated(tmp_path):
    """A store as schema version 1 wrote it gains the checkpoints table and keeps its rows."""
    path = tmp_path / "v1.sqlite"
    with ResultStore(path) as new:
        new.add_rows([make_row()])
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE checkpoints")
    conn.execute("DELETE FROM schema_version")
    conn.execute("INSERT INTO schema_version (version) VALUES (1)")
    conn.commit()
    conn.close()
    with ResultStore(path) as migrated:
        assert migrated.schema_version == SCHEMA_VERSION == 3
        assert migrated.rows() == [make_row()]
        assert migrated.checkpoints() == []
