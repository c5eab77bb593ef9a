"""Hugging Face adapter: layers, frame lengths, padding rules, eval mode, RNG, fingerprints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from speechrank.encoders import RANDOM_ARCHITECTURES, load_encoder
from speechrank.encoders.architectures import parse_random_spec
from speechrank.encoders.huggingface import HuggingFaceEncoder
from speechrank.errors import SpeechrankError

# The upstream test config (transformers' Wav2Vec2ModelTester): 64 samples per frame.
TINY_KW = dict(hidden_size=16, conv_dim=(32, 32, 32), conv_stride=(4, 4, 4),
               conv_kernel=(8, 8, 8), num_hidden_layers=4, num_attention_heads=2,
               intermediate_size=20, num_conv_pos_embeddings=16,
               num_conv_pos_embedding_groups=2)
LAYER_NORM = dict(feat_extract_norm="layer", do_stable_layer_norm=True)


def _tiny_model(model_type: str, **overrides: object) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModel

    kw = dict(TINY_KW)
    if model_type == "data2vec-audio":
        kw.update(num_conv_pos_embeddings=2, conv_pos_kernel_size=5)
    kw.update(overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return AutoModel.from_config(AutoConfig.for_model(model_type, **kw))


def _tiny_encoder(model_type: str, **overrides: object) -> HuggingFaceEncoder:
    return HuggingFaceEncoder(_tiny_model(model_type, **overrides), name=f"tiny-{model_type}")


def _batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    waves = torch.zeros(len(lengths), max(lengths))
    for row, n in enumerate(lengths):
        waves[row, :n] = torch.randn(n, generator=gen) * 0.1
    return waves, torch.tensor(lengths)


def _one_at_a_time_matches(enc: HuggingFaceEncoder, lengths: list[int], atol: float) -> float:
    waves, lens = _batch(lengths)
    out = enc.encode(waves, lens)
    worst = 0.0
    for row, n in enumerate(lengths):
        single = enc.encode(waves[row: row + 1, :n], lens[row: row + 1])
        valid = int(out.lengths[row])
        assert valid == int(single.lengths[0])
        for name, frames in single.layers.items():
            assert frames.shape[1] == valid
            diff = (out.layers[name][row, :valid] - frames[0]).abs().max().item()
            worst = max(worst, diff)
    assert worst <= atol, worst
    return worst


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    """These models are tiny: one thread is as fast and immune to a busy machine's
    oversubscription. The caller's setting is put back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny() -> HuggingFaceEncoder:
    enc = load_encoder("random:tiny")
    assert isinstance(enc, HuggingFaceEncoder)
    return enc


# -- layers and shapes ----------------------------------------------------------------------


def test_random_tiny_layers_and_shapes(tiny: HuggingFaceEncoder) -> None:
    assert tiny.layer_names == ["cnn", "0", "1", "2", "3", "4"]
    assert tiny.num_layers == 5 and tiny.dim == 128
    assert tiny.sample_rate == 16_000 and tiny.frame_rate == 50.0
    assert tiny.min_samples == 400
    assert not tiny.equal_length_batches
    waves, lens = _batch([16_000, 9_000])
    out = tiny.encode(waves, lens)
    assert list(out.layers) == tiny.layer_names
    assert out.lengths.tolist() == [49, 27]  # 1 s -> 49 frames, as for every base model
    for name, frames in out.layers.items():
        assert frames.dtype == torch.float32
        assert tuple(frames.shape) == (2, 49, tiny.layer_dims[name])
        assert torch.isfinite(frames).all()


@pytest.mark.parametrize("name", [n for n in RANDOM_ARCHITECTURES if n != "tiny"])
def test_random_base_architectures_geometry(name: str) -> None:
    """Every base-sized random: architecture, built on the meta device (no weights, no time)."""
    from transformers import AutoModel

    arch, seed = parse_random_spec(f"random:{name}@3")
    assert seed == 3 and arch.name == name
    with torch.device("meta"):
        model = AutoModel.from_config(arch.make_config())
    enc = HuggingFaceEncoder(model, name=name)
    assert enc.family == arch.model_type
    assert enc.num_layers == 13 and enc.dim == 768
    assert enc.layer_names == ["cnn", *map(str, range(13))]
    assert enc.layer_dims["cnn"] == 512 and enc.layer_dims["12"] == 768
    assert enc.frame_rate == 50.0 and enc.min_samples == 400
    assert enc.frame_lengths(torch.tensor([16_000, 4_000])).tolist() == [49, 12]
    # group norm (wav2vec2/HuBERT/WavLM base) and data2vec-audio: equal-length batches only
    assert enc.equal_length_batches
    assert enc.use_attention_mask == (name == "data2vec-audio-base")


