"""The small sweep that the sweep tests run (serial, process and Ray executors): random
checkpoints, a tone manifest, one rank and one probe unit per checkpoint, and the serial store
the executors must equal."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import torch

from speechrank.store import ResultStore
from speechrank.sweep import sweep

from .conftest import write_csv_manifest, write_tone


def tone_manifest(root: Path) -> Path:
    """36 labelled tones: label 'pitch' (low/high) decides the frequency band; split column."""
    rows = []
    for i in range(36):
        label = "low" if i % 2 == 0 else "high"
        freq = (180.0 if label == "low" else 900.0) + 7 * i
        path = write_tone(root / "audio" / f"u{i:02d}.wav", 0.4 + 0.02 * i, freq=freq, seed=i)
        split = ("train", "train", "train", "train", "dev", "test")[i % 6]
        rows.append({"path": str(path.relative_to(root)), "pitch": label, "split": split,
                     "speaker": f"s{i % 3}"})
    return write_csv_manifest(root / "data.csv", rows)


def write_tone_sweep(root: Path, checkpoints: int, extra_options: str = "") -> None:
    """``checkpoints.txt`` (``random:tiny@i`` at step ``100 i``, under a comment line) and
    ``sweep.toml`` (``extra_options``: more lines of its ``[options]``) in ``root``, over a
    tone manifest written there."""
    manifest = tone_manifest(root)
    (root / "checkpoints.txt").write_text(
        "# random initialisations stand in for a training run\n"
        + "".join(f"random:tiny@{i} {100 * i}\n" for i in range(checkpoints)))
    (root / "sweep.toml").write_text(f"""
[rank]
data = "{manifest.name}"
metrics = ["rankme", "erank_cov"]
poolings = ["sum", "frames"]
max_frames = 200

[[probe]]
name = "pitch"
task = "label:pitch"
data = "{manifest.name}"

[options]
seed = 0
cache_dir = "{root / 'cache'}"
{extra_options}""")


def serial_sweep_one_thread(root: Path, store: Path) -> int:
    """The serial sweep of :func:`write_tone_sweep`'s files at one torch thread, as each worker
    process and each Ray task runs (the same float sums); returns the units done."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = sweep(root / "checkpoints.txt", root / "sweep.toml", store, workers=1,
                        progress=False)
    finally:
        torch.set_num_threads(threads)
    return summary.units_done


def snapshot(path: Path) -> list[tuple]:
    """Every stored value with what identifies it (exact: same computation, same numbers)."""
    with ResultStore(path, create=False) as store:
        return sorted((r.model, r.checkpoint, r.step, r.dataset, r.layer, r.pooling, r.metric,
                       r.task, r.split, r.domain, r.value, r.n_rows, r.dim,
                       tuple(sorted((k, str(v)) for k, v in r.conventions.items())))
                      for r in store.rows())


def unit_count(path: Path) -> int:
    """Units committed to the store so far (0 while it does not exist or is being created)."""
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
    except sqlite3.Error:
        return 0
