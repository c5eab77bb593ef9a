"""The collapse alarm ends training, opt-in: Lightning, the Hugging Face Trainer, a plain loop,
and speechrank's own pretraining loop.

The runs are real: a small encoder trained to regress its last layer onto a target. With a
*constant* target (the mean of the teacher's outputs) the last layer's frames all become one
vector, so RankMe-t of that layer falls to about 2 and stays there (a genuine collapse); with
a fixed random *teacher* of the input the same encoder dips early (the last layer loses half
its rank within a few steps) and recovers by step 12, the healthy pattern the collapse module
describes. Measured every 6 steps, the alarm fires at step 6 in both runs; a
``CollapseStop(patience=2)`` stops the first at step 12 and lets the second finish.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from transformers import Trainer, TrainingArguments

from speechrank.encoders.wrapped import WrapOptions, wrap_module
from speechrank.errors import SpeechrankError
from speechrank.monitor import CollapseAlarm, CollapseDetector, CollapseStop, RankMonitor
from speechrank.monitor.collapse import RankCollapseWarning
from speechrank.monitor.hf import RankMonitorTrainerCallback
from speechrank.monitor.lightning import RankMonitorCallback
from speechrank.monitor.pretrain import pretrain_with_monitor
from speechrank.pretrain import TrainConfig, TrainRun, pretrain
from tests.test_monitor_core import SR, toy_frames, waves
from tests.test_pretrain_training import corpus  # noqa: F401  (a fixture)

LR = 0.01
EVERY = 6  # steps between measurements


pytestmark = [
    pytest.mark.filterwarnings("ignore::speechrank.monitor.collapse.RankCollapseWarning"),
    pytest.mark.usefixtures("one_torch_thread"),  # float32 sums depend on it
]


class Regressor(torch.nn.Module):
    """A strided convolution and three tanh(linear) blocks (biases start at zero) whose last
    layer regresses onto a target: a fixed random teacher of the first layer's frames, or,
    with ``constant``, the teacher's mean output, the same vector for every frame."""

    def __init__(self, constant: bool, dim: int = 16) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.front = torch.nn.Conv1d(1, dim, kernel_size=400, stride=160, bias=False)
            self.blocks = torch.nn.ModuleList(torch.nn.Linear(dim, dim) for _ in range(3))
            self.teacher = torch.nn.Linear(dim, dim, bias=False).requires_grad_(False)
        for block in self.blocks:
            torch.nn.init.zeros_(block.bias)
        self.constant = constant

    def hidden(self, waveforms: torch.Tensor) -> list[torch.Tensor]:
        h = self.front(waveforms[:, None]).transpose(1, 2)
        states = [h]
        for block in self.blocks:
            h = torch.tanh(block(h))
            states.append(h)
        return states

    def loss(self, waveforms: torch.Tensor) -> torch.Tensor:
        states = self.hidden(waveforms)
        target = torch.tanh(self.teacher(states[0].detach()))
        if self.constant:
            target = target.mean(dim=(0, 1), keepdim=True).expand_as(target)
        return (states[-1] - target).pow(2).mean()

    def forward(self, input_values: torch.Tensor, **_: Any) -> dict[str, torch.Tensor]:
        return {"loss": self.loss(input_values)}


class Encoder(torch.nn.Module):
    """The regressor's layers as the monitor sees them (shares its weights)."""

    def __init__(self, net: Regressor) -> None:
        super().__init__()
        self.net = net

    def forward(self, waveforms: torch.Tensor) -> list[torch.Tensor]:
        return self.net.hidden(waveforms)


def monitor_of(net: Regressor) -> RankMonitor:
    encoder = wrap_module(Encoder(net), sample_rate=SR, frame_lengths=toy_frames,
                          options=WrapOptions(name="toy"))
    return RankMonitor(encoder, waves(12, seed=5))


def training_audio() -> torch.Tensor:
    return torch.from_numpy(np.stack([w[:8000] for w in waves(8, seed=1, lo=0.6)]))


# ----------------------------------------------------------------------------- plain loop

