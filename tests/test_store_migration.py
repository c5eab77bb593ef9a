"""A store written before stores had identities (schema version 1, by the code of commit
6395535; see tests/v1_store_fixture.py for how tests/golden/v1_store.sqlite was made) opens
migrated: its units rekeyed by step, its one dataset held under two spellings merged, and the
same sweep rerun from anywhere, with paths spelled any way, computes nothing."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from speechrank.store import SCHEMA_VERSION, ResultStore
from speechrank.sweep import sweep

from .conftest import require_fsdd
from .v1_store_fixture import place, write_config, write_data, write_run

FIXTURE = Path(__file__).resolve().parent / "golden" / "v1_store.sqlite"


@pytest.fixture
def old_store(tmp_path) -> tuple[Path, Path]:
    root = tmp_path / "work"
    root.mkdir()
    write_data(root, require_fsdd())
    write_run(root)
    write_config(root)
    store = root / "results.sqlite"
    shutil.copyfile(FIXTURE, store)
    place(store, str(root))
    return root, store


def _raw(store: Path, query: str) -> list[tuple]:
    db = sqlite3.connect(store)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def test_the_fixture_is_the_measured_problem(old_store):
    root, store = old_store
    assert _raw(store, "SELECT version FROM schema_version") == [(1,)]
    assert sorted(_raw(store, "SELECT dataset, COUNT(*) FROM results GROUP BY dataset")) == [
        (f"fsdd:{root}/data", 24), ("fsdd:data", 60)]  # the rank rows stored twice
    assert len(_raw(store, "SELECT key FROM units")) == 6


def test_migration_rekeys_and_merges(old_store):
    root, store = old_store
    data = f"fsdd:{root.resolve()}/data"
    with ResultStore(store) as migrated:
        assert migrated.schema_version == SCHEMA_VERSION == 3
        assert sorted(u.key for u in migrated.units()) == [
            "run|step:2|probe|ks", f"run|step:2|rank|{data}",
            "run|step:4|probe|ks", f"run|step:4|rank|{data}"]
        rows = migrated.rows()
        assert len(rows) == 60 and {r.dataset for r in rows} == {data}
        assert {u.key: u.n_results for u in migrated.units()}[f"run|step:2|rank|{data}"] == 12
        config = migrated.get_meta("sweep_config")
        assert config["rank_data"] == data and config["probes"][0]["data"] == data


def test_rerun_after_migration_computes_nothing(old_store, tmp_path, monkeypatch):
    root, store = old_store
    with ResultStore(store) as migrated:
        before = sorted((r.checkpoint, r.dataset, r.layer, r.pooling, r.metric, r.task,
                         r.split, r.value) for r in migrated.rows())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    summary = sweep([str(root / "run")], str(root / "sweep.toml"), str(store), progress=False)
    assert (summary.units_done, summary.units_reused, summary.rows_written) == (0, 4, 0)
    assert summary.runs == ["run"]
    monkeypatch.chdir(root)
    again = sweep("run", "sweep.toml", "results.sqlite", progress=False)
    assert (again.units_done, again.units_reused) == (0, 4)
    with ResultStore(store) as reopened:
        after = sorted((r.checkpoint, r.dataset, r.layer, r.pooling, r.metric, r.task,
                        r.split, r.value) for r in reopened.rows())
        assert after == before
        records = reopened.checkpoints("run")
        assert [(c.checkpoint, c.step, c.format) for c in records] == [
            ("checkpoint-2", 2, "hf-trainer"), ("checkpoint-4", 4, "hf-trainer")]
        assert records[1].training["loss"] == pytest.approx(2.6)
        assert reopened.runs() == {"run": str((root / "run").resolve())}
