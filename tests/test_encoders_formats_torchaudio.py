"""The torchaudio and ESPnet formats of the checkpoint registry: what they claim (and leave to
fairseq), how they list a run, its steps and training record, and a real Lightning run swept
into the store.

The Lightning run is written by pytorch-lightning itself (``Trainer``, ``ModelCheckpoint``,
``CSVLogger``) around a module laid out as torchaudio's HuBERT recipe
(``examples/hubert/lightning_modules.py``: the ``HuBERTPretrainModel`` under ``model``, logging
``train_loss`` and ``train_masked_accuracy`` with ``on_step=True, on_epoch=True``; two
``ModelCheckpoint`` callbacks into one ``checkpoints_<dataset>_<model>`` directory as
``examples/hubert/train.py`` has). The encoder weights are the torchaudio-named weights of
:mod:`tests.test_encoders_torchaudio`.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

from speechrank.encoders import formats, load_encoder
from speechrank.errors import SpeechrankError

from .checkpoint_layouts import fairseq_checkpoint
from .test_encoders_espnet import TORCHAUDIO_CONF, _config
from .test_encoders_torchaudio import (
    HEADS,
    WIDTH,
    _assert_same,
    _hf_source,
    _pretrain_state,
    hf_to_torchaudio,
    lightning_checkpoint,
)


def test_torchaudio_and_fairseq_files_go_to_their_formats(tmp_path):
    source = _hf_source()
    torch.save(hf_to_torchaudio(source), tmp_path / "bundle.pth")
    torch.save({"model": hf_to_torchaudio(source)}, tmp_path / "wrapped.pt")
    ckpt, _ = fairseq_checkpoint(7, seed=0)
    torch.save(ckpt, tmp_path / "checkpoint_1_7.pt")
    assert formats.detect(tmp_path / "bundle.pth").name == "torchaudio"
    assert formats.detect(tmp_path / "wrapped.pt").name == "torchaudio"
    assert formats.detect(tmp_path / "checkpoint_1_7.pt").name == "fairseq"
    # a fairseq file holding torchaudio-named weights is still fairseq's (cfg beside model)
    torch.save({"model": hf_to_torchaudio(source), "cfg": {"model": {}}}, tmp_path / "odd.pt")
    assert formats.detect(tmp_path / "odd.pt").name == "fairseq"
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    assert formats.detect(tmp_path / "other.pth") is None


class Plain:
    pass


def test_unreadable_lightning_file_is_claimed_and_refused_in_one_line(tmp_path):
    path = tmp_path / "epoch=0-step=5.ckpt"
    ckpt = lightning_checkpoint(_pretrain_state(_hf_source()), step=5)
    ckpt["hyper_parameters"] = {"thing": Plain()}
    torch.save(ckpt, path)
    assert formats.detect(path).name == "torchaudio"
    with pytest.raises(SpeechrankError, match="refusing to unpickle class") as info:
        load_encoder(str(path))
    assert "\n" not in str(info.value)
    torch.save({"state_dict": {"layer.weight": torch.zeros(2)}, "global_step": 1},
               tmp_path / "foreign.ckpt")  # some other Lightning model: nobody's
    assert formats.detect(tmp_path / "foreign.ckpt") is None


def test_lightning_run_lists_each_step_once(tmp_path):
    state = _pretrain_state(_hf_source())
    hyper = {"encoder_num_heads": HEADS}
    ckpts = tmp_path / "checkpoints_librispeech_hubert_pretrain_base"
    ckpts.mkdir()
    for name, step in (("epoch=0-step=2.ckpt", 2), ("epoch=0-step=2-v1.ckpt", 2),
                       ("epoch=1-step=4.ckpt", 4), ("last.ckpt", 4)):
        torch.save(lightning_checkpoint(state, step=step, hyper=hyper), ckpts / name)
    (ckpts / "epoch=1-step=6.ckpt").write_bytes(b"PK\x03\x04 half written")
    found = formats.run_checkpoints(tmp_path)
    assert [(c.name, c.step, c.format.name) for c in found] == [
        ("epoch=0-step=2.ckpt", 2, "torchaudio"), ("epoch=1-step=4.ckpt", 4, "torchaudio")]


def test_espnet_run(tmp_path):
    source = _hf_source()
    _config(tmp_path, "torchaudio_hubert", TORCHAUDIO_CONF)
    state = {f"encoder.hubert_pretrain_model.{k}": v for k, v in _pretrain_state(source).items()}
    for epoch in (1, 2, 10):
        torch.save(state, tmp_path / f"{epoch}epoch.pth")
    os.symlink("10epoch.pth", tmp_path / "valid.loss.best.pth")
    torch.save({"model": state, "optimizers": [], "reporter": {}}, tmp_path / "checkpoint.pth")
    found = formats.run_checkpoints(tmp_path)
    assert [(c.name, c.step, c.format.name) for c in found] == [
        ("1epoch.pth", 1, "espnet"), ("2epoch.pth", 2, "espnet"), ("10epoch.pth", 10, "espnet")]
    best = tmp_path / "valid.loss.best.pth"
    assert formats.describe(best).step == 10
    _assert_same(load_encoder(str(best)), source)


def _tree(state: dict[str, torch.Tensor], trainable: str) -> torch.nn.Module:
    """A module whose parameters have exactly the names of ``state``."""
    root = torch.nn.Module()
    for key, value in state.items():
        *path, leaf = key.split(".")
        node = root
        for part in path:
            if part not in node._modules:
                node.add_module(part, torch.nn.Module())
            node = node._modules[part]
        node.register_parameter(leaf, torch.nn.Parameter(
            value.clone(), requires_grad=key.startswith(trainable)))
    return root


def _write_lightning_run(root: Path, source) -> Path:
    pl = pytest.importorskip("pytorch_lightning")
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    class HuBERTPreTrainModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            # the encoder stays as the source has it; only the logit head trains
            self.model = _tree(_pretrain_state(source), "logit_generator.")
            self.save_hyperparameters({"encoder_num_heads": HEADS})

        def training_step(self, batch, batch_idx):
            head = self.model.logit_generator.final_proj
            loss = torch.nn.functional.linear(batch[0], head.weight, head.bias).pow(2).mean()
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            self.log("train_masked_accuracy", 0.1 * (batch_idx + 1), on_step=True,
                     on_epoch=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)

        def train_dataloader(self):
            data = torch.utils.data.TensorDataset(torch.randn(8, WIDTH))
            return torch.utils.data.DataLoader(data, batch_size=2)

    checkpoint_dir = root / "checkpoints_librispeech_hubert_pretrain_base"
    callbacks = [ModelCheckpoint(checkpoint_dir, monitor=m, mode="min", save_top_k=-1,
                                 every_n_train_steps=2)
                 for m in ("train_loss", "train_masked_accuracy")]
    trainer = pl.Trainer(default_root_dir=root, max_steps=4, callbacks=callbacks,
                         logger=CSVLogger(root), log_every_n_steps=1, accelerator="cpu",
                         enable_progress_bar=False, enable_model_summary=False)
    torch.manual_seed(0)
    trainer.fit(HuBERTPreTrainModule())
    return root / "lightning_logs" / "version_0" / "metrics.csv"


def _logged(metrics: Path, column: str, step: int) -> float:
    """The value of ``column`` in the last row at the greatest step at or before ``step``
    (read with the csv module, not speechrank's reader)."""
    with metrics.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r[column] and int(r["step"]) <= step]
    return float(max(rows, key=lambda r: int(r["step"]))[column])


