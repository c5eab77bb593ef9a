"""load_encoder: local directories, the offline hub cache, checkpoint dispatch, user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from speechrank.encoders import load_encoder
from speechrank.encoders.huggingface import HuggingFaceEncoder
from speechrank.errors import SpeechrankError

TINY_KW = dict(hidden_size=16, conv_dim=(32, 32, 32), conv_stride=(4, 4, 4),
               conv_kernel=(8, 8, 8), num_hidden_layers=3, num_attention_heads=2,
               intermediate_size=20, num_conv_pos_embeddings=16,
               num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
               do_stable_layer_norm=True)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _save_tiny(directory: Path, model_type: str = "wav2vec2",
               preprocessor: dict | None = None) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = AutoModel.from_config(AutoConfig.for_model(model_type, **TINY_KW)).eval()
    model.save_pretrained(directory)
    if preprocessor is not None:
        (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return model


def _waves() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    waves = torch.randn(2, 3000, generator=gen) * 0.2 + 0.05
    waves[1, 2000:] = 0
    return waves, torch.tensor([3000, 2000])


def _one_line(err: pytest.ExceptionInfo[SpeechrankError]) -> str:
    message = str(err.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize("model_type", ["wav2vec2", "hubert"])
def test_local_directory_round_trip(tmp_path: Path, model_type: str) -> None:
    model = _save_tiny(tmp_path, model_type)
    enc = load_encoder(str(tmp_path))
    assert isinstance(enc, HuggingFaceEncoder)
    assert enc.family == model_type and enc.num_layers == 4
    info = enc.describe()
    assert info["source"]["kind"] == "directory" and info["source"]["preprocessor_config"] is False
    assert info["input_normalization"]["do_normalize"] is True
    assert "no preprocessor_config.json" in info["input_normalization"]["source"]
    reference = HuggingFaceEncoder(model, name="in-memory", do_normalize=True)
    waves, lens = _waves()
    got, want = enc.encode(waves, lens), reference.encode(waves, lens)
    for name in enc.layer_names:
        torch.testing.assert_close(got.layers[name], want.layers[name], atol=0, rtol=0)
    assert enc.fingerprint() == reference.fingerprint()


def test_local_directory_with_preprocessor_config(tmp_path: Path) -> None:
    model = _save_tiny(tmp_path, preprocessor={
        "feature_extractor_type": "Wav2Vec2FeatureExtractor", "do_normalize": False,
        "sampling_rate": 16000, "return_attention_mask": True})
    enc = load_encoder(str(tmp_path))
    norm = enc.describe()["input_normalization"]
    assert norm["do_normalize"] is False and norm["source"] == "preprocessor_config.json"
    waves, lens = _waves()
    raw = HuggingFaceEncoder(model, name="raw", do_normalize=False).encode(waves, lens)
    normed = HuggingFaceEncoder(model, name="normed", do_normalize=True).encode(waves, lens)
    got = enc.encode(waves, lens)
    torch.testing.assert_close(got.layers["3"], raw.layers["3"], atol=0, rtol=0)
    assert (got.layers["3"] - normed.layers["3"]).abs().max() > 1e-3
    # the user can override the file
    forced = load_encoder(str(tmp_path), normalize=True)
    torch.testing.assert_close(forced.encode(waves, lens).layers["3"], normed.layers["3"],
                               atol=0, rtol=0)
    assert forced.describe()["input_normalization"]["source"].startswith("user")


def test_preprocessor_sampling_rate_and_default_normalize(tmp_path: Path) -> None:
    _save_tiny(tmp_path, preprocessor={"sampling_rate": 8000})
    enc = load_encoder(str(tmp_path))
    assert enc.sample_rate == 8000 and enc.frame_rate == 8000 / 64
    norm = enc.describe()["input_normalization"]
    assert norm["do_normalize"] is True and "no do_normalize key" in norm["source"]


def test_directory_without_weights(tmp_path: Path) -> None:
    _save_tiny(tmp_path)
    for weights in tmp_path.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(SpeechrankError) as err:
        load_encoder(str(tmp_path))
    assert "cannot load the weights" in _one_line(err)


def test_directory_with_missing_weights_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    _save_tiny(tmp_path)
    (weights,) = tmp_path.glob("*.safetensors")
    tensors = load_file(str(weights))
    dropped = next(k for k in tensors if "encoder.layers.0" in k)
    del tensors[dropped]
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(SpeechrankError) as err:
        load_encoder(str(tmp_path))
    assert "missing" in _one_line(err)


def test_directory_without_config(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(SpeechrankError) as err:
        load_encoder(str(tmp_path))
    assert "no config.json" in _one_line(err)


def test_file_instead_of_directory(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"")
    with pytest.raises(SpeechrankError) as err:
        load_encoder(str(path))
    assert "is a file" in _one_line(err)
    # a .pt file is read as a fairseq checkpoint: an empty one is one line too
    path = tmp_path / "model.pt"
    path.write_bytes(b"")
    with pytest.raises(SpeechrankError) as err:
        load_encoder(str(path))
    assert "cannot read the checkpoint" in _one_line(err)


@pytest.mark.parametrize("spec", ["./no/such/model", "/definitely/not/here", "a/b/c", ""])
def test_missing_path_is_one_line(spec: str) -> None:
    with pytest.raises(SpeechrankError) as err:
        load_encoder(spec)
    _one_line(err)


def test_bad_device_and_dtype() -> None:
    if not torch.cuda.is_available():
        with pytest.raises(SpeechrankError) as err:
            load_encoder("random:tiny", device="cuda")
        assert "CUDA is not available" in _one_line(err)
    with pytest.raises(SpeechrankError) as err:
        load_encoder("random:tiny", device="toaster")
    _one_line(err)


def test_speechrank_checkpoint_dispatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pretrain checkpoint (its config.json names the BEST-RQ model type, as
    speechrank.encoders.bestrq_format writes it) goes to speechrank.encoders.bestrq; a stray
    marker file alone (an old, never-written convention) does not make a checkpoint."""
    from speechrank.encoders import bestrq

    calls: list[tuple[Path, dict]] = []
    sentinel = object()

    def fake_loader(path: Path, *, device: str | torch.device = "cpu") -> object:
        calls.append((Path(path), {"device": device}))
        return sentinel

    monkeypatch.setattr(bestrq, "load_bestrq_checkpoint", fake_loader)
    marker_only = tmp_path / "a"
    marker_only.mkdir()
    (marker_only / "speechrank_checkpoint.json").write_text("{}")
    by_config = tmp_path / "b"
    by_config.mkdir()
    (by_config / "config.json").write_text(json.dumps({"model_type": "speechrank-bestrq"}))
    with pytest.raises(SpeechrankError, match="not a model directory"):
        load_encoder(str(marker_only))
    assert load_encoder(str(by_config)) is sentinel
    assert [p for p, _ in calls] == [by_config]
    assert calls[0][1]["device"] == torch.device("cpu")
    with pytest.raises(SpeechrankError) as err:
        load_encoder(str(by_config), dtype="bfloat16")
    assert "float32" in _one_line(err)


