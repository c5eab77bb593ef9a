"""RankMonitorTrainerCallback inside a real (tiny) Hugging Face Trainer run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import HubertModel, Trainer, TrainerCallback, TrainingArguments

from speechrank.monitor import RankMonitor
from speechrank.monitor.hf import RankMonitorTrainerCallback
from speechrank.spec import MeasureSpec
from tests.test_monitor_core import _tiny_hubert_config, waves


class Smoothness(torch.nn.Module):
    """A HuBERT encoder under a toy objective (no labels): neighbouring frames agree."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hubert = HubertModel(_tiny_hubert_config())

    def forward(self, input_values: torch.Tensor, **_: Any) -> dict[str, torch.Tensor]:
        hidden = self.hubert(input_values).last_hidden_state
        loss = (hidden[:, 1:] - hidden[:, :-1]).pow(2).mean() - hidden.var(dim=1).mean()
        return {"loss": loss}


class ModeProbe(TrainerCallback):
    """Runs after the monitor at every step end and records the train flags it left."""

    def __init__(self) -> None:
        self.flags: list[bool] = []

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None,
                    **kwargs: Any) -> None:
        self.flags.append(all(m.training for m in model.modules()))


def _dataset(n: int) -> list[dict[str, torch.Tensor]]:
    return [{"input_values": torch.from_numpy(w[:8000])}
            for w in waves(n, seed=2, lo=0.6)]


def _trainer(tmp_path: Path, model: torch.nn.Module, **kwargs: Any) -> Trainer:
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2,
                             per_device_eval_batch_size=2, learning_rate=5e-3, logging_steps=1,
                             eval_strategy="steps", eval_steps=3, save_strategy="no",
                             report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
                             dataloader_num_workers=0, **kwargs)
    return Trainer(model=model, args=args, train_dataset=_dataset(8), eval_dataset=_dataset(2))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::speechrank.monitor.collapse.RankCollapseWarning")
def test_trainer_callback_logs_through_trainer_log(tmp_path: Path) -> None:
    model = Smoothness()
    monitor = RankMonitor(model.hubert, waves(10, seed=7), run_name="hf-run")
    trainer = _trainer(tmp_path, model)
    callback = RankMonitorTrainerCallback(monitor, every_n_steps=2, at_start=True,
                                          model="hubert").attach(trainer)
    probe = ModeProbe()
    trainer.add_callback(probe)
    trainer.train()
    assert [step for step, _ in callback.history] == [0, 2, 3, 4]
    logged = [entry for entry in trainer.state.log_history if "rankme_t/layer_2" in entry]
    assert [entry["step"] for entry in logged] == [0, 2, 3, 4]
    assert logged[1]["rankme_t/layer_0"] == callback.history[1][1]["rankme_t/layer_0"]
    assert {"collapse/layer_0", "epoch"} <= set(logged[-1])
    assert logged[0]["rankme_t/layer_2"] != logged[-1]["rankme_t/layer_2"]
    # Logging the rank does not cancel the Trainer's own loss logging at those steps.
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == [1, 2, 3, 4]
    assert probe.flags == [True] * 4  # train mode everywhere right after each measurement
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.filterwarnings("ignore::speechrank.monitor.collapse.RankCollapseWarning")
def test_trainer_callback_without_trainer_falls_back_to_log_history(tmp_path: Path) -> None:
    model = Smoothness()
    # The monitor is built from the whole model: it measures its Hugging Face part.
    monitor = RankMonitor(model.hubert, waves(6, seed=7), MeasureSpec.for_monitor(layers="2"))
    trainer = _trainer(tmp_path, model, eval_on_start=False)
    trainer.add_callback(RankMonitorTrainerCallback(monitor, every_n_steps=4, on_evaluate=False,
                                                    model=lambda m: m.hubert))
    with pytest.warns(UserWarning, match="attach"):
        trainer.train()
    entries = [e for e in trainer.state.log_history if "rankme_t/layer_2" in e]
    assert [e["step"] for e in entries] == [4]
    assert np.isfinite(entries[0]["rankme_t/layer_2"])
