"""A linear CTC phone recogniser on frozen frames, scored by phone error rate.

The read-out is one ``Linear(D, V + 1)`` per layer (index 0 is the CTC blank) trained with
Connectionist Temporal Classification (Graves, Fernández, Gomez and Schmidhuber, ICML 2006) for a
fixed budget of optimiser steps, decoded greedily (best path: per-frame argmax, repeats merged,
blanks dropped), with the weights of the evaluation step of lowest dev PER kept, and scored by
PER (:mod:`speechrank.probes.edit_distance`), as SUPERB's PR task does with a deeper
head (Yang et al., Interspeech 2021). Features are z-scored with the train frames' mean and
standard deviation (float64 statistics).

Deterministic for a seed: initialisation and batch order come from one ``torch.Generator``, and
the CPU CTC kernels are deterministic.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np
import torch

from speechrank.probes.config import CTCProbeConfig
from speechrank.probes.edit_distance import phone_error_rate

__all__ = ["CTCProbeFit", "fit_ctc_probe", "greedy_decode"]


@dataclasses.dataclass
class CTCProbeFit:
    """What a CTC probe scored.

    Attributes:
        per: phone error rate per split (train, dev, test: whichever were given) of the
            weights kept (lowest dev PER).
        n_rows: utterances per split.
        n_frames: frames per split.
        best_step: the step whose weights were kept (0 = the initial weights).
        dev_curve: ``(step, dev PER)`` at every evaluation.
        final_loss: mean CTC loss of the last ``eval_every`` steps on train.
        too_short: train utterances with fewer frames than CTC needs for their target
            (their loss is zeroed by ``zero_infinity``).
        dim: feature width.
        steps: optimiser steps taken.
    """

    per: dict[str, float]
    n_rows: dict[str, int]
    n_frames: dict[str, int]
    best_step: int
    dev_curve: list[tuple[int, float]]
    final_loss: float
    too_short: int
    dim: int
    steps: int


def greedy_decode(log_probs: torch.Tensor, length: int, blank: int = 0) -> list[int]:
    """Best-path decoding of one ``[T, C]`` score matrix: argmax, merge repeats, drop blanks."""
    best = torch.argmax(log_probs[:length], dim=-1)
    merged = torch.unique_consecutive(best)
    return [int(i) for i in merged if int(i) != blank]


def _min_ctc_frames(target: Sequence[int]) -> int:
    """Frames CTC needs for ``target``: one per label plus a blank between equal neighbours."""
    repeats = sum(1 for a, b in itertools.pairwise(target) if a == b)
    return len(target) + repeats


def _pad(sequences: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    padded = torch.nn.utils.rnn.pad_sequence(list(sequences), batch_first=True)
    return padded, lengths


def fit_ctc_probe(splits: dict[str, tuple[Sequence[np.ndarray], Sequence[Sequence[str]]]],
                  config: CTCProbeConfig | None = None, *, seed: int = 0) -> CTCProbeFit:
    """Train a linear CTC probe on ``train`` and score PER on every split.

    Args:
        splits: ``{"train": (features, phones), "dev": ..., "test": ...}`` where ``features``
            is a list of ``[T_i, D]`` arrays and ``phones`` a list of phone-name lists.
            Phones absent from train cannot be predicted but still count in the reference.
        config: the recipe (defaults: :class:`CTCProbeConfig`).
        seed: seeds the initialisation and the batch order.
    """
    config = config or CTCProbeConfig()
    threads = torch.get_num_threads()
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    try:
        return _fit_ctc_probe(splits, config, seed)
    finally:
        torch.set_num_threads(threads)


def _fit_ctc_probe(splits: dict[str, tuple[Sequence[np.ndarray], Sequence[Sequence[str]]]],
                   config: CTCProbeConfig, seed: int) -> CTCProbeFit:
    train_feats, train_phones = splits["train"]
    if not train_feats:
        raise ValueError("the train split holds no utterances")
    vocab = sorted({p for seq in train_phones for p in seq})
    if not vocab:
        raise ValueError("the train transcripts hold no phones")
    index = {p: i + 1 for i, p in enumerate(vocab)}  # 0 = blank

    stacked = np.concatenate([np.asarray(f, dtype=np.float64) for f in train_feats], axis=0)
    mean = stacked.mean(axis=0)
    std = stacked.std(axis=0)
    std[std == 0] = 1.0  # constant features keep scale 1, as StandardScaler does
    del stacked
    mean_t = torch.from_numpy(mean.astype(np.float32))
    std_t = torch.from_numpy(std.astype(np.float32))

    def prepare(feats: Sequence[np.ndarray]) -> list[torch.Tensor]:
        return [(torch.from_numpy(np.asarray(f, dtype=np.float32)) - mean_t) / std_t
                for f in feats]

    dim = int(mean.shape[0])
    generator = torch.Generator().manual_seed(seed)
    linear = torch.nn.Linear(dim, len(vocab) + 1)
    with torch.no_grad():  # seeded re-initialisation (PyTorch's default scheme)
        bound = 1.0 / np.sqrt(dim)
        linear.weight.uniform_(-bound, bound, generator=generator)
        linear.bias.uniform_(-bound, bound, generator=generator)
    optimiser = torch.optim.Adam(linear.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    ctc = torch.nn.CTCLoss(blank=0, reduction="mean", zero_infinity=True)

    prepared = {name: (prepare(feats), [list(p) for p in phones])
                for name, (feats, phones) in splits.items()}
    train_x = prepared["train"][0]
    train_y = [torch.tensor([index[p] for p in seq], dtype=torch.long) for seq in train_phones]
    too_short = sum(1 for x, y in zip(train_x, train_y, strict=True)
                    if len(x) < _min_ctc_frames(y.tolist()))

    def evaluate(name: str) -> float:
        feats, refs = prepared[name]
        if not feats or not any(refs):
            return float("nan")
        with torch.inference_mode():
            hyps = [[vocab[i - 1] for i in greedy_decode(torch.log_softmax(linear(x), -1),
                                                          len(x))] for x in feats]
        return phone_error_rate(refs, hyps)

    select_on = "dev" if "dev" in prepared and prepared["dev"][0] else None
    dev_curve: list[tuple[int, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None

    def checkpoint(step: int) -> None:
        nonlocal best
        if select_on is None:
            best = (float("nan"), step, {})
            return
        score = evaluate(select_on)
        dev_curve.append((step, score))
        if best is None or score < best[0]:  # strict: ties keep the earlier step
            best = (score, step, {k: v.detach().clone()
                                  for k, v in linear.state_dict().items()})

    checkpoint(0)
    losses: list[float] = []
    order: list[int] = []
    for step in range(1, config.steps + 1):
        if len(order) < config.batch_size:  # a fresh seeded shuffle once train is used up
            order += torch.randperm(len(train_x), generator=generator).tolist()
        batch, order = order[:config.batch_size], order[config.batch_size:]
        x, x_len = _pad([train_x[i] for i in batch])
        y = [train_y[i] for i in batch]
        y_len = torch.tensor([len(t) for t in y], dtype=torch.long)
        log_probs = torch.log_softmax(linear(x), dim=-1).transpose(0, 1)  # [T, B, C]
        loss = ctc(log_probs, torch.cat(y), x_len, y_len)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(linear.parameters(), config.grad_clip)
        optimiser.step()
        losses.append(float(loss.detach()))
        if step % config.eval_every == 0 or step == config.steps:
            checkpoint(step)
    final_loss = float(np.mean(losses[-config.eval_every:])) if losses else float("nan")
    assert best is not None
    if best[2]:
        linear.load_state_dict(best[2])

    per = {name: evaluate(name) for name in prepared}
    return CTCProbeFit(
        per=per, n_rows={name: len(feats) for name, (feats, _) in prepared.items()},
        n_frames={name: int(sum(len(f) for f in feats))
                  for name, (feats, _) in prepared.items()},
        best_step=best[1] if select_on else config.steps, dev_curve=dev_curve,
        final_loss=final_loss, too_short=too_short, dim=dim, steps=config.steps)