_OFFLINE_SCRIPT = textwrap.dedent("""
    import socket, sys

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    socket.socket.connect = no_network
    socket.create_connection = no_network
    from speechrank.encoders import load_encoder
    from speechrank.errors import SpeechrankError

    enc = load_encoder("random:tiny")
    assert "speechrank.encoders.bestrq" not in sys.modules, "bestrq imported eagerly"
    for spec in ("facebook/hubert-base-ls960", "some-model"):
        try:
            load_encoder(spec)
        except SpeechrankError as err:
            print(str(err))
        else:
            raise AssertionError("loaded a model that is not cached")
""")


@pytest.mark.slow
def test_hub_id_not_cached_is_one_line_offline(tmp_path: Path) -> None:
    """In a fresh interpreter with an empty cache, offline mode and sockets disabled: a hub id
    gives one line, never a download or a traceback; random: needs no bestrq import."""
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1")
    env.pop("HF_HUB_CACHE", None)
    env.pop("TRANSFORMERS_CACHE", None)
    result = subprocess.run([sys.executable, "-c", _OFFLINE_SCRIPT], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("model 'facebook/hubert-base-ls960' is not a local directory "
                               "and not in the Hugging Face cache (offline)")
    assert lines[1].startswith("model 'some-model' is not a local directory")


def test_hub_id_from_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id present in the cache loads without network (cache laid out as the hub does)."""
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny-w2v" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    _save_tiny(snapshot, preprocessor={"do_normalize": False, "sampling_rate": 16000})
    refs = cache / "models--someone--tiny-w2v" / "refs"
    refs.mkdir()
    (refs / "main").write_text("0" * 40)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    import transformers.utils.hub as tf_hub

    if hasattr(tf_hub, "TRANSFORMERS_CACHE"):
        monkeypatch.setattr(tf_hub, "TRANSFORMERS_CACHE", str(cache))
    enc = load_encoder("someone/tiny-w2v")
    info = enc.describe()
    assert info["source"] == {"kind": "hub-cache", "path": None, "hub_id": "someone/tiny-w2v",
                              "preprocessor_config": True}
    assert info["input_normalization"]["do_normalize"] is False
    assert enc.num_layers == 4


def test_fine_tuned_checkpoint_loads_its_encoder(tmp_path: Path) -> None:
    """A Wav2Vec2ForCTC directory loads as its bare encoder, with the same weights."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        ctc = Wav2Vec2ForCTC(Wav2Vec2Config(**TINY_KW, vocab_size=12)).eval()
    ctc.save_pretrained(tmp_path)
    enc = load_encoder(str(tmp_path))
    reference = HuggingFaceEncoder(ctc.wav2vec2, name="inner")
    waves, lens = _waves()
    torch.testing.assert_close(enc.encode(waves, lens).layers["3"],
                               reference.encode(waves, lens).layers["3"], atol=0, rtol=0)
