"""Training runs on disk as their frameworks write them, from tiny random models.

- fairseq (``fairseq/checkpoint_utils.py`` ``save_checkpoint``: ``checkpoint<E>.pt``,
  ``checkpoint_<E>_<U>.pt``, ``checkpoint_last.pt`` / ``checkpoint_best.pt`` copied from the
  first; ``fairseq/trainer.py`` ``Trainer.state_dict``: ``optimizer_history[-1]
  ["num_updates"]``, ``extra_state["metrics"]`` as ``fairseq/logging/metrics.py``
  ``state_dict()`` keeps it, one ``MetersDict.state_dict()`` per aggregate:
  ``[(priority, key, meter class, meter state)]`` with ``AverageMeter`` state ``{val, sum,
  count, round}`` (``fairseq/logging/meters.py``)); the model weights under fairseq's own
  module names (:func:`tests.test_encoders_fairseq._fairseq_state`).
- Hugging Face ``Trainer`` (``transformers/trainer.py`` ``_save_checkpoint``: an output
  directory of ``checkpoint-<global_step>/`` with the model's ``save_pretrained`` files and
  ``trainer_state.json``, ``TrainerState.save_to_json`` of ``transformers/trainer_callback.py``:
  ``global_step``, ``log_history`` entries ``{"epoch", "grad_norm", "learning_rate", "loss",
  "step"}``).
- torchaudio's HuBERT recipe under Lightning (pytorch/audio ``examples/hubert/train.py``: two
  ``ModelCheckpoint`` callbacks saving ``epoch=<E>-step=<S>.ckpt`` into
  ``checkpoints_<dataset>_<model>/``, the second's copy of a step named ``-v1``;
  ``lightning_modules.py``: the ``HuBERTPretrainModel`` under ``model``, ``train_loss`` and
  ``train_masked_accuracy`` logged per step and per epoch), with the ``metrics.csv`` a
  ``CSVLogger`` keeps in ``lightning_logs/version_0/`` laid out as pytorch-lightning 2.6 writes
  it; the checkpoint dicts are :func:`tests.test_encoders_torchaudio.lightning_checkpoint`.
"""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict
from pathlib import Path

import torch

from .test_encoders_fairseq import _fairseq_state, _fields, _source
from .test_encoders_torchaudio import HEADS, _hf_source, _pretrain_state, lightning_checkpoint


def _meters(loss_bits: float, accuracy: float, lr: float, count: int = 4) -> list:
    """One fairseq ``MetersDict.state_dict()`` with a HuBERT criterion's meters."""
    return [
        (0, "loss", "AverageMeter", {"val": loss_bits, "sum": loss_bits * count,
                                     "count": count, "round": 3}),
        (0, "correct_m_0", "AverageMeter", {"val": accuracy, "sum": accuracy * count,
                                            "count": count, "round": None}),
        (300, "lr", "AverageMeter", {"val": lr, "sum": 0, "count": 0, "round": None}),
    ]


def fairseq_checkpoint(num_updates: int, *, seed: int, loss: float = 5.0,
                       accuracy: float = 0.25, lr: float = 1e-4) -> tuple[dict, torch.nn.Module]:
    """A HuBERT checkpoint dict as fairseq saves it, and the Hugging Face model it holds."""
    model = _source("hubert", False, seed=seed)
    state = _fairseq_state(model, False, parametrized=False)
    state["label_embs_concat"] = torch.randn(504, 24)
    state["final_proj.weight"] = torch.randn(24, 48)
    state["final_proj.bias"] = torch.randn(24)
    task = {"_name": "hubert_pretraining", "normalize": False, "sample_rate": 16000}
    ckpt = {
        "args": None,
        "cfg": {"model": {"_name": "hubert", **_fields(False)}, "task": task},
        "model": state,
        "optimizer_history": [{"criterion_name": "HubertCriterion",
                               "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None},
                               "num_updates": num_updates}],
        "task_state": {},
        "extra_state": {
            "metrics": OrderedDict([("train", _meters(loss, accuracy, lr)),
                                    ("train_inner", []), ("default", [])]),
            "previous_training_time": 12.5,
            "train_iterator": {"epoch": 1, "iterations_in_epoch": num_updates},
            "val_loss": None,
        },
    }
    return ckpt, model


