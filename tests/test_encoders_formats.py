"""The registry of checkpoint formats: what each format claims, lists, reads and loads, and
that nothing outside the registry decides what a checkpoint is.

The run layouts are built as the frameworks write them (see :mod:`tests.checkpoint_layouts`
for the fairseq and transformers source files the names come from)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from speechrank.encoders import formats, load_encoder
from speechrank.encoders.bestrq import build_bestrq_encoder
from speechrank.encoders.bestrq_format import write_model_files
from speechrank.errors import SpeechrankError
from speechrank.pretrain.checkpoint import list_checkpoints

from .checkpoint_layouts import fairseq_checkpoint, write_fairseq_run, write_hf_trainer_run

SRC = Path(__file__).resolve().parents[1] / "src" / "speechrank"

#: What deciding "is this a checkpoint" looks like in source: the marker files of the
#: formats and the fairseq / Lightning suffixes.
_DETECTION = re.compile(r"""["'](config\.json|trainer_state\.json|trainer\.json)["']"""
                        r"""|["'][^"'\n]*\.(pt|ckpt)["']""")
#: Files outside the registry allowed to name those files, and why.
_ALLOWED = {
    # The writer (and reader) of speechrank's own layout; formats/speechrank.py is its
    # registry entry and imports the names from here.
    "encoders/bestrq_format.py",
}


def test_no_checkpoint_detection_outside_the_registry():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("encoders/formats/") or rel in _ALLOWED:
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if _DETECTION.search(line):
                offenders.append(f"{rel}:{lineno}: {line.strip()}")
    assert not offenders, "checkpoint detection outside encoders/formats/:\n" + "\n".join(
        offenders)


def test_the_guard_sees_what_it_looks_for():
    for line in ('if (path / "config.json").is_file():', "path.suffix == '.pt'",
                 'glob("*.ckpt")', "'trainer_state.json'"):
        assert _DETECTION.search(line), line
    assert not _DETECTION.search('"preprocessor_config.json"')


def _speechrank_checkpoint(directory: Path, step: int, *, trainer: bool = True,
                           loss: float | None = 2.0) -> None:
    encoder = build_bestrq_encoder("micro", seed=step)
    directory.mkdir(parents=True)
    write_model_files(directory, encoder.config,
                      {"encoder." + k: v for k, v in encoder.model.state_dict().items()})
    if trainer:
        record = {"step": step, "accuracy": 0.5, "learning_rate": 1e-3}
        if loss is not None:
            record["loss"] = loss
        (directory / "trainer.json").write_text(json.dumps(record))


def test_speechrank_run(tmp_path):
    _speechrank_checkpoint(tmp_path / "checkpoint-000000", 0, loss=None)
    _speechrank_checkpoint(tmp_path / "checkpoint-000300", 300, loss=1.25)
    _speechrank_checkpoint(tmp_path / "checkpoint-000600", 600, trainer=False)  # incomplete
    _speechrank_checkpoint(tmp_path / ".partial" / "checkpoint-000900", 900)
    run = formats.run_checkpoints(tmp_path)
    assert [(c.name, c.step, c.format.name) for c in run] == [
        ("checkpoint-000000", 0, "speechrank"), ("checkpoint-000300", 300, "speechrank")]
    assert [step for step, _ in list_checkpoints(tmp_path)] == [0, 300]
    fmt = run[1].format
    assert fmt.training(run[1].path) == {"loss": 1.25, "accuracy": 0.5, "learning_rate": 1e-3}
    assert "loss" not in fmt.training(run[0].path)  # no loss at step 0
    incomplete = tmp_path / "checkpoint-000600"
    assert formats.detect(incomplete) is fmt and not fmt.complete(incomplete)
    digest = fmt.digest(run[1].path)
    (run[1].path / "training_state.pt").write_bytes(b"optimiser")  # not the model
    assert fmt.digest(run[1].path) == digest != fmt.digest(run[0].path)
    assert load_encoder(str(run[1].path)).step == 300


