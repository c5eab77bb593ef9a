"""`speechrank sweep RUN [RUN ...]` on training runs as their frameworks leave them: each run
its own model in one store, with the steps and losses the run kept, and a rerun spelled
another way from another directory computes nothing and adds no row.

The runs are built by :mod:`tests.checkpoint_layouts` (fairseq, transformers, torchaudio and
Lightning key and file names cited there) from tiny random models; the data is a few FSDD
recordings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from speechrank.cli import main
from speechrank.store import ResultStore

from .checkpoint_layouts import write_fairseq_run, write_hf_trainer_run, write_lightning_run
from .conftest import require_fsdd

#: One entry per run layout: (directory name, writer, expected (checkpoint, step, format,
#: loss) in training order).
RUNS = (
    ("fairseq-save", write_fairseq_run,
     [("checkpoint_1_100.pt", 100, "fairseq", 6.5), ("checkpoint_2_300.pt", 300, "fairseq",
                                                      4.25)]),
    ("hf-output", lambda root: write_hf_trainer_run(root, steps=(2, 4)),
     [("checkpoint-2", 2, "hf-trainer", 2.8), ("checkpoint-4", 4, "hf-trainer", 2.6)]),
    ("lightning-exp", write_lightning_run,
     [("epoch=0-step=2.ckpt", 2, "torchaudio", 4.5),
      ("epoch=0-step=4.ckpt", 4, "torchaudio", 4.25)]),
)


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "work"
    recordings = root / "data"
    recordings.mkdir(parents=True)
    for name in ("0_george_0.wav", "1_george_0.wav", "2_jackson_1.wav", "3_lucas_2.wav",
                 "4_theo_3.wav", "5_nicolas_4.wav"):
        shutil.copyfile(require_fsdd() / "recordings" / name, recordings / name)
    for directory, write, _ in RUNS:
        write(root / directory)
    (root / "sweep.toml").write_text('[rank]\ndata = "data"\nmetrics = ["rankme"]\n'
                                     'poolings = ["sum"]\n[options]\nmemo_gb = 0\n')
    return root


def _rows(store: Path) -> list[tuple]:
    with ResultStore(store, create=False) as opened:
        return sorted((r.model, r.checkpoint, r.step, r.dataset, r.layer, r.metric, r.value)
                      for r in opened.rows())


def test_sweep_of_several_runs_and_a_rerun_spelled_otherwise(runs, tmp_path, monkeypatch,
                                                             capsys):
    monkeypatch.chdir(runs)
    names = [directory for directory, _, _ in RUNS]
    assert main(["sweep", *names, "--config", "sweep.toml", "--store", "s.sqlite",
                 "--quiet"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert f"{2 * len(RUNS)} units computed" in out
    store = runs / "s.sqlite"
    with ResultStore(store, create=False) as opened:
        for directory, _, expected in RUNS:
            records = opened.checkpoints(directory)
            assert [(c.checkpoint, c.step, c.format) for c in records] == [
                e[:3] for e in expected]
            assert [c.training["loss"] for c in records] == pytest.approx(
                [e[3] for e in expected])
            assert all(Path(c.path).is_absolute() and c.digest for c in records)
        rows = opened.rows()
    assert {r.model for r in rows} == set(names)
    assert {r.dataset for r in rows} == {str((runs / "data").resolve())}
    before = _rows(store)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["sweep", *[str(runs / n) for n in reversed(names)], "--config",
                 str(runs / "sweep.toml"), "--store", str(store), "--quiet"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "0 units computed" in out and f"{2 * len(RUNS)} reused" in out
    assert _rows(store) == before
