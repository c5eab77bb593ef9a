"""The small sweep that the process and Ray executor tests both run: random checkpoints, a
tone manifest, one rank and one probe unit per checkpoint, and the serial store they must
equal."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import torch

from speechrank.store import ResultStore
from speechrank.sweep import sweep

from .test_sweep import _manifest


def write_tone_sweep(root: Path, checkpoints: int) -> None:
    """``checkpoints.txt`` (``random:tiny@i`` at step ``100 i``) and ``sweep.toml`` in
    ``root``, over a tone manifest written there."""
    manifest = _manifest(root)
    (root / "checkpoints.txt").write_text(
        "".join(f"random:tiny@{i} {100 * i}\n" for i in range(checkpoints)))
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
""")


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