def test_hf_trainer_run(tmp_path):
    sources = write_hf_trainer_run(tmp_path / "out", steps=(2, 4))
    (tmp_path / "out" / "runs").mkdir()  # TensorBoard logs beside the checkpoints
    run = formats.run_checkpoints(tmp_path / "out")
    assert [(c.name, c.step, c.format.name) for c in run] == [
        ("checkpoint-2", 2, "hf-trainer"), ("checkpoint-4", 4, "hf-trainer")]
    record = run[1].format.training(run[1].path)
    assert record == pytest.approx({"loss": 2.6, "learning_rate": 4e-3})
    assert run[0].format.training(run[0].path)["loss"] == pytest.approx(2.8)
    encoder = load_encoder(str(run[1].path), normalize=False)
    wave = torch.randn(1, 4000, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = sources[4](wave, output_hidden_states=True).hidden_states
        got = encoder.encode(wave, torch.tensor([4000]))
    for i, hidden in enumerate(expected):
        torch.testing.assert_close(got.layers[str(i)], hidden, atol=1e-5, rtol=1e-5)
    # the optimiser state beside the model is not the model's content
    digest = run[1].format.digest(run[1].path)
    torch.save({"state": {1: torch.ones(2)}}, run[1].path / "optimizer.pt")
    assert run[1].format.digest(run[1].path) == digest


def test_hf_model_directories_without_trainer_state(tmp_path):
    write_hf_trainer_run(tmp_path, steps=(2,))
    (tmp_path / "checkpoint-2" / "trainer_state.json").unlink()
    assert formats.describe(tmp_path / "checkpoint-2").format.name == "huggingface"
    assert formats.describe(tmp_path / "checkpoint-2").step == 2  # from the name
    (tmp_path / "checkpoint-2" / "model.safetensors").unlink()
    assert formats.run_checkpoints(tmp_path) == []  # no weights: incomplete


def test_fairseq_run_lists_each_checkpoint_once(tmp_path):
    sources = write_fairseq_run(tmp_path / "save")
    run = formats.run_checkpoints(tmp_path / "save")
    assert [(c.name, c.step, c.format.name) for c in run] == [
        ("checkpoint_1_100.pt", 100, "fairseq"), ("checkpoint_2_300.pt", 300, "fairseq")]
    fmt = run[0].format
    last = tmp_path / "save" / "checkpoint_last.pt"
    assert fmt.digest(last) == fmt.digest(run[1].path) != fmt.digest(run[0].path)
    record = fmt.training(run[1].path)
    assert record == pytest.approx({"loss": 4.25, "accuracy": 0.5, "learning_rate": 1e-4})
    encoder = load_encoder(str(run[0].path), normalize=False)
    wave = torch.randn(1, 4000, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = sources[100](wave, output_hidden_states=True).hidden_states
        got = encoder.encode(wave, torch.tensor([4000]))
    for i, hidden in enumerate(expected):
        torch.testing.assert_close(got.layers[str(i)], hidden, atol=1e-5, rtol=1e-5)


def test_fairseq_step_comes_from_the_file(tmp_path):
    ckpt, _ = fairseq_checkpoint(450, seed=3)
    torch.save(ckpt, tmp_path / "checkpoint3.pt")  # end of epoch 3: the name has no step
    ckpt["optimizer_history"][-1]["num_updates"] = 700
    torch.save(ckpt, tmp_path / "checkpoint_last.pt")  # a later save, no numbered copy
    del ckpt["optimizer_history"]
    torch.save(ckpt, tmp_path / "checkpoint_5_900.pt")  # no metadata: the name decides
    run = formats.run_checkpoints(tmp_path)
    assert [(c.name, c.step) for c in run] == [
        ("checkpoint3.pt", 450), ("checkpoint_last.pt", 700), ("checkpoint_5_900.pt", 900)]


def test_fairseq_copy_in_progress_is_not_listed(tmp_path):
    write_fairseq_run(tmp_path)
    data = (tmp_path / "checkpoint_2_300.pt").read_bytes()
    (tmp_path / "checkpoint_2_300.pt").unlink()
    (tmp_path / "checkpoint_last.pt").unlink()
    (tmp_path / "checkpoint_last.pt").write_bytes(data[: len(data) // 2])  # half copied
    assert [c.name for c in formats.run_checkpoints(tmp_path)] == ["checkpoint_1_100.pt"]


def test_a_run_directory_is_not_one_model(tmp_path):
    write_fairseq_run(tmp_path)
    with pytest.raises(SpeechrankError, match=r"run directory with 2 checkpoints .*name the "
                                              r"one to load"):
        load_encoder(str(tmp_path))
    only = tmp_path / "only"
    only.mkdir()
    shutil.copyfile(tmp_path / "checkpoint_1_100.pt", only / "model.pt")
    assert formats.describe(only).path == only / "model.pt"  # a directory of one .pt


def test_digest_reads_every_byte(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"a" * 4096)
    fmt = formats.by_name("fairseq")
    before = fmt.digest(path)
    with path.open("r+b") as handle:  # same size, one byte in the middle changed
        handle.seek(2048)
        handle.write(b"b")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert fmt.digest(path) != before


def test_random_specs():
    fmt = formats.detect("random:tiny")
    assert fmt is formats.by_name("random")
    assert fmt.digest(Path("random:tiny")) == fmt.digest(Path("random:tiny@0"))
    assert fmt.digest(Path("random:tiny@1")) != fmt.digest(Path("random:tiny@0"))
    assert formats.describe("random:tiny@1").name == "random:tiny@1"


def test_unknown_paths_are_not_claimed(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    assert formats.detect(tmp_path / "notes.txt") is None
    assert formats.detect(tmp_path / "missing") is None
    with pytest.raises(SpeechrankError, match="not a checkpoint of any known format"):
        formats.describe(tmp_path / "notes.txt")
    with pytest.raises(SpeechrankError, match="unknown checkpoint format"):
        formats.by_name("nope")


def test_every_format_module_is_registered_once():
    package = SRC / "encoders" / "formats"
    modules = {p.stem for p in package.glob("*.py")} - {"__init__", "base"}
    assert sorted(formats.MODULES) == sorted(modules)
    names = [fmt.name for fmt in formats.FORMATS]
    assert len(set(names)) == len(names) and all(names)
    assert all(isinstance(fmt, formats.CheckpointFormat) for fmt in formats.FORMATS)
