"""Watch RankMe-t of every layer while PyTorch Lightning trains a BEST-RQ speech encoder.

The model is speechrank's own small BEST-RQ encoder (Chiu et al., ICML 2022) with its
masked-prediction objective, wrapped in a LightningModule. A ``RankMonitor`` holds a fixed
held-out set (the ``test`` split) and ``RankMonitorCallback`` logs ``rankme_t/layer_<i>``
(Aldeneh et al., ICASSP 2025) through the module's loggers every ``--every`` steps, plus a
collapse flag per layer. The run takes about a minute on two CPU cores with the defaults.

    python examples/lightning_monitor.py                      # FSDD beside the repo, or synthetic
    python examples/lightning_monitor.py --data fsdd:PATH --steps 200 --store runs.sqlite

Needs ``pip install 'speechrank[lightning]'``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pytorch_lightning as pl
import torch
from _common import default_data, pad_batch, print_rank_table, training_waves

from speechrank.encoders.bestrq import config_for_size, init_bestrq_model
from speechrank.monitor import RankCollapseWarning, RankMonitor
from speechrank.monitor.lightning import RankMonitorCallback
from speechrank.pretrain.objective import BatchRandom, BestRqPretrainer, Masking
from speechrank.pretrain.recipe import TrainConfig
from speechrank.spec import MeasureSpec


class BestRqModule(pl.LightningModule):
    """BEST-RQ pretraining: encoder + frozen random-projection quantiser + prediction head."""

    def __init__(self, size: str, seed: int, learning_rate: float, warmup_steps: int) -> None:
        super().__init__()
        self.recipe = TrainConfig(size=size, seed=seed, learning_rate=learning_rate,
                                  warmup_steps=warmup_steps)
        self.pretrainer = BestRqPretrainer(init_bestrq_model(config_for_size(size), seed),
                                           quantizer_seed=seed)

    @property
    def encoder(self) -> torch.nn.Module:
        return self.pretrainer.encoder

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor],
                      batch_idx: int) -> torch.Tensor:
        waves, lengths = batch
        recipe, step = self.recipe, int(self.global_step)
        random = BatchRandom(np.random.default_rng([recipe.seed, step]),
                             torch.Generator().manual_seed(recipe.seed * 100_003 + step))
        masking = Masking(recipe.mask_prob, recipe.mask_span, recipe.noise_std)
        result = self.pretrainer(waves, lengths, masking, random)
        self.log("train/loss", result.loss, prog_bar=True)
        self.log("train/accuracy", result.accuracy)
        return result.loss

    def configure_optimizers(self) -> dict:
        recipe = self.recipe
        optimizer = torch.optim.AdamW(self.parameters(), lr=recipe.learning_rate,
                                      betas=recipe.adam_betas, weight_decay=recipe.weight_decay)
        warmup = max(1, recipe.warmup_steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min((step + 1) / warmup, (warmup / (step + 1)) ** 0.5))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule,
                                                          "interval": "step"}}


def main(argv: list[str] | None = None) -> list[tuple[int, dict[str, float]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="DATA spec with a test split (default: FSDD or synthetic)")
    parser.add_argument("--size", default="tiny", help="BEST-RQ size: micro, tiny, small")
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps")
    parser.add_argument("--every", type=int, default=15, help="measure every N steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-utterances", type=int, default=640)
    parser.add_argument("--heldout", type=int, default=150, help="held-out utterances")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--store", help="also write the rank rows to this results store")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    data = args.data or default_data()
    module = BestRqModule(args.size, args.seed, args.learning_rate, args.warmup_steps)
    sample_rate = module.encoder.config.sample_rate
    waves = [torch.from_numpy(w) for w in
             training_waves(data, sample_rate, args.train_utterances, seed=args.seed)]
    loader = torch.utils.data.DataLoader(
        waves, batch_size=args.batch_size, shuffle=True, collate_fn=pad_batch,
        generator=torch.Generator().manual_seed(args.seed))

    # The held-out set is read, resampled and batched once, at the monitor's first call.
    monitor = RankMonitor(module.encoder, f"{data}#split=test",
                          MeasureSpec.for_monitor(num_utterances=args.heldout, seed=args.seed),
                          run_name=f"lightning-bestrq-{args.size}", store=args.store)
    callback = RankMonitorCallback(monitor, every_n_train_steps=args.every, at_start=True)
    trainer = pl.Trainer(max_steps=args.steps, accelerator="cpu", devices=1, logger=False,
                         callbacks=[callback], enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=False,
                         num_sanity_val_steps=0, deterministic=True)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("always", RankCollapseWarning)  # show every alarm
        trainer.fit(module, loader)
    seconds = time.perf_counter() - started
    monitor.close()

    heldout = monitor.heldout.describe()
    print(f"trained {args.steps} steps in {seconds:.1f} s; held-out set: "
          f"{heldout['utterances']} utterances, {heldout['audio_seconds']:.0f} s of audio; "
          f"the last rank check took {monitor.last.seconds:.2f} s")
    print_rank_table(callback.history, "RankMe-t per layer (logged as rankme_t/layer_<i>):")
    entered = [a for a in monitor.alarms if a.new]  # a layer entering collapse, once each
    if entered:
        print("collapse alarms: " + "; ".join(
            f"layer {a.layer} at step {a.step} ({a.reason}: {a.value:.1f}"
            + (f" from {a.best:.1f})" if a.best is not None else ")") for a in entered))
    return callback.history


if __name__ == "__main__":
    main()
