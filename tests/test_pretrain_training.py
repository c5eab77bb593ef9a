"""The pretraining loop: checkpoints, logs, resume, determinism, atomic writes, the monitor hook."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from speechrank.audio import load_dataset
from speechrank.encoders.bestrq import (
    BestRqEncoder,
    config_for_size,
    init_bestrq_model,
    load_bestrq_checkpoint,
)
from speechrank.encoders.formats.speechrank import is_bestrq_checkpoint
from speechrank.errors import SpeechrankError
from speechrank.pretrain import TrainConfig, TrainRun, pretrain
from speechrank.pretrain.data import (
    AudioBank,
    CropSampler,
    log_mel_statistics,
    select_pretraining,
)
from speechrank.pretrain.objective import KMeansQuantizer, add_noise
from speechrank.pretrain.recipe import WarmupLinear
from speechrank.pretrain.targets import fit_kmeans_centroids

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # float32 sums depend on it

FAST = {"size": "micro", "batch_size": 4, "crop_seconds": 0.64}


def _sweep(seconds: float, sample_rate: int, seed: int) -> np.ndarray:
    """A rising chirp with noise and a little amplitude modulation: speech-free but varied."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0, f1 = rng.uniform(100, 400), rng.uniform(800, min(3500, sample_rate / 2 - 200))
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 6) * t)
    return (0.3 * envelope * np.sin(phase) + 0.03 * rng.standard_normal(t.size)).astype("f4")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for i in range(8):
        rate = 8000 if i % 3 == 0 else 16000  # some need resampling
        sf.write(root / f"utt{i}.wav", _sweep(0.3 + 0.15 * i, rate, i), rate)
    return root


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_smoke_checkpoints_logs_and_loading(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = pretrain(str(corpus), out, TrainRun(steps=4, save_every=2, log_every=1),
                       overrides=FAST, progress=False)
    assert summary.final_step == 4 and summary.stopped_by == "steps"
    assert [Path(p).name for p in summary.checkpoints] == [
        "checkpoint-000000", "checkpoint-000002", "checkpoint-000004"]
    assert math.isfinite(summary.final_loss) and 0 <= summary.final_accuracy <= 1
    assert summary.steps_per_second > 0 and summary.audio_seconds_per_second > 0
    assert summary.data["utterances"] == 8 and summary.skipped == []
    for step in (0, 2, 4):
        ckpt = out / f"checkpoint-{step:06d}"
        assert is_bestrq_checkpoint(ckpt)
        trainer = json.loads((ckpt / "trainer.json").read_text())
        assert trainer["step"] == step and trainer["seed"] == 0
        assert trainer["data_fingerprint"] == summary.data_fingerprint
        assert (trainer["loss"] is None) == (step == 0)
        # only the newest checkpoint keeps the optimiser state
        assert (ckpt / "training_state.pt").exists() == (step == 4)
        assert trainer["resumable"] == (step == 4)
    assert not (out / ".partial").exists() or not any((out / ".partial").iterdir())
    records = _log(out)
    train = [r for r in records if r["event"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and r["steps_per_second"] > 0 for r in train)
    assert records[0]["event"] == "start" and records[-1]["event"] == "end"

    # global normalisation statistics were measured on the data and saved from step 0 on
    first = _weights(out / "checkpoint-000000")
    assert (first["encoder.frontend.feature_mean"] != 0).all()
    assert torch.equal(first["encoder.frontend.feature_std"],
                       _weights(out / "checkpoint-000004")["encoder.frontend.feature_std"])

    encoder = load_bestrq_checkpoint(out / "checkpoint-000004")
    assert encoder.step == 4 and encoder.layer_names == ["0", "1", "2"]
    wave, _ = sf.read(corpus / "utt5.wav", dtype="float32")
    lengths = torch.tensor([wave.size, 5000])
    waves = torch.zeros(2, wave.size)
    waves[0], waves[1, :5000] = torch.from_numpy(wave), torch.from_numpy(wave[:5000])
    output = encoder.encode(waves, lengths)
    assert len(output.layers) == encoder.config.num_layers + 1
    assert output.lengths.tolist() == encoder.frame_lengths(lengths).tolist()
    assert output.layers["2"].shape[1] == int(output.lengths.max())


def test_resume_equals_uninterrupted_and_runs_are_deterministic(corpus: Path,
                                                                 tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    pretrain(str(corpus), straight, TrainRun(steps=6, save_every=3),
             overrides={**FAST, "seed": 7}, progress=False)
    split = tmp_path / "split"
    first = pretrain(str(corpus), split, TrainRun(steps=3, save_every=3),
                     overrides={**FAST, "seed": 7}, progress=False)
    assert first.final_step == 3
    resumed = pretrain(str(corpus), split, TrainRun(steps=6, save_every=3, resume=True),
                       overrides=FAST, progress=False)
    assert resumed.start_step == 3 and resumed.final_step == 6
    assert resumed.resumed_from == str(split / "checkpoint-000003")
    _assert_same_weights(straight / "checkpoint-000006", split / "checkpoint-000006")
    state_a = torch.load(straight / "checkpoint-000006" / "training_state.pt", weights_only=True)
    state_b = torch.load(split / "checkpoint-000006" / "training_state.pt", weights_only=True)
    for key, value in state_a["optimizer"]["state"].items():
        assert torch.equal(value["exp_avg_sq"], state_b["optimizer"]["state"][key]["exp_avg_sq"])
    trainer_a = json.loads((straight / "checkpoint-000006" / "trainer.json").read_text())
    trainer_b = json.loads((split / "checkpoint-000006" / "trainer.json").read_text())
    assert trainer_a["loss"] == trainer_b["loss"]
    # the resumed log keeps one record per step
    steps = [r["step"] for r in _log(split) if r["event"] == "train"]
    assert steps == sorted(set(steps))

    again = tmp_path / "again"
    pretrain(str(corpus), again, TrainRun(steps=6, save_every=6),
             overrides={**FAST, "seed": 7}, progress=False)
    _assert_same_weights(straight / "checkpoint-000006", again / "checkpoint-000006")
    other = tmp_path / "other"
    pretrain(str(corpus), other, TrainRun(steps=6, save_every=6),
             overrides={**FAST, "seed": 8}, progress=False)
    assert not torch.equal(_weights(other / "checkpoint-000006")["encoder.input_proj.weight"],
                           _weights(again / "checkpoint-000006")["encoder.input_proj.weight"])


def test_explicit_save_steps_and_an_idle_resume(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = pretrain(str(corpus), out, TrainRun(steps=5, save_steps=(1, 3)), overrides=FAST,
                       progress=False)
    assert [Path(p).name[-2:] for p in summary.checkpoints] == ["00", "01", "03", "05"]
    both = pretrain(str(corpus), tmp_path / "both",
                    TrainRun(steps=5, save_every=2, save_steps=[3]), overrides=FAST, progress=False)
    assert [Path(p).name[-2:] for p in both.checkpoints] == ["00", "02", "03", "04", "05"]
    # resuming a run that already reached its step budget trains nothing and saves nothing
    idle = pretrain(str(corpus), out, TrainRun(steps=5, resume=True), overrides=FAST,
                    progress=False)
    assert (idle.start_step, idle.final_step, idle.checkpoints) == (5, 5, [])
    assert (idle.final_loss, idle.final_accuracy) == (summary.final_loss,
                                                      summary.final_accuracy)


def test_resume_ignores_partial_writes(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    pretrain(str(corpus), out, TrainRun(steps=2, save_every=2), overrides=FAST, progress=False)
    # what a kill during a checkpoint write leaves: a temporary directory, and (worse) a
    # checkpoint-named directory without its files
    leftover = out / ".partial" / "checkpoint-000004-999"
    leftover.mkdir(parents=True)
    (leftover / "training_state.pt").write_bytes(b"half")
    broken = out / "checkpoint-000009"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    summary = pretrain(str(corpus), out, TrainRun(steps=4, save_every=2, resume=True),
                       overrides=FAST, progress=False)
    assert summary.resumed_from == str(out / "checkpoint-000002")
    assert summary.final_step == 4
    assert not leftover.exists()
    straight = tmp_path / "straight"
    pretrain(str(corpus), straight, TrainRun(steps=4, save_every=4), overrides=FAST, progress=False)
    _assert_same_weights(straight / "checkpoint-000004", out / "checkpoint-000004")


def test_monitor_hook_is_called_logged_and_harmless(corpus: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, list[str]]] = []

    def monitor(encoder: BestRqEncoder, step: int) -> dict:
        calls.append((step, encoder.layer_names))
        # the monitor runs under the caller's determinism setting, not the training's
        assert not torch.are_deterministic_algorithms_enabled()
        assert encoder.step == step and encoder.name.endswith(f"checkpoint-{step:06d}")
        # a monitor that draws random numbers must not change the training trajectory
        torch.rand(5), np.random.rand(3), random.random()
        out = encoder.encode(torch.randn(2, 8000), torch.tensor([8000, 6000]))
        return {"frames": int(out.lengths.sum()), "value": torch.tensor(float(step))}

    with_monitor = tmp_path / "with"
    assert not torch.are_deterministic_algorithms_enabled()
    pretrain(str(corpus), with_monitor, TrainRun(steps=4, save_every=2), monitor=monitor,
             overrides=FAST, progress=False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert [c[0] for c in calls] == [0, 2, 4]
    assert calls[0][1] == ["0", "1", "2"]
    records = [r for r in _log(with_monitor) if r["event"] == "monitor"]
    assert [r["values"] for r in records] == [{"frames": 24 + 18, "value": float(s)}
                                              for s in (0, 2, 4)]
    trainer = json.loads((with_monitor / "checkpoint-000002" / "trainer.json").read_text())
    assert trainer["monitor"]["value"] == 2.0
    without = tmp_path / "without"
    pretrain(str(corpus), without, TrainRun(steps=4, save_every=2), overrides=FAST, progress=False)
    _assert_same_weights(with_monitor / "checkpoint-000004", without / "checkpoint-000004")

    def broken(encoder: BestRqEncoder, step: int) -> dict:
        raise RuntimeError("boom")

    with pytest.warns(UserWarning, match=r"monitor failed at step [02]: RuntimeError: boom"):
        summary = pretrain(str(corpus), tmp_path / "broken", TrainRun(steps=2, save_every=2),
                           monitor=broken, overrides=FAST, progress=False)
    assert summary.final_step == 2
    assert any(r["event"] == "monitor_error" for r in _log(tmp_path / "broken"))


def test_wall_time_budget_saves_the_last_step(corpus: Path, tmp_path: Path) -> None:
    # progress=True: the rich bars draw on stderr without failing
    summary = pretrain(str(corpus), tmp_path / "run",
                       TrainRun(minutes=1e-9, save_every=100, num_threads=2), overrides=FAST,
                       progress=True)
    assert torch.get_num_threads() == 1  # the fixture's setting is back
    assert _log(tmp_path / "run")[0]["torch_threads"] == 2
    assert summary.stopped_by == "minutes"
    assert Path(summary.checkpoints[-1]).name == f"checkpoint-{summary.final_step:06d}"


def test_user_errors(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(SpeechrankError, match="give a budget"):
        pretrain(str(corpus), tmp_path / "a", TrainRun(), overrides=FAST, progress=False)
    out = tmp_path / "run"
    pretrain(str(corpus), out, TrainRun(steps=1, save_every=1), overrides=FAST, progress=False)
    with pytest.raises(SpeechrankError, match="already holds checkpoints"):
        pretrain(str(corpus), out, TrainRun(steps=2), overrides=FAST, progress=False)
    with pytest.raises(SpeechrankError, match="seed=3"):
        pretrain(str(corpus), out, TrainRun(steps=2, resume=True), overrides={**FAST, "seed": 3},
                 progress=False)
    other = tmp_path / "other_corpus"
    shutil.copytree(corpus, other)
    sf.write(other / "utt0.wav", _sweep(0.5, 16000, 99), 16000)
    with pytest.raises(SpeechrankError, match="fingerprint"):
        pretrain(str(other), out, TrainRun(steps=2, resume=True), overrides=FAST, progress=False)
    with pytest.raises(SpeechrankError, match="batch size"):
        TrainConfig(batch_size=0)
    with pytest.raises(SpeechrankError, match="unknown model size"):
        pretrain(str(corpus), tmp_path / "b", TrainRun(steps=1), progress=False,
                 overrides={"size": "huge"})


def test_unusable_files_are_skipped_with_reasons(corpus: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(corpus, data)
    sf.write(data / "tiny.wav", np.zeros(100, dtype="f4"), 16000)
    (data / "broken.wav").write_bytes(b"RIFF....not audio")
    summary = pretrain(str(data), tmp_path / "run", TrainRun(steps=1), overrides=FAST,
                       progress=False)
    reasons = sorted(s["reason"] for s in summary.skipped)
    assert reasons == ["too_short", "unreadable"]
    assert summary.data["utterances"] == 8


def test_log_mel_statistics_match_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    lengths = [16000, 9000, 30000]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    samples = (0.1 * rng.standard_normal(offsets[-1])).astype(np.float32)
    bank = AudioBank(["a", "b", "c"], offsets, samples, 16000)
    frontend = init_bestrq_model(config_for_size("micro"), 0).frontend
    mean, std = log_mel_statistics(bank, frontend)
    frames = []
    for i in range(3):
        wave = torch.from_numpy(samples[offsets[i]:offsets[i + 1]])
        logmel, count = frontend.log_mel(wave[None], torch.tensor([wave.numel()]))
        frames.append(logmel[0, :int(count[0]) * 2].double())
    direct = torch.cat(frames)
    torch.testing.assert_close(mean, direct.mean(0).float())
    torch.testing.assert_close(std, torch.sqrt(direct.var(0, unbiased=False) + 1e-5).float())


def test_crop_sampler_is_a_function_of_the_step() -> None:
    lengths = [3000, 500, 12000, 800, 6400]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    samples = np.arange(offsets[-1], dtype=np.float32)
    bank = AudioBank([f"u{i}" for i in range(5)], offsets, samples, 16000)
    sampler = CropSampler(bank, batch_size=3, crop_samples=1000, seed=1)
    b7 = sampler.batch(7)
    sampler.batch(0)
    for step in (7, 3, 12):
        waves, lens = sampler.batch(step)
        fresh = CropSampler(bank, batch_size=3, crop_samples=1000, seed=1).batch(step)
        assert torch.equal(waves, fresh[0]) and torch.equal(lens, fresh[1])
    assert torch.equal(sampler.batch(7)[0], b7[0])
    seen = []
    for step in range(5):  # 15 draws = 3 epochs: each utterance once per epoch
        waves, lens = sampler.batch(step)
        for row, n in enumerate(lens.tolist()):
            crop = waves[row, :n].numpy()
            utt = int(np.searchsorted(offsets, crop[0], side="right") - 1)
            assert n == min(lengths[utt], 1000)
            assert np.array_equal(crop, samples[int(crop[0]):int(crop[0]) + n])  # contiguous
            assert crop[-1] < offsets[utt + 1]  # within one utterance
            assert (waves[row, n:] == 0).all()
            seen.append(utt)
    assert [sorted(seen[i:i + 5]) for i in range(0, 15, 5)] == [list(range(5))] * 3
    assert sampler.position(5) == {"epoch": 3, "index": 0}


def test_pretrain_split_is_preferred(fsdd_root: Path) -> None:
    dataset = load_dataset(f"fsdd:{fsdd_root}")
    chosen, rule = select_pretraining(dataset)
    assert rule == "every split but 'test'"
    assert chosen and all(u.split != "test" for u in chosen)
    marked = [type(u)(u.uid, u.path, u.labels, "pretrain" if i < 3 else u.split)
              for i, u in enumerate(dataset.utterances)]
    dataset.utterances = marked
    chosen, rule = select_pretraining(dataset)
    assert rule == "split == 'pretrain'" and len(chosen) == 3


# --- HuBERT-style k-means targets, input-noise augmentation, the linear schedule -------

HUBERT = {"targets": "hubert", "num_clusters": 8, "kmeans_frames": 400,
          "input_snr_db": (0.0, 20.0), "unmasked_weight": 0.5}


def test_kmeans_quantizer_is_the_nearest_centroid() -> None:
    gen = torch.Generator().manual_seed(0)
    quantizer = KMeansQuantizer(feature_dim=6, num_clusters=5)
    quantizer.set_centroids(torch.randn(5, 6, generator=gen) * 3)
    features = torch.randn(4, 7, 6, generator=gen) * 3
    distances = ((features[..., None, :] - quantizer.centroids) ** 2).sum(-1)
    assert torch.equal(quantizer(features), distances.argmin(-1))


def test_fit_kmeans_recovers_planted_clusters_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 3)) * 10
    frames = (centres[rng.integers(0, 4, 2000)] + rng.normal(size=(2000, 3)) * 0.1)
    fitted, summary = fit_kmeans_centroids(frames.astype(np.float32), 4, seed=3)
    nearest = np.sort(np.linalg.norm(fitted[:, None] - centres[None], axis=-1).min(0))
    assert nearest.max() < 0.1
    assert summary["frames"] == 2000 and summary["cluster_perplexity"] > 3.5
    again, _ = fit_kmeans_centroids(frames.astype(np.float32), 4, seed=3)
    assert np.array_equal(fitted, again)
    with pytest.raises(SpeechrankError, match="at least 4 frames"):
        fit_kmeans_centroids(frames[:3].astype(np.float32), 4, seed=0)


def test_add_noise_reaches_the_snr_and_keeps_padding_and_silence() -> None:
    gen = torch.Generator().manual_seed(1)
    t = torch.arange(160_000) / 16_000
    waves = torch.zeros(3, 160_000)
    waves[0] = 0.5 * torch.sin(2 * math.pi * 220 * t)
    waves[1, :80_000] = 0.1 * torch.sin(2 * math.pi * 440 * t[:80_000])
    lengths = torch.tensor([160_000, 80_000, 120_000])  # row 2 is silent
    snr = torch.tensor([10.0, 0.0, 5.0])
    noisy = add_noise(waves, lengths, snr, gen)
    for row, n in enumerate(lengths.tolist()[:2]):
        signal = waves[row, :n].square().mean()
        noise = (noisy[row, :n] - waves[row, :n]).square().mean()
        assert 10 * math.log10(signal / noise) == pytest.approx(float(snr[row]), abs=0.1)
    assert torch.equal(noisy[1, 80_000:], torch.zeros(80_000))
    assert torch.equal(noisy[2], torch.zeros(160_000))


def test_linear_schedule() -> None:
    schedule = WarmupLinear(warmup_steps=4, total_steps=10)
    values = [schedule(k) for k in range(12)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert values[4:11] == pytest.approx([1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0])
    assert values[11] == 0.0


@pytest.mark.parametrize("bad, message", [
    ({"targets": "wav2vec"}, "targets must be"),
    ({"num_clusters": 1}, "num_clusters"),
    ({"input_snr_db": (20.0, 0.0)}, "input SNR range"),
    ({"unmasked_weight": -1.0}, "unmasked weight"),
    ({"schedule": "linear", "decay_steps": 10, "warmup_steps": 20}, "decay_steps"),
])
def test_recipe_checks(bad: dict, message: str) -> None:
    with pytest.raises(SpeechrankError, match=message):
        TrainConfig(**bad)


def test_recipe_round_trips_through_json() -> None:
    recipe = TrainConfig(**HUBERT, schedule="linear", decay_steps=50, warmup_steps=5)
    assert TrainConfig.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    legacy = TrainConfig.from_dict({"size": "micro"})  # a speechrank 0.1 checkpoint
    assert (legacy.targets, legacy.schedule, legacy.mask_span) == ("bestrq", "inverse_sqrt", 20)


def test_a_linear_schedule_decays_over_the_step_budget() -> None:
    assert TrainConfig().for_budget(500).decay_steps == 500
    assert TrainConfig().for_budget(None).schedule == "inverse_sqrt"  # a wall-time budget
    assert TrainConfig(decay_steps=80).for_budget(500).decay_steps == 80
    with pytest.raises(SpeechrankError, match="decay_steps"):
        TrainConfig().learning_rate_factor()


def test_hubert_run_saves_its_targets_and_resumes_exactly(corpus: Path,
                                                          tmp_path: Path) -> None:
    config = TrainConfig(size="micro", batch_size=4, crop_seconds=0.64, seed=5,
                         schedule="linear", decay_steps=6, warmup_steps=2, **HUBERT)
    kw = {"progress": False, "config": config}
    straight = tmp_path / "straight"
    summary = pretrain(str(corpus), straight, TrainRun(steps=6, save_every=3), **kw)
    assert math.isfinite(summary.final_loss)
    first = load_file(str(straight / "checkpoint-000000" / "model.safetensors"))
    last = load_file(str(straight / "checkpoint-000006" / "model.safetensors"))
    assert first["quantizer.centroids"].shape == (8, 160)
    assert first["quantizer.centroids"].abs().sum() > 0
    assert torch.equal(first["quantizer.centroids"], last["quantizer.centroids"])
    assert last["head.weight"].shape == (8, 64)
    start = json.loads((straight / "train_log.jsonl").read_text().splitlines()[0])
    assert start["targets"]["kind"] == "hubert" and start["targets"]["frames"] > 8

    split = tmp_path / "split"
    pretrain(str(corpus), split, TrainRun(steps=3, save_every=3), **kw)
    pretrain(str(corpus), split, TrainRun(steps=6, save_every=3, resume=True), progress=False)
    _assert_same_weights(straight / "checkpoint-000006", split / "checkpoint-000006")