@pytest.mark.slow
def test_random_hubert_base_forward() -> None:
    enc = load_encoder("random:hubert-base")
    assert enc.num_layers == 13 and enc.dim == 768 and enc.equal_length_batches
    out = enc.encode(torch.randn(1, 4000) * 0.1, torch.tensor([4000]))
    assert out.lengths.tolist() == [12]
    assert len(out.layers) == 14
    assert out.layers["cnn"].shape == (1, 12, 512)
    assert all(out.layers[str(i)].shape == (1, 12, 768) for i in range(13))


@pytest.mark.parametrize("model_type", ["wav2vec2", "hubert", "wavlm", "data2vec-audio"])
def test_tiny_family_layers(model_type: str) -> None:
    enc = _tiny_encoder(model_type)
    assert enc.layer_names == ["cnn", "0", "1", "2", "3", "4"]
    assert enc.layer_dims == {"cnn": 32, "0": 16, "1": 16, "2": 16, "3": 16, "4": 16}
    waves, lens = _batch([3000, 3000])
    out = enc.encode(waves, lens)
    expected = int(enc.model._get_feat_extract_output_lengths(torch.tensor(3000)))
    assert out.lengths.tolist() == [expected, expected]
    for name, frames in out.layers.items():
        assert tuple(frames.shape) == (2, expected, enc.layer_dims[name])


def test_layers_match_hidden_states_and_cnn(tiny: HuggingFaceEncoder) -> None:
    """Layer "i" is hidden_states[i] and "cnn" the feature encoder's output, whatever subset
    is requested."""
    waves, lens = _batch([8000])
    from speechrank.encoders.normalization import normalize_waveforms

    with torch.inference_mode():
        norm = normalize_waveforms(waves, lens)
        ref = tiny.model(norm, attention_mask=torch.ones_like(norm, dtype=torch.long),
                         output_hidden_states=True)
        cnn = tiny.model.feature_extractor(norm).transpose(1, 2)
    full = tiny.encode(waves, lens)
    for i, hidden in enumerate(ref.hidden_states):
        torch.testing.assert_close(full.layers[str(i)], hidden)
    torch.testing.assert_close(full.layers["cnn"], cnn)
    subset = tiny.encode(waves, lens, ["3", "cnn"])
    assert list(subset.layers) == ["cnn", "3"]
    torch.testing.assert_close(subset.layers["3"], full.layers["3"])
    only_cnn = tiny.encode(waves, lens, ["cnn"])
    torch.testing.assert_close(only_cnn.layers["cnn"], cnn)


def test_unknown_layer_is_a_user_error(tiny: HuggingFaceEncoder) -> None:
    with pytest.raises(SpeechrankError, match="unknown layer"):
        tiny.encode(*_batch([4000]), ["5"])


def test_too_short_waveform_is_a_user_error(tiny: HuggingFaceEncoder) -> None:
    with pytest.raises(SpeechrankError, match="at least 400"):
        tiny.encode(*_batch([4000, 399]))


# -- frame lengths --------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["wav2vec2", "wavlm"])
def test_frame_lengths_ignore_adapters(model_type: str) -> None:
    enc = _tiny_encoder(model_type, add_adapter=True, adapter_stride=2, num_adapter_layers=1,
                        output_hidden_size=16)
    samples = torch.tensor([500, 3000, 7777])
    conv_only = enc.model._get_feat_extract_output_lengths(samples, add_adapter=False)
    assert enc.frame_lengths(samples).tolist() == conv_only.tolist()
    out = enc.encode(*_batch([3000]), ["4"])
    assert out.layers["4"].shape[1] == int(conv_only[1])


