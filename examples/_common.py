"""What the monitor examples share: finding audio, loading it, printing the rank table.

Audio comes from the Free Spoken Digit Dataset when a copy sits beside the repository
(``../shared/data/fsdd``) or is given with ``--data``; otherwise a two-minute synthetic corpus is
generated with eSpeak NG (``speechrank.audio.synthetic.make_corpus``) into a temporary
directory. The ``test`` split is the monitor's held-out set, the rest is training audio.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from speechrank.audio.datasets import load_dataset
from speechrank.audio.io import load_utterance
from speechrank.errors import AudioError

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO.parent / "shared" / "data" / "fsdd"


def default_data() -> str:
    """A DATA spec with ``test`` and training splits: FSDD if present, else a fresh synthetic
    corpus (about two minutes of audio, generated in a few seconds)."""
    if (FSDD / "recordings").is_dir():
        return f"fsdd:{FSDD}"
    from speechrank.audio.synthetic import CorpusSpec, make_corpus

    out = Path(tempfile.mkdtemp(prefix="speechrank-example-")) / "corpus"
    make_corpus(out, CorpusSpec(minutes=2.0, languages=("en",)), progress=False)
    return f"synthetic:{out}"


def training_waves(spec: str, sample_rate: int, limit: int, seed: int = 0,
                   max_seconds: float = 2.0) -> list[np.ndarray]:
    """Up to ``limit`` waveforms (a seeded choice) from every split but ``test``."""
    dataset = load_dataset(spec)
    pool = [u for u in dataset.utterances if u.split != "test"]
    order = np.random.default_rng(seed).permutation(len(pool))[:limit]
    waves = []
    for index in sorted(order):
        try:
            waves.append(load_utterance(pool[index], sample_rate, max_seconds=max_seconds))
        except AudioError:
            continue
    if not waves:
        raise SystemExit(f"no training audio in {spec}")
    return waves


def pad_batch(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad 1-D waveforms to ``[B, S]``; returns them with their lengths."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    batch = torch.zeros(len(waves), int(lengths.max()))
    for row, wave in enumerate(waves):
        batch[row, : len(wave)] = wave
    return batch, lengths


def print_rank_table(history: list[tuple[int, dict[str, float]]], title: str) -> None:
    """One row per measured step, one column per layer (RankMe-t), then the alarms."""
    if not history:
        print("no rank values were logged")
        return
    layers = [k.split("/layer_")[1] for k in history[0][1] if k.startswith("rankme_t/")]
    print(f"\n{title}")
    print("step".rjust(6) + "".join(f"layer {layer}".rjust(10) for layer in layers))
    for step, values in history:
        cells = "".join(f"{values[f'rankme_t/layer_{layer}']:10.2f}" for layer in layers)
        flags = [layer for layer in layers if values.get(f"collapse/layer_{layer}") == 1.0]
        print(f"{step:6d}{cells}" + (f"   collapse: layer {', '.join(flags)}" if flags else ""))
