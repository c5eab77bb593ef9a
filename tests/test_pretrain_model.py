"""The BEST-RQ encoder, its SpeechEncoder adapter and its checkpoint files."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from speechrank.encoders.bestrq import (
    BestRqConfig,
    BestRqEncoder,
    build_bestrq_encoder,
    config_for_size,
    init_bestrq_model,
    load_bestrq_checkpoint,
    write_model_files,
)
from speechrank.encoders.formats.speechrank import is_bestrq_checkpoint
from speechrank.errors import SpeechrankError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # float32 sums depend on it

MICRO = config_for_size("micro")


@pytest.fixture(scope="module")
def micro() -> BestRqEncoder:
    return build_bestrq_encoder("micro", seed=3)


def _waves(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    waves = torch.zeros(len(lengths), max(lengths))
    for row, n in enumerate(lengths):
        t = torch.arange(n) / 16000
        waves[row, :n] = (0.3 * torch.sin(2 * torch.pi * (200 + 300 * row) * t)
                          + 0.05 * torch.randn(n, generator=gen))
    return waves, torch.tensor(lengths)


@pytest.mark.parametrize(("samples", "frames"), [
    (0, 0), (399, 0), (400, 0), (559, 0), (560, 1), (16000, 49), (40960, 127), (48000, 149),
])
def test_frame_formula_known_values(samples: int, frames: int) -> None:
    assert int(MICRO.num_frames(torch.tensor([samples]))[0]) == frames


@settings(max_examples=15, deadline=None)
@given(st.integers(min_value=1, max_value=24000))
def test_frame_formula_matches_the_model_output(samples: int) -> None:
    model = _MICRO_MODEL
    waves = torch.randn(1, samples)
    with torch.no_grad():
        hidden, frames = model(waves, torch.tensor([samples]))
    expected = int(MICRO.num_frames(torch.tensor([samples]))[0])
    assert int(frames[0]) == expected
    assert hidden[0].shape[1] == expected


_MICRO_MODEL = init_bestrq_model(MICRO, seed=0).eval()


def test_adapter_layers_and_lengths(micro: BestRqEncoder) -> None:
    waves, lengths = _waves([16000, 9000, 4000])
    out = micro.encode(waves, lengths)
    assert list(out.layers) == ["0", "1", "2"] == micro.layer_names
    assert micro.num_layers == MICRO.num_layers + 1
    assert out.lengths.tolist() == micro.frame_lengths(lengths).tolist() == [49, 27, 11]
    for tensor in out.layers.values():
        assert tensor.shape == (3, 49, MICRO.dim)
        assert torch.isfinite(tensor).all()
        assert not tensor.requires_grad
        assert (tensor[1, 27:] == 0).all() and (tensor[2, 11:] == 0).all()
    assert micro.frame_rate == 50.0 and micro.sample_rate == 16000
    subset = micro.encode(waves, lengths, layers=["1"])
    assert list(subset.layers) == ["1"]
    torch.testing.assert_close(subset.layers["1"], out.layers["1"])


@pytest.mark.parametrize("feature_norm", ["global", "utterance"])
def test_padded_batch_equals_one_at_a_time(feature_norm: str) -> None:
    config = dataclasses.replace(MICRO, feature_norm=feature_norm)
    micro = BestRqEncoder(init_bestrq_model(config, seed=3), name="micro")
    gen = torch.Generator().manual_seed(0)
    micro.model.frontend.set_statistics(torch.randn(config.n_mels, generator=gen) - 5,
                                        torch.rand(config.n_mels, generator=gen) + 1)
    lengths = [20000, 13001, 7777, 561, 300]  # the last has no frame at all
    waves, lens = _waves(lengths, seed=1)
    batch = micro.encode(waves, lens)
    assert batch.lengths.tolist()[-1] == 0
    for row, n in enumerate(lengths):
        alone = micro.encode(waves[row:row + 1, :n], lens[row:row + 1])
        frames = int(alone.lengths[0])
        assert frames == int(batch.lengths[row])
        for name in micro.layer_names:
            torch.testing.assert_close(batch.layers[name][row, :frames],
                                       alone.layers[name][0], atol=2e-5, rtol=1e-5)
            assert torch.isfinite(batch.layers[name][row]).all()


def test_encode_keeps_train_mode_and_rejects_unknown_layers(micro: BestRqEncoder) -> None:
    waves, lengths = _waves([8000])
    micro.model.train()
    micro.encode(waves, lengths)
    assert micro.model.training
    micro.model.eval()
    micro.encode(waves, lengths)
    assert not micro.model.training
    with pytest.raises(SpeechrankError, match="no layer '7'"):
        micro.encode(waves, lengths, layers=["7"])


def test_log_mel_peaks_at_the_tone_and_is_normalised() -> None:
    model = init_bestrq_model(dataclasses.replace(MICRO, feature_norm="utterance"), seed=0)
    sr = 16000
    t = np.arange(sr) / sr
    rng = np.random.default_rng(0)
    tone = 0.5 * np.sin(2 * np.pi * 1000.0 * t) + 1e-3 * rng.standard_normal(sr)
    with torch.no_grad():
        feats, frames = model.frontend(torch.tensor(tone, dtype=torch.float32)[None],
                                       torch.tensor([sr]))
    mel = feats[0].reshape(-1, MICRO.n_mels)  # unstack: [2T, n_mels]
    assert int(frames[0]) * 2 == mel.shape[0]
    # every bin is normalised over the utterance's frames
    torch.testing.assert_close(mel.mean(0), torch.zeros(MICRO.n_mels), atol=1e-3, rtol=0)
    # the filter whose HTK-mel centre is nearest 1 kHz gets the most energy (from the raw
    # power spectrum through the stored filterbank)
    spec = torch.stft(torch.tensor(tone, dtype=torch.float32), 400, 160,
                      window=torch.hann_window(400), center=False, return_complex=True)
    energy = (spec.abs().square().T @ model.frontend.mel_fbank).mean(0)
    mel_points = np.linspace(2595 * np.log10(1 + 20 / 700), 2595 * np.log10(1 + 8000 / 700),
                             MICRO.n_mels + 2)
    centres = 700 * (10 ** (mel_points[1:-1] / 2595) - 1)
    assert int(energy.argmax()) == int(np.abs(centres - 1000.0).argmin())


def test_global_normalisation_uses_the_stored_statistics() -> None:
    model = init_bestrq_model(MICRO, seed=0)
    assert MICRO.feature_norm == "global"
    waves, lengths = _waves([9000, 6000])
    mean, std = torch.linspace(-8, 2, MICRO.n_mels), torch.linspace(1, 3, MICRO.n_mels)
    model.frontend.set_statistics(mean, std)
    with torch.no_grad():
        feats, frames = model.frontend(waves, lengths)
        logmel, same_frames = model.frontend.log_mel(waves, lengths)
    assert torch.equal(frames, same_frames)
    expected = ((logmel - mean) / std).reshape(2, -1, MICRO.feature_dim)
    torch.testing.assert_close(feats[0], expected[0])
    t1 = int(frames[1])
    torch.testing.assert_close(feats[1, :t1], expected[1, :t1])
    assert (feats[1, t1:] == 0).all()
    assert set(model.state_dict()) >= {"frontend.feature_mean", "frontend.feature_std"}


def test_init_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = init_bestrq_model(MICRO, seed=5).state_dict()
    b = init_bestrq_model(MICRO, seed=5).state_dict()
    c = init_bestrq_model(MICRO, seed=6).state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["input_proj.weight"], c["input_proj.weight"])


def test_default_size_has_three_to_five_million_parameters() -> None:
    config = config_for_size("tiny")
    assert (config.dim, config.num_layers, config.num_heads) == (256, 4, 4)
    count = sum(p.numel() for p in init_bestrq_model(config, 0).parameters())
    assert 3_000_000 <= count <= 5_000_000


def test_bad_config_and_size_are_user_errors() -> None:
    with pytest.raises(SpeechrankError, match="unknown model size"):
        config_for_size("huge")
    with pytest.raises(SpeechrankError, match="multiple of num_heads"):
        BestRqConfig(dim=100, num_heads=3)
    with pytest.raises(SpeechrankError, match="feature_norm"):
        BestRqConfig(feature_norm="batch")


def test_checkpoint_round_trip(tmp_path, micro: BestRqEncoder) -> None:
    tensors = {"encoder." + k: v for k, v in micro.model.state_dict().items()}
    tensors["head.weight"] = torch.zeros(3, 3)  # other prefixes are ignored by the loader
    write_model_files(tmp_path, micro.config, tensors)
    (tmp_path / "trainer.json").write_text(json.dumps({"step": 42, "loss": 1.5}))
    assert is_bestrq_checkpoint(tmp_path)
    loaded = load_bestrq_checkpoint(tmp_path)
    assert loaded.step == 42 and loaded.describe()["loss"] == 1.5
    assert loaded.fingerprint() == micro.fingerprint()
    waves, lengths = _waves([12000, 7000])
    a, b = micro.encode(waves, lengths), loaded.encode(waves, lengths)
    for name in micro.layer_names:
        assert torch.equal(a.layers[name], b.layers[name])


def test_checkpoint_detection_and_errors(tmp_path, micro: BestRqEncoder) -> None:
    assert not is_bestrq_checkpoint(tmp_path / "missing")
    other = tmp_path / "hf"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "hubert"}))
    (other / "model.safetensors").write_bytes(b"")
    assert not is_bestrq_checkpoint(other)
    with pytest.raises(SpeechrankError, match="not a speechrank-bestrq config"):
        load_bestrq_checkpoint(other)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    tensors = {"encoder." + k: v for k, v in micro.model.state_dict().items()}
    write_model_files(wrong, config_for_size("tiny"), tensors)  # config does not match weights
    assert is_bestrq_checkpoint(wrong)
    with pytest.raises(SpeechrankError, match="weights do not match"):
        load_bestrq_checkpoint(wrong)
