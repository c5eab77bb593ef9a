"""Watch RankMe-t of every layer while a Hugging Face ``Trainer`` pretrains wav2vec 2.0.

A small, randomly initialised ``Wav2Vec2ForPreTraining`` (4 layers, 128 wide) learns with
wav2vec 2.0's own contrastive objective (Baevski et al., NeurIPS 2020): the collator masks
spans of frames and samples distractors, the model returns the loss. A ``RankMonitor`` holds a
fixed held-out set (the ``test`` split) and ``RankMonitorTrainerCallback`` sends
``rankme_t/layer_<i>`` (Aldeneh et al., ICASSP 2025) and ``collapse/layer_<i>`` through
``trainer.log``, so they land in ``trainer.state.log_history`` and in every reporting
integration beside the loss. The model has a pretraining head; the monitor measures its
``wav2vec2`` base model. About a minute on two CPU cores with the defaults.

    python examples/hf_trainer_monitor.py                     # FSDD beside the repo, or synthetic
    python examples/hf_trainer_monitor.py --data fsdd:PATH --steps 300 --every 50

Needs ``accelerate`` (the Trainer's own requirement).
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import numpy as np
import torch
from _common import default_data, pad_batch, print_rank_table, training_waves
from transformers import Trainer, TrainingArguments, Wav2Vec2Config, Wav2Vec2ForPreTraining
from transformers.models.wav2vec2.modeling_wav2vec2 import (
    _compute_mask_indices,
    _sample_negative_indices,
)

from speechrank.monitor import RankCollapseWarning, RankMonitor
from speechrank.monitor.hf import RankMonitorTrainerCallback
from speechrank.spec import MeasureSpec

SAMPLE_RATE = 16_000


def tiny_config() -> Wav2Vec2Config:
    """wav2vec 2.0 shrunk to train on a CPU: layer-norm convolutions (padding-safe with an
    attention mask), 20 ms frames, 2 x 64 code vectors, 20 distractors."""
    return Wav2Vec2Config(
        hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
        conv_dim=(128,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        feat_extract_norm="layer", do_stable_layer_norm=True, num_conv_pos_embeddings=32,
        num_conv_pos_embedding_groups=8, num_codevectors_per_group=64, num_codevector_groups=2,
        codevector_dim=64, proj_codevector_dim=64, num_negatives=20, mask_time_length=5)


class PretrainingCollator:
    """Pads a batch and draws wav2vec 2.0's span mask and distractor indices for it."""

    def __init__(self, model: Wav2Vec2ForPreTraining, mask_prob: float = 0.5) -> None:
        self.model = model
        self.mask_prob = mask_prob

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        waves, lengths = pad_batch([item["input_values"] for item in items])
        samples = torch.arange(waves.shape[1])[None, :]
        attention_mask = (samples < lengths[:, None]).long()
        config = self.model.config
        frames = self.model._get_feat_extract_output_lengths(lengths)
        width = int(self.model._get_feat_extract_output_lengths(waves.shape[1]))
        frame_mask = (torch.arange(width)[None, :] < frames[:, None]).long()
        mask = _compute_mask_indices((len(items), width), self.mask_prob,
                                     config.mask_time_length, attention_mask=frame_mask,
                                     min_masks=2)
        negatives = _sample_negative_indices((len(items), width), config.num_negatives, mask)
        return {"input_values": waves, "attention_mask": attention_mask,
                "mask_time_indices": torch.from_numpy(mask),
                "sampled_negative_indices": torch.from_numpy(negatives)}


def normalised(wave: np.ndarray) -> torch.Tensor:
    """Zero mean, unit variance: what the monitor's adapter feeds the model too
    (``do_normalize``, as Wav2Vec2FeatureExtractor does for layer-norm models)."""
    wave = wave.astype(np.float64)
    return torch.from_numpy(((wave - wave.mean()) / np.sqrt(wave.var() + 1e-7))
                            .astype(np.float32))


def main(argv: list[str] | None = None) -> list[tuple[int, dict[str, float]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="DATA spec with a test split (default: FSDD or synthetic)")
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps")
    parser.add_argument("--every", type=int, default=15, help="measure every N steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-utterances", type=int, default=480)
    parser.add_argument("--heldout", type=int, default=150, help="held-out utterances")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--output-dir", default=None, help="Trainer output directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    data = args.data or default_data()
    model = Wav2Vec2ForPreTraining(tiny_config())
    waves = [normalised(w) for w in
             training_waves(data, SAMPLE_RATE, args.train_utterances, seed=args.seed)
             if len(w) >= 0.25 * SAMPLE_RATE]  # at least a few mask spans long
    # Built from the model with its head: the monitor measures model.wav2vec2.
    monitor = RankMonitor(model, f"{data}#split=test",
                          MeasureSpec.for_monitor(num_utterances=args.heldout, seed=args.seed),
                          run_name="hf-wav2vec2-tiny")
    output_dir = args.output_dir or f"/tmp/speechrank-hf-example-{args.seed}"
    training_args = TrainingArguments(
        output_dir=output_dir, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, warmup_steps=max(1, args.steps // 10),
        weight_decay=0.01, logging_steps=max(1, args.every), report_to=[], save_strategy="no",
        use_cpu=True, remove_unused_columns=False, disable_tqdm=True, seed=args.seed,
        dataloader_num_workers=0)
    trainer = Trainer(model=model, args=training_args,
                      train_dataset=[{"input_values": w} for w in waves],
                      data_collator=PretrainingCollator(model))
    callback = RankMonitorTrainerCallback(monitor, every_n_steps=args.every,
                                          at_start=True).attach(trainer)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("always", RankCollapseWarning)  # show every alarm
        trainer.train()
    seconds = time.perf_counter() - started

    losses = {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}
    heldout = monitor.heldout.describe()
    print(f"trained {args.steps} steps in {seconds:.1f} s; held-out set: "
          f"{heldout['utterances']} utterances, {heldout['audio_seconds']:.0f} s of audio; "
          f"the last rank check took {monitor.last.seconds:.2f} s")
    print("training loss: " + ", ".join(f"step {s}: {v:.3f}" for s, v in losses.items()))
    print_rank_table(callback.history,
                     "RankMe-t per layer, from trainer.state.log_history (rankme_t/layer_<i>):")
    return callback.history


if __name__ == "__main__":
    main()