def test_lightning_run_swept_into_the_store(tmp_path):
    from speechrank.cli import main
    from speechrank.store import ResultStore

    from .conftest import write_csv_manifest, write_tone

    source = _hf_source("hubert", False)
    run = tmp_path / "exp"
    metrics = _write_lightning_run(run, source)
    names = sorted(p.name for p in (run / "checkpoints_librispeech_hubert_pretrain_base")
                   .iterdir())
    # the second callback saves the same steps under -v1 names
    assert names == ["epoch=0-step=2-v1.ckpt", "epoch=0-step=2.ckpt", "epoch=0-step=4-v1.ckpt",
                     "epoch=0-step=4.ckpt"]
    rows = [{"path": str(write_tone(tmp_path / "audio" / f"u{i}.wav", 0.3, freq=200 + 90 * i,
                                    seed=i).relative_to(tmp_path)), "label": f"c{i % 2}"}
            for i in range(6)]
    manifest = write_csv_manifest(tmp_path / "data.csv", rows)
    (tmp_path / "sweep.toml").write_text(f"""
[rank]
data = "{manifest.name}"
metrics = ["rankme"]
poolings = ["sum"]

[options]
seed = 0
cache_dir = "{tmp_path / 'cache'}"
""")
    store_path = tmp_path / "store.sqlite"
    assert main(["sweep", str(run), "--config", str(tmp_path / "sweep.toml"), "--store",
                 str(store_path), "--quiet"]) == 0
    with ResultStore(store_path) as store:
        records = store.checkpoints()
    assert [(r.format, r.step, r.checkpoint) for r in records] == [
        ("torchaudio", 2, "epoch=0-step=2.ckpt"), ("torchaudio", 4, "epoch=0-step=4.ckpt")]
    for record in records:
        assert record.training["loss"] == pytest.approx(
            _logged(metrics, "train_loss_step", record.step), rel=1e-12)
        assert record.training["accuracy"] == pytest.approx(
            _logged(metrics, "train_masked_accuracy_step", record.step), rel=1e-12)
        assert record.digest and record.digest.startswith("sha256:")
    _assert_same(load_encoder(records[0].path, normalize=False), source)
