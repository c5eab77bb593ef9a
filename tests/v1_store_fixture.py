"""A results store as speechrank wrote it before stores had identities (schema version 1),
and the run and data it measured, for the migration test (tests/test_store_migration.py).

The committed store, ``tests/golden/v1_store.sqlite``, was written by the code of commit
6395535 (the last with schema version 1) with this script::

    git -C REPO archive 6395535 src | tar -x -C /tmp/v1src
    PYTHONPATH=/tmp/v1src/src python tests/v1_store_fixture.py tests/golden/v1_store.sqlite

It sweeps a two-checkpoint Hugging Face Trainer run (``run/checkpoint-2``, ``checkpoint-4``:
tiny random wav2vec 2.0 models) with rank and one keyword probe on 28 FSDD recordings
(``data/recordings``), twice, as the measured problem had it: once from the directory holding
everything (``speechrank sweep run --config sweep.toml``: the data spelled ``fsdd:data``),
then from another directory with every path absolute (``fsdd:/ROOT/data``), which the old
keys took for new data: every unit was computed again and every row stored twice. The
directory the store was built in is then written as ``@ROOT@`` in every text of the store,
so a test can put the run and the data anywhere and write its own directory back in
(:func:`place`). The functions here use only transformers and the standard library, so the
script runs with the old code and the test with the new.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

ROOT_MARK = "@ROOT@"
#: FSDD files copied: digits 0 and 1 of one speaker, indices 0-13 (test 0-4, dev 5-9,
#: train 10-13).
FILES = tuple(f"{digit}_george_{index}.wav" for digit in (0, 1) for index in range(14))
STEPS = (2, 4)

SWEEP_TOML = """
[rank]
data = "fsdd:data"
metrics = ["rankme", "erank_cov"]
poolings = ["sum", "mean"]
num_utterances = 20

[[probe]]
name = "ks"
task = "ks"
data = "fsdd:data"
max_iter = 50
c_grid = [1.0]

[options]
seed = 0
memo_gb = 0
"""


def write_data(root: Path, fsdd: Path) -> Path:
    """``root/data/recordings`` with :data:`FILES` copied from the FSDD copy ``fsdd``."""
    target = root / "data" / "recordings"
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(fsdd / "recordings" / name, target / name)
    return root / "data"


def write_run(root: Path) -> Path:
    """``root/run``: ``checkpoint-<step>/`` of a Hugging Face Trainer run per :data:`STEPS`
    (``save_pretrained`` files and ``trainer_state.json``), tiny seeded wav2vec 2.0 models."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    run = root / "run"
    for step in STEPS:
        config = Wav2Vec2Config(
            hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
            conv_dim=(32, 32, 32, 32), conv_kernel=(10, 3, 3, 2), conv_stride=(5, 2, 2, 2),
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
        torch.manual_seed(step)
        directory = run / f"checkpoint-{step}"
        Wav2Vec2Model(config).save_pretrained(directory)
        history = [{"epoch": s / max(STEPS), "learning_rate": 1e-3, "loss": 3.0 - s / 10,
                    "step": s} for s in range(1, step + 1)]
        (directory / "trainer_state.json").write_text(json.dumps(
            {"global_step": step, "log_history": history, "max_steps": max(STEPS)}))
    return run


def write_config(root: Path) -> Path:
    (root / "sweep.toml").write_text(SWEEP_TOML)
    return root / "sweep.toml"


def place(store: Path, root: Path) -> None:
    """Write ``root`` where the committed store says ``@ROOT@`` (raw SQL: the store is read
    as it is, before any speechrank opens it)."""
    _replace(store, ROOT_MARK, str(root))


def _replace(store: Path, old: str, new: str) -> None:
    db = sqlite3.connect(store, isolation_level=None)
    try:
        db.execute("BEGIN")
        for table, columns in (("units", ("key", "meta")), ("results", ("dataset", "unit")),
                               ("meta", ("value",))):
            for column in columns:
                db.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)",
                           (old, new))
        db.execute("COMMIT")
        db.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
    finally:
        db.close()


def build(out: Path, fsdd: Path) -> None:
    """Run the two sweeps with whatever speechrank is importable (the old one) into ``out``."""
    from speechrank.sweep import sweep

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp).resolve() / "work"
        root.mkdir()
        write_data(root, fsdd)
        write_run(root)
        write_config(root)
        (root / "elsewhere").mkdir()
        here = Path.cwd()
        try:
            os.chdir(root)
            sweep("run", "sweep.toml", "results.sqlite", progress=False)
            os.chdir(root / "elsewhere")
            sweep(str(root / "run"), str(root / "sweep.toml"), str(root / "results.sqlite"),
                  progress=False)
        finally:
            os.chdir(here)
        _replace(root / "results.sqlite", str(root), ROOT_MARK)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / "results.sqlite", out)


if __name__ == "__main__":
    repo = Path(__file__).resolve().parents[1]
    build(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2
          else repo.parent / "shared" / "data" / "fsdd")
