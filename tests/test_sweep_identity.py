"""The same data is the same data: DATA specs, runs and checkpoints are keyed by what they are
(resolved paths, steps, content digests), never by how they were spelled."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from speechrank.audio.datasets import resolve_spec
from speechrank.store import ResultStore
from speechrank.sweep import SweepConfig, find_series, plan_units, sweep

from .checkpoint_layouts import fairseq_checkpoint
from .conftest import write_tone


@pytest.fixture
def tones(tmp_path) -> Path:
    for i in range(6):
        write_tone(tmp_path / "tones" / f"t{i}.wav", 0.5, freq=200.0 + 90 * i, seed=i)
    return tmp_path / "tones"


def _config(tmp_path: Path, data: str = "tones") -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(f'[rank]\ndata = "{data}"\nmetrics = ["rankme"]\npoolings = ["sum"]\n'
                    '[options]\nmemo_gb = 0\n')
    return path


def test_spellings_of_one_dataset_resolve_alike(tmp_path, monkeypatch):
    (tmp_path / "a" / "data").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a")
    want = f"fsdd:{(tmp_path / 'a' / 'data').resolve()}#fold=1&split=test"
    monkeypatch.chdir(tmp_path / "b")
    spellings = ["FSDD:../a/data#split=test&fold=1", f"fsdd:{tmp_path}/a/./data#fold=1&split=test",
                 "fsdd:../link/data#fold=1&split=test"]
    assert {resolve_spec(s) for s in spellings} == {want}
    assert resolve_spec("fsdd:data#fold=1&split=test", tmp_path / "a") == want
    assert resolve_spec(want) == want  # resolving a resolved spelling changes nothing
    assert resolve_spec("../a/data") == str((tmp_path / "a" / "data").resolve())


def test_config_data_is_resolved_against_its_file(tmp_path, monkeypatch, tones):
    config = _config(tmp_path)
    monkeypatch.chdir(tones)
    assert SweepConfig.from_toml(os.path.relpath(config)).rank_data == str(tones.resolve())


def _fairseq_last(directory: Path, updates: int, seed: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    ckpt, _ = fairseq_checkpoint(updates, seed=seed)
    torch.save(ckpt, directory / "checkpoint_last.pt")
    return directory / "checkpoint_last.pt"


def test_unit_keys_use_the_step_or_the_digest(tmp_path, tones):
    _fairseq_last(tmp_path / "run", 600, seed=0)
    series = find_series(tmp_path / "run")
    cfg = SweepConfig.from_toml(_config(tmp_path))
    assert [u.key for u in plan_units(series.checkpoints, cfg, series.run)] == [
        f"run|step:600|rank|{tones.resolve()}"]
    listing = tmp_path / "models.txt"
    listing.write_text("random:tiny@0\nrandom:tiny@1\nrun/checkpoint_last.pt\n")
    keys = [c.key for c in find_series(listing).checkpoints]
    assert keys[0].startswith("sha256:") and keys[1].startswith("sha256:")  # both step 0
    assert keys[0] != keys[1] and keys[2] == "step:600"


def test_runs_of_one_name_stay_apart(tmp_path, tones):
    for parent, seed in (("a", 0), ("b", 1)):
        _fairseq_last(tmp_path / parent / "checkpoints", 100, seed=seed)
    store = tmp_path / "s.sqlite"
    config = _config(tmp_path)
    first = sweep([tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints"], config,
                  store, progress=False)
    assert first.runs == ["checkpoints", "b/checkpoints"] and first.units_done == 2
    again = sweep(tmp_path / "b" / "checkpoints", config, store, progress=False)
    assert again.runs == ["b/checkpoints"] and again.units_done == 0
    with ResultStore(store) as opened:
        assert {r.model for r in opened.rows()} == {"checkpoints", "b/checkpoints"}
        assert opened.runs() == {"checkpoints": str((tmp_path / "a/checkpoints").resolve()),
                                 "b/checkpoints": str((tmp_path / "b/checkpoints").resolve())}


def test_a_checkpoint_whose_content_changed_is_measured_again(tmp_path, tones):
    last = _fairseq_last(tmp_path / "run", 600, seed=0)
    store, config = tmp_path / "s.sqlite", _config(tmp_path)
    assert sweep(tmp_path / "run", config, store, progress=False).units_done == 1
    with ResultStore(store) as opened:
        first = {(r.layer, r.value) for r in opened.rows()}
        digest = opened.checkpoints("run")[0].digest
    assert sweep(tmp_path / "run", config, store, progress=False).units_done == 0
    _fairseq_last(tmp_path / "run", 600, seed=5)  # same step, other weights (a rerun)
    lines: list[str] = []
    assert sweep(tmp_path / "run", config, store, log=lines.append).units_done == 1
    assert any("content changed" in line for line in lines)
    with ResultStore(store) as opened:
        rows = opened.rows()
        assert {(r.layer, r.value) for r in rows} != first
        assert len(rows) == len(first)
        (record,) = opened.checkpoints("run")
        assert record.digest != digest and record.path == str(last.resolve())