def test_frame_lengths_formula_and_output(tiny: HuggingFaceEncoder) -> None:
    samples = torch.arange(0, 40_000, 337)
    frames = tiny.frame_lengths(samples)
    formula = samples.clone()
    for k, s in zip((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2), strict=True):
        formula = torch.div(formula - k, s, rounding_mode="floor") + 1
    assert frames.tolist() == formula.clamp_min(0).tolist()
    assert frames.dtype == torch.long and int(frames.min()) == 0
    for n in (400, 719, 720, 12_345):
        out = tiny.encode(*_batch([n]), ["0"])
        assert out.layers["0"].shape[1] == int(tiny.frame_lengths(torch.tensor([n]))[0])


# -- padding --------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["wav2vec2", "hubert", "wavlm"])
def test_attention_mask_family_padded_batch_equals_single(model_type: str) -> None:
    enc = _tiny_encoder(model_type, **LAYER_NORM)
    assert enc.use_attention_mask and not enc.equal_length_batches
    _one_at_a_time_matches(enc, [4000, 2500, 1333, 4000, 700], atol=1e-4)


def test_random_tiny_padded_batch_equals_single(tiny: HuggingFaceEncoder) -> None:
    _one_at_a_time_matches(tiny, [16_000, 11_111, 4_000, 640], atol=1e-4)


def test_random_tiny_padded_batch_equals_single_on_speech(tiny: HuggingFaceEncoder,
                                                          fsdd_root: Path) -> None:
    FSDD = fsdd_root / "recordings"
    import soundfile as sf
    import soxr

    waves = []
    for name in ("0_george_0.wav", "3_jackson_1.wav", "7_theo_2.wav", "9_yweweler_3.wav"):
        data, rate = sf.read(FSDD / name, dtype="float32", always_2d=True)
        waves.append(soxr.resample(data.mean(axis=1), rate, 16_000).astype(np.float32))
    lengths = [len(w) for w in waves]
    batch = torch.zeros(len(waves), max(lengths))
    for row, w in enumerate(waves):
        batch[row, : len(w)] = torch.from_numpy(w)
    out = tiny.encode(batch, torch.tensor(lengths))
    for row, w in enumerate(waves):
        single = tiny.encode(torch.from_numpy(w)[None], torch.tensor([len(w)]))
        n = int(single.lengths[0])
        assert int(out.lengths[row]) == n
        for name in tiny.layer_names:
            torch.testing.assert_close(out.layers[name][row, :n], single.layers[name][0],
                                       atol=1e-4, rtol=0)


@pytest.mark.parametrize("model_type", ["wav2vec2", "hubert", "wavlm"])
def test_group_norm_family_takes_equal_length_batches(model_type: str) -> None:
    enc = _tiny_encoder(model_type)
    assert enc.config.feat_extract_norm == "group"
    assert enc.equal_length_batches and not enc.use_attention_mask
    # equal-length batch == one at a time
    _one_at_a_time_matches(enc, [3000, 3000, 3000], atol=1e-4)
    # a mixed batch is split by length inside encode, so it is still exact
    _one_at_a_time_matches(enc, [3000, 1800, 3000, 999], atol=1e-4)


def test_group_norm_padding_really_contaminates() -> None:
    """Why the rule exists: a padded group-norm forward differs from the unpadded one."""
    model = _tiny_model("hubert").eval()
    waves, _ = _batch([3000, 1800])
    with torch.inference_mode():
        padded = model(waves, output_hidden_states=True).hidden_states[2][1]
        alone = model(waves[1:, :1800], output_hidden_states=True).hidden_states[2][0]
    n = alone.shape[0]
    assert (padded[:n] - alone).abs().max() > 1e-2


def test_data2vec_audio_gets_mask_and_equal_length_batches() -> None:
    enc = _tiny_encoder("data2vec-audio")
    assert enc.use_attention_mask and enc.equal_length_batches
    _one_at_a_time_matches(enc, [3000, 2000, 3000], atol=1e-4)


# -- input normalisation ----------------------------------------------------------------------


