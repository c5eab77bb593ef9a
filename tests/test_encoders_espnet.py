"""ESPnet HuBERT pretraining checkpoints load into Hugging Face models exactly, without ESPnet.

The layouts follow espnet/espnet: ``espnet2/hubert/espnet_model.py`` (the model keeps its
encoder as ``encoder``), ``espnet2/asr/encoder/hubert_encoder.py``
(``TorchAudioHuBERTPretrainEncoder.hubert_pretrain_model`` and its ``global_step`` buffer;
``FairseqHubertPretrainEncoder.encoder``, fairseq's ``HubertModel``) and ``config.yaml`` as the
``egs2/librispeech/ssl1`` HuBERT configurations write it (``encoder``, ``encoder_conf``,
``frontend: null``, ``normalize: null``). The encoder weights come from the torchaudio and
fairseq test references (each written from its framework's own source).
"""

from __future__ import annotations

import pytest
import torch
import yaml

from speechrank.encoders.espnet import load_espnet_encoder
from speechrank.errors import SpeechrankError
from tests.test_encoders_fairseq import CONV, _fairseq_state
from tests.test_encoders_fairseq import _source as _fairseq_source
from tests.test_encoders_torchaudio import (
    CHANNELS,
    FFN,
    HEADS,
    KERNELS,
    LAYERS,
    POS_G,
    POS_K,
    STRIDES,
    WIDTH,
    _assert_same,
    _hf_source,
    _pretrain_state,
)


def _config(tmp_path, encoder: str, conf: dict, **top) -> None:
    data = {"input_size": 1, "frontend": None, "normalize": None, "specaug": None,
            "encoder": encoder, "encoder_conf": conf,
            "model": "torchaudio" if encoder == "torchaudio_hubert" else "fairseq", **top}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))


TORCHAUDIO_CONF = {
    "extractor_conv_layer_config": [[CHANNELS, k, s] for k, s in zip(KERNELS, STRIDES,
                                                                       strict=True)],
    "encoder_embed_dim": WIDTH, "encoder_num_layers": LAYERS, "encoder_num_heads": HEADS,
    "encoder_ff_interm_features": FFN, "encoder_pos_conv_kernel": POS_K,
    "encoder_pos_conv_groups": POS_G, "encoder_dropout": 0.1, "num_classes": 5,
}


def test_torchaudio_hubert_run(tmp_path):
    source = _hf_source("hubert", False)
    _config(tmp_path, "torchaudio_hubert", TORCHAUDIO_CONF)
    state = {f"encoder.hubert_pretrain_model.{k}": v for k, v in _pretrain_state(source).items()}
    state["encoder.global_step"] = torch.tensor([0])
    torch.save(state, tmp_path / "3epoch.pth")
    encoder = load_espnet_encoder(tmp_path / "3epoch.pth")
    _assert_same(encoder, source)
    assert encoder.do_normalize is False
    assert encoder.source["encoder"] == "torchaudio_hubert"
    assert encoder.source["inferred"]["num_heads"].startswith("ESPnet encoder_conf")


def test_torchaudio_hubert_defaults_are_a_base_model(tmp_path):
    source = _hf_source("hubert", False)
    _config(tmp_path, "torchaudio_hubert", {"encoder_dropout": 0.1})  # the recipe's it0 conf
    torch.save({f"encoder.hubert_pretrain_model.{k}": v
                for k, v in _pretrain_state(source).items()}, tmp_path / "1epoch.pth")
    with pytest.raises(SpeechrankError, match=r"declares conv \(channels, kernel\) "
                                              r"\(\(512, 10\)"):
        load_espnet_encoder(tmp_path / "1epoch.pth")


def test_fairseq_hubert_pretrain_run(tmp_path):
    source = _fairseq_source("hubert", large=False)
    conf = {"output_size": 48, "linear_units": 96, "attention_heads": 4, "num_blocks": 2,
            "extractor_mode": "default", "conv_feature_layers": CONV, "conv_pos": 16,
            "conv_pos_groups": 4, "dropout_rate": 0.1, "final_dim": 24, "label_rate": 100}
    _config(tmp_path, "hubert_pretrain", conf)
    state = {f"encoder.encoder.{k}": v for k, v in _fairseq_state(source, False, True).items()}
    state["encoder.encoder.label_embs_concat"] = torch.randn(10, 24)
    state["encoder.encoder.final_proj.weight"] = torch.randn(24, 48)
    state["encoder.encoder.final_proj.bias"] = torch.randn(24)
    torch.save(state, tmp_path / "valid.acc.best.pth")
    encoder = load_espnet_encoder(tmp_path / "valid.acc.best.pth")
    _assert_same_fairseq(encoder, source)
    assert encoder.source["dropped_keys"] == 3 and encoder.source["num_heads"] == 4


def _assert_same_fairseq(encoder, source) -> None:
    torch.manual_seed(1)
    wave = torch.randn(2, 4000)
    with torch.inference_mode():
        expected = source(wave, output_hidden_states=True).hidden_states
        got = encoder.encode(wave, torch.tensor([4000, 4000]))
    for i, hidden in enumerate(expected):
        torch.testing.assert_close(got.layers[str(i)], hidden, atol=1e-5, rtol=1e-5)


def test_normalisers_and_frontends(tmp_path):
    source = _hf_source("hubert", False)
    state = {f"encoder.hubert_pretrain_model.{k}": v for k, v in _pretrain_state(source).items()}
    torch.save(state, tmp_path / "2epoch.pth")
    _config(tmp_path, "torchaudio_hubert", TORCHAUDIO_CONF, normalize="utterance_mvn")
    with pytest.raises(SpeechrankError, match="removes the mean only"):
        load_espnet_encoder(tmp_path / "2epoch.pth")
    assert load_espnet_encoder(tmp_path / "2epoch.pth", normalize=False).do_normalize is False
    _config(tmp_path, "torchaudio_hubert", TORCHAUDIO_CONF, normalize="utterance_mvn",
            normalize_conf={"norm_vars": True})
    assert load_espnet_encoder(tmp_path / "2epoch.pth").do_normalize is True
    _config(tmp_path, "torchaudio_hubert", TORCHAUDIO_CONF, frontend="default")
    with pytest.raises(SpeechrankError, match="frontend 'default' computes features"):
        load_espnet_encoder(tmp_path / "2epoch.pth")
    (tmp_path / "config.yaml").unlink()
    with pytest.raises(SpeechrankError, match=r"no ESPnet HuBERT config\.yaml"):
        load_espnet_encoder(tmp_path / "2epoch.pth")
