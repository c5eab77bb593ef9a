"""Shared fixtures: paths to the shared FSDD recordings and small generated audio."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FSDD = SHARED / "data" / "fsdd"

# Tests never reach a network: Hugging Face lookups stay offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def require_fsdd() -> Path:
    """The shared Free Spoken Digit Dataset, or a failure that says where it was looked for.

    CI has the recordings at ../shared/data/fsdd beside the repository; a test that needs them
    fails (never skips) when they are missing, so a broken checkout cannot pass quietly.
    """
    if not (FSDD / "recordings").is_dir():
        pytest.fail(f"the shared FSDD recordings are missing: expected {FSDD / 'recordings'} "
                    "(the Free Spoken Digit Dataset beside the repository, as CI has it)",
                    pytrace=False)
    return FSDD


@pytest.fixture
def one_torch_thread():
    """torch on one intra-op thread for the test (restored after): float32 results depend on
    the thread count, and small models run faster on one thread on a shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fsdd_root() -> Path:
    """The shared Free Spoken Digit Dataset (../shared/data/fsdd beside the repository)."""
    return require_fsdd()


def write_tone(path: Path, seconds: float, sample_rate: int = 16_000, freq: float = 440.0,
               channels: int = 1, seed: int = 0, subtype: str | None = None) -> Path:
    """A tone plus a little noise, so every utterance differs and none is silent."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data.astype(np.float32), sample_rate, subtype=subtype)
    return path


def write_csv_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    """A CSV manifest with one row per utterance (the columns of the first row)."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