def test_normalisation_is_per_utterance_over_valid_samples(tiny: HuggingFaceEncoder) -> None:
    waves, lens = _batch([6000, 3000])
    scaled = waves.clone()
    scaled[1] = scaled[1] * 37.0 + 0.5 * (torch.arange(waves.shape[1]) < 3000)
    a = tiny.encode(waves, lens)
    b = tiny.encode(scaled, lens)
    for name in tiny.layer_names:
        torch.testing.assert_close(a.layers[name][1, :b.lengths[1]],
                                   b.layers[name][1, :b.lengths[1]], atol=1e-4, rtol=1e-4)
    raw = load_encoder("random:tiny", normalize=False)
    assert raw.describe()["input_normalization"]["do_normalize"] is False
    c = raw.encode(scaled, lens, ["2"])
    assert (c.layers["2"][1] - b.layers["2"][1]).abs().max() > 1e-2


# -- eval mode, RNG, determinism, fingerprints ----------------------------------------------------


def test_train_mode_restored_and_no_layerdrop_or_masking() -> None:
    model = _tiny_model("wav2vec2", **LAYER_NORM, layerdrop=0.9, mask_time_prob=0.9,
                        mask_time_length=2)
    enc = HuggingFaceEncoder(model, name="train-mode")
    waves, lens = _batch([3000, 2000])
    model.eval()
    ref = enc.encode(waves, lens)
    model.train()
    model.feature_extractor.eval()  # a mixed state must survive too
    out = enc.encode(waves, lens)
    assert model.training and model.encoder.training and not model.feature_extractor.training
    assert all(m.training for m in model.encoder.modules())
    assert len(out.layers) == 6  # layerdrop would drop layers in train mode
    for name in enc.layer_names:
        torch.testing.assert_close(out.layers[name], ref.layers[name])
    assert not any(p.grad is not None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())  # the model is not frozen


def test_random_construction_leaves_global_rng_alone() -> None:
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    load_encoder("random:tiny")
    assert torch.equal(torch.rand(3), expected)


def test_random_seeds_and_fingerprints(tiny: HuggingFaceEncoder) -> None:
    again = load_encoder("random:tiny@0")
    other = load_encoder("random:tiny@1")
    assert again.fingerprint() == tiny.fingerprint()
    assert other.fingerprint() != tiny.fingerprint()
    assert len(tiny.fingerprint()) == 64
    waves, lens = _batch([5000])
    torch.testing.assert_close(again.encode(waves, lens).layers["4"],
                               tiny.encode(waves, lens).layers["4"], atol=0, rtol=0)
    raw = load_encoder("random:tiny", normalize=False)
    assert raw.fingerprint() != tiny.fingerprint()  # the convention changes the features
    assert other.describe()["source"]["seed"] == 1


@pytest.mark.parametrize("spec", ["random:nope", "random:tiny@x", "random:tiny@-1"])
def test_bad_random_specs(spec: str) -> None:
    with pytest.raises(SpeechrankError) as err:
        load_encoder(spec)
    assert "\n" not in str(err.value)


def test_describe_records_conventions(tiny: HuggingFaceEncoder) -> None:
    info = tiny.describe()
    assert info["family"] == "hubert" and info["layer_dims"]["cnn"] == 128
    assert info["padding"] == {"attention_mask": True, "equal_length_batches": False,
                               "reason": tiny.padding_reason}
    assert info["input_normalization"]["eps"] == 1e-7
    assert "random" in info["input_normalization"]["source"]
    assert info["num_parameters"] == sum(p.numel() for p in tiny.model.parameters())
    import json

    json.dumps(info)  # JSON-ready


def test_empty_batch(tiny: HuggingFaceEncoder) -> None:
    out = tiny.encode(torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), ["cnn", "1"])
    assert out.lengths.shape == (0,) and out.layers["1"].shape == (0, 0, 128)


def test_dtype_option_casts_weights() -> None:
    enc = load_encoder("random:tiny", dtype="bfloat16")
    assert enc.describe()["weight_dtype"] == "bfloat16"
    out = enc.encode(*_batch([4000]), ["4"])
    assert out.layers["4"].dtype == torch.float32
    ref = load_encoder("random:tiny").encode(*_batch([4000]), ["4"])
    assert (out.layers["4"] - ref.layers["4"]).abs().mean() < 0.1
    with pytest.raises(SpeechrankError, match="unknown dtype"):
        load_encoder("random:tiny", dtype="int3")
