"""RankMonitorCallback inside a real (tiny) PyTorch Lightning training run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger

from speechrank.monitor import RankMonitor
from speechrank.monitor.lightning import RankMonitorCallback
from speechrank.spec import MeasureSpec
from tests.test_monitor_core import ToyEncoder, toy_encoder, waves


class MemoryLogger(Logger):
    """Keeps every ``log_metrics`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.calls.append((step, dict(metrics)))


class LitToy(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = ToyEncoder(seed=2)
        self.encoder.blocks[0].eval()  # a frozen-style submodule that must stay in eval

    def _loss(self, batch: Any) -> torch.Tensor:
        hidden = self.encoder(batch[0])
        return sum((h[:, 1:] - h[:, :-1]).pow(2).mean() - h.pow(2).mean() for h in hidden)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _loader() -> torch.utils.data.DataLoader:
    audio = torch.from_numpy(np.stack([w[:8000] for w in waves(8, seed=1, lo=0.6)]))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(audio), batch_size=4)


def test_callback_logs_rank_during_training(tmp_path: Path) -> None:
    module = LitToy()
    monitor = RankMonitor(toy_encoder(module.encoder), waves(12, seed=5),
                          MeasureSpec.for_monitor(layers="0,3"))
    callback = RankMonitorCallback(monitor, every_n_train_steps=2, at_start=True,
                                   model="encoder")
    logger = MemoryLogger()
    trainer = pl.Trainer(max_steps=6, accelerator="cpu", devices=1, logger=logger,
                         callbacks=[callback], val_check_interval=3, check_val_every_n_epoch=None,
                         limit_val_batches=1,
                         log_every_n_steps=50, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, num_sanity_val_steps=1)
    trainer.fit(module, _loader(), _loader())

    measured = [step for step, _ in callback.history]
    # step 0 at start, every 2 train steps; validation at steps 3 and 6 (6 reuses step 6).
    assert measured == [0, 2, 3, 4, 6]
    direct = {step: m for step, m in logger.calls if "rankme_t/layer_3" in m and "epoch" not in m}
    assert sorted(direct) == [0, 2, 4, 6]  # log_every_n_steps=50 does not hide them
    history = dict(callback.history)
    assert direct[2]["rankme_t/layer_0"] == history[2]["rankme_t/layer_0"]
    assert "collapse/layer_3" in direct[4]
    # Validation-end values go through log_dict (Lightning's own step numbering, float32).
    epochs = [m for _, m in logger.calls if "rankme_t/layer_3" in m and "epoch" in m]
    assert len(epochs) == 2
    for metrics, step in zip(epochs, (3, 6), strict=True):
        assert metrics["rankme_t/layer_3"] == pytest.approx(history[step]["rankme_t/layer_3"],
                                                            rel=1e-6)
    logged = direct
    # Training moved the weights, so the rank moved.
    assert logged[0]["rankme_t/layer_3"] != logged[6]["rankme_t/layer_3"]
    assert "rankme_t/layer_3" in trainer.callback_metrics
    # The frozen-style submodule is still in eval mode, the rest back in train mode.
    assert not module.encoder.blocks[0].training and module.encoder.blocks[1].training


def test_callback_rejects_a_bad_interval() -> None:
    monitor = RankMonitor(toy_encoder(), waves(4))
    with pytest.raises(ValueError):
        RankMonitorCallback(monitor, every_n_train_steps=0)