def plain_loop(constant: bool, steps: int = 30, stop: CollapseStop | None = None
               ) -> tuple[list[int], int | None]:
    """Train, measuring every EVERY steps; returns the measured steps and the step at which
    the loop stopped (``None``: it ran to the end)."""
    net = Regressor(constant)
    monitor = monitor_of(net)
    optimiser = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=LR)
    audio = training_audio()
    measured = []
    for step in range(steps + 1):
        if step % EVERY == 0:
            result = monitor.measure(step=step)
            measured.append(step)
            if (stop(result) if stop is not None else result.should_stop):
                return measured, step
        if step == steps:
            break
        batch = audio[:4] if step % 2 == 0 else audio[4:]  # as the loaders below: 2 a epoch
        loss = net.loss(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return measured, None


def test_a_plain_loop_stops_when_the_last_layer_collapses() -> None:
    measured, stopped = plain_loop(constant=True)
    assert stopped == 6 and measured == [0, 6]


def test_a_plain_loop_with_patience_stops_a_collapse_but_not_a_dip() -> None:
    # the teacher run's early dip raises the alarm once (step 6), then recovers
    assert plain_loop(constant=False)[1] == 6
    assert plain_loop(constant=False, stop=CollapseStop(patience=2))[1] is None
    assert plain_loop(constant=True, stop=CollapseStop(patience=2))[1] == 12


def test_the_result_flag_is_the_alarm() -> None:
    net = Regressor(constant=True)
    monitor = monitor_of(net)
    first = monitor.measure(step=0)
    assert not first.should_stop and first.alarms == []
    with torch.no_grad():  # a layer that outputs one vector for every frame
        net.blocks[-1].weight.zero_()
        net.blocks[-1].bias.fill_(0.5)
    with pytest.warns(RankCollapseWarning):
        second = monitor.measure(step=1)
    assert second.should_stop and {a.layer for a in second.alarms} == {"3"}
    assert CollapseStop(patience=1)(second) and not CollapseStop()(second)


# ----------------------------------------------------------------------------- Lightning

class LitRegressor(pl.LightningModule):
    def __init__(self, constant: bool) -> None:
        super().__init__()
        self.net = Regressor(constant)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.net.loss(batch[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=LR)


def lightning_run(tmp_path: Path, constant: bool, stop: bool | CollapseStop
                  ) -> tuple[pl.Trainer, RankMonitorCallback]:
    module = LitRegressor(constant)
    callback = RankMonitorCallback(monitor_of(module.net), every_n_train_steps=EVERY,
                                   at_start=True, on_validation=False,
                                   stop_on_collapse=stop)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(training_audio()),
                                         batch_size=4)
    trainer = pl.Trainer(max_steps=30, accelerator="cpu", devices=1, logger=False,
                         callbacks=[callback], enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(module, loader)
    return trainer, callback


@pytest.mark.slow
def test_lightning_stops_a_collapsing_run(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, callback = lightning_run(tmp_path, constant=True, stop=True)
    # stop_on_collapse=True waits for a second collapsed check (patience 2)
    assert trainer.global_step == 12
    assert [step for step, _ in callback.history] == [0, 6, 12]
    step, reason = callback.stop_reason
    assert step == 12 and reason.startswith("stopping on rank collapse (layer ")
    assert "at 2 consecutive checks): " in reason
    assert callback.history[-1][1]["collapse/layer_3"] == 1.0
    assert any("stopping on rank collapse" in str(w.message) for w in caught)


@pytest.mark.slow
def test_lightning_lets_a_healthy_run_finish(tmp_path: Path) -> None:
    trainer, callback = lightning_run(tmp_path, constant=False, stop=CollapseStop(patience=2))
    assert trainer.global_step == 30 and callback.stop_reason is None
    # the early dip raised the alarm once without stopping the run
    flags = [values["collapse/layer_3"] for _, values in callback.history]
    assert flags[1] == 1.0 and sum(flags) == 1.0


def test_lightning_without_the_option_never_stops(tmp_path: Path) -> None:
    trainer, callback = lightning_run(tmp_path, constant=True, stop=False)
    assert trainer.global_step == 30 and callback.stop_reason is None
    assert callback.history[-1][1]["collapse/layer_3"] == 1.0


# ----------------------------------------------------------------------------- HF Trainer

def hf_run(tmp_path: Path, constant: bool, stop: bool | CollapseStop
           ) -> tuple[Trainer, RankMonitorTrainerCallback]:
    net = Regressor(constant)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=30,
                             per_device_train_batch_size=4, learning_rate=LR,
                             lr_scheduler_type="constant", weight_decay=0.0,
                             max_grad_norm=0.0, logging_steps=100, save_strategy="no",
                             report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
                             dataloader_num_workers=0)
    data = [{"input_values": wave} for wave in training_audio()]
    trainer = Trainer(model=net, args=args, train_dataset=data)
    callback = RankMonitorTrainerCallback(monitor_of(net), every_n_steps=EVERY, at_start=True,
                                          on_evaluate=False,
                                          stop_on_collapse=stop).attach(trainer)
    trainer.train()
    return trainer, callback


@pytest.mark.slow
def test_the_hugging_face_trainer_stops_a_collapsing_run(tmp_path: Path) -> None:
    trainer, callback = hf_run(tmp_path, constant=True, stop=True)
    step, reason = callback.stop_reason
    assert trainer.state.global_step == step < 30
    assert "stopping on rank collapse" in reason
    logged = [e for e in trainer.state.log_history if "collapse/layer_3" in e]
    assert logged[-1]["collapse/layer_3"] == 1.0 and logged[-1]["step"] == step


@pytest.mark.slow
def test_the_hugging_face_trainer_lets_a_healthy_run_finish(tmp_path: Path) -> None:
    trainer, callback = hf_run(tmp_path, constant=False, stop=CollapseStop(patience=2))
    assert trainer.state.global_step == 30 and callback.stop_reason is None


# ----------------------------------------------------------------------------- the rule

def _alarm(streak: int, layer: str = "3") -> CollapseAlarm:
    return CollapseAlarm(step=5, key=f"rankme_t/layer_{layer}", layer=layer, value=1.0,
                         best=8.0, reason="dropped", streak=streak)


def test_the_detector_counts_consecutive_collapsed_checks() -> None:
    detector = CollapseDetector(min_rank=None, max_drop=0.5)
    streaks = []
    for step, value in enumerate([8.0, 3.0, 2.5, 6.0, 3.0]):
        alarms = detector.check(step, {"k": ("3", value)})
        streaks.append(alarms[0].streak if alarms else 0)
    assert streaks == [0, 1, 2, 0, 1]


def test_the_stop_rule() -> None:
    assert CollapseStop(patience=1)([_alarm(1)]) and not CollapseStop()([_alarm(1)])
    assert CollapseStop()([_alarm(2)]) and not CollapseStop()([])
    assert CollapseStop(patience=3).reasons([_alarm(2), _alarm(3, "4")]) == [_alarm(3, "4")]
    assert "at 3 consecutive checks" in CollapseStop(patience=3).message([_alarm(3)])
    assert CollapseStop.of(True) == CollapseStop() and CollapseStop.of(False) is None
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            CollapseStop(patience=bad)
    with pytest.raises(ValueError):
        CollapseStop.of("yes")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- pretrain

FAST = {"size": "micro", "batch_size": 4, "crop_seconds": 0.64, "num_clusters": 8,
        "kmeans_frames": 400, "warmup_steps": 1}


def test_the_pretraining_loop_ends_where_its_stop_hook_says(corpus: Path,  # noqa: F811
                                                           tmp_path: Path) -> None:
    asked: list[int] = []

    def stop(step: int) -> str | None:
        asked.append(step)
        return "enough" if step >= 2 else None

    run = tmp_path / "run"
    summary = pretrain(str(corpus), run, TrainRun(steps=6, save_every=1),
                       config=TrainConfig(**FAST), stop=stop, progress=False)
    assert (summary.final_step, summary.stopped_by, summary.stop_reason) == (2, "monitor",
                                                                           "enough")
    assert asked == [0, 1, 2]
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert {"event": "stop", "step": 2, "reason": "enough"} in log
    assert log[-1]["stopped_by"] == "monitor"
    # the stopping checkpoint is the newest and resumable
    resumed = pretrain(str(corpus), run, TrainRun(steps=3, save_every=1, resume=True),
                       config=TrainConfig(**FAST), progress=False)
    assert (resumed.start_step, resumed.final_step, resumed.stopped_by) == (2, 3, "steps")


def test_stopping_on_collapse_needs_the_monitor(corpus: Path, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(SpeechrankError, match="needs the rank monitor"):
        pretrain_with_monitor(str(corpus), tmp_path / "run", monitor_data="none",
                              stop_on_collapse=True, config=TrainConfig(**FAST),
                              run=TrainRun(steps=1))


def test_the_command_line_refuses_a_stop_without_the_monitor(corpus: Path,  # noqa: F811
                                                             tmp_path: Path, capsys) -> None:
    from speechrank.cli import main

    code = main(["pretrain", str(corpus), str(tmp_path / "run"), "--steps", "1", "--quiet",
                 "--size", "micro", "--monitor-data", "none", "--stop-on-collapse"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "needs the rank monitor" in err[0]