def write_fairseq_run(root: Path) -> dict[str, object]:
    """A fairseq save directory: ``checkpoint_1_100.pt`` and ``checkpoint_2_300.pt`` (the
    name's update count agrees with ``num_updates``), ``checkpoint_last.pt`` a copy of the
    second, ``checkpoint_best.pt`` a copy of the first. Returns the source models by step."""
    root.mkdir(parents=True, exist_ok=True)
    first, model_a = fairseq_checkpoint(100, seed=1, loss=6.5, accuracy=0.125)
    second, model_b = fairseq_checkpoint(300, seed=2, loss=4.25, accuracy=0.5)
    torch.save(first, root / "checkpoint_1_100.pt")
    torch.save(second, root / "checkpoint_2_300.pt")
    shutil.copyfile(root / "checkpoint_2_300.pt", root / "checkpoint_last.pt")
    shutil.copyfile(root / "checkpoint_1_100.pt", root / "checkpoint_best.pt")
    return {100: model_a, 300: model_b}


def write_hf_trainer_run(root: Path, steps: tuple[int, ...] = (2, 4)) -> dict[int, object]:
    """A Hugging Face Trainer output directory: ``checkpoint-<step>/`` per step, the model's
    ``save_pretrained`` files and ``trainer_state.json``; a loss is logged every step
    (``loss`` = 3 - step / 10). Returns the source models by step."""
    models = {}
    history = []
    for step in range(1, max(steps) + 1):
        history.append({"epoch": step / max(steps), "grad_norm": 1.5,
                        "learning_rate": 1e-3 * step, "loss": 3.0 - step / 10, "step": step})
        if step in steps:
            model = _source("wav2vec2", False, seed=10 + step)
            directory = root / f"checkpoint-{step}"
            model.save_pretrained(directory)
            state = {"best_metric": None, "best_model_checkpoint": None,
                     "epoch": step / max(steps), "eval_steps": 500, "global_step": step,
                     "is_hyper_param_search": False, "is_local_process_zero": True,
                     "is_world_process_zero": True, "log_history": list(history),
                     "logging_steps": 1, "max_steps": max(steps), "num_train_epochs": 1,
                     "save_steps": 2, "total_flos": 0.0, "train_batch_size": 2,
                     "trial_name": None, "trial_params": None}
            (directory / "trainer_state.json").write_text(json.dumps(state, indent=2))
            torch.save({"state": {}}, directory / "optimizer.pt")
            models[step] = model
    return models


def write_lightning_run(root: Path, steps: tuple[int, ...] = (2, 4)) -> dict[int, object]:
    """torchaudio's HuBERT recipe run by Lightning: ``epoch=0-step=<S>.ckpt`` (and the second
    callback's ``-v1`` copy) per step, ``last.ckpt``, and ``metrics.csv`` with one row per
    batch (``step`` = optimizer steps before it; ``train_loss`` = 5 - step / 4,
    ``train_masked_accuracy`` = step / 10) and an epoch row. Returns the source models by step.
    """
    checkpoints = root / "checkpoints_librispeech_hubert_pretrain_base"
    checkpoints.mkdir(parents=True, exist_ok=True)
    models = {}
    for step in steps:
        model = _hf_source("hubert", False, seed=20 + step)
        ckpt = lightning_checkpoint(_pretrain_state(model), step=step,
                                    hyper={"encoder_num_heads": HEADS})
        torch.save(ckpt, checkpoints / f"epoch=0-step={step}.ckpt")
        shutil.copyfile(checkpoints / f"epoch=0-step={step}.ckpt",
                        checkpoints / f"epoch=0-step={step}-v1.ckpt")
        models[step] = model
    shutil.copyfile(checkpoints / f"epoch=0-step={max(steps)}.ckpt", checkpoints / "last.ckpt")
    logs = root / "lightning_logs" / "version_0"
    logs.mkdir(parents=True)
    lines = ["epoch,step,train_loss_epoch,train_loss_step,train_masked_accuracy_epoch,"
             "train_masked_accuracy_step"]
    lines += [f"0,{step},,{5 - step / 4},,{step / 10}" for step in range(max(steps))]
    lines.append(f"0,{max(steps) - 1},4.5,,0.15,")
    (logs / "metrics.csv").write_text("\n".join(lines) + "\n")
    return models
