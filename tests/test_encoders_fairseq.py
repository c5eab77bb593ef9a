"""fairseq-layout HuBERT / wav2vec 2.0 checkpoints load into Hugging Face models exactly.

Each test builds a small random Hugging Face model, writes its weights under fairseq's own key
names and configuration fields (as fairseq's ``save_checkpoint`` would), loads the file through
``load_encoder`` and checks every hidden state against the source model.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import pytest
import torch

from speechrank.encoders import load_encoder
from speechrank.encoders.fairseq import parse_conv_layers
from speechrank.encoders.formats.fairseq import checkpoint_file
from speechrank.errors import SpeechrankError

CONV = "[(32, 10, 5)] + [(32, 3, 2)] * 2 + [(32, 2, 2)]"


def _source(family: str, large: bool, conv_bias: bool = False, seed: int = 0):
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    cls, cfg_cls = (HubertModel, HubertConfig) if family == "hubert" else (
        Wav2Vec2Model, Wav2Vec2Config)
    config = cfg_cls(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
        conv_dim=(32, 32, 32, 32), conv_kernel=(10, 3, 3, 2), conv_stride=(5, 2, 2, 2),
        conv_bias=conv_bias, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        do_stable_layer_norm=large, feat_extract_norm="layer" if large else "group",
        layer_norm_eps=1e-5)
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():  # the library initialises norms to 1/0: make every weight matter
        for name, param in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    return model


def _fairseq_state(model, large: bool, parametrized: bool) -> dict[str, torch.Tensor]:
    """The inverse of the loader's mapping, written out from fairseq's module names."""
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        m = re.match(r"feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(\w+)$", key)
        if m:
            i, part, leaf = m.groups()
            if part == "conv":
                out[f"feature_extractor.conv_layers.{i}.0.{leaf}"] = value
            elif large:  # Sequential(TransposeLast, Fp32LayerNorm, TransposeLast)
                out[f"feature_extractor.conv_layers.{i}.2.1.{leaf}"] = value
            else:  # Fp32GroupNorm, first layer only
                out[f"feature_extractor.conv_layers.{i}.2.{leaf}"] = value
            continue
        m = re.match(r"encoder\.layers\.(\d+)\.(.+)$", key)
        if m:
            i, rest = m.groups()
            rest = (rest.replace("attention.", "self_attn.")
                    .replace("feed_forward.intermediate_dense", "fc1")
                    .replace("feed_forward.output_dense", "fc2"))
            if rest.startswith("layer_norm."):
                rest = "self_attn_layer_norm." + rest.split(".", 1)[1]
            out[f"encoder.layers.{i}.{rest}"] = value
            continue
        if key.startswith("encoder.pos_conv_embed.conv."):
            leaf = key.rsplit(".", 1)[1]
            if leaf == "bias":
                out["encoder.pos_conv.0.bias"] = value
            elif parametrized:
                out[f"encoder.pos_conv.0.parametrizations.weight.{leaf}"] = value
            else:
                out["encoder.pos_conv.0." + {"original0": "weight_g",
                                             "original1": "weight_v"}[leaf]] = value
            continue
        renamed = {"masked_spec_embed": "mask_emb",
                   "feature_projection.layer_norm.weight": "layer_norm.weight",
                   "feature_projection.layer_norm.bias": "layer_norm.bias",
                   "feature_projection.projection.weight": "post_extract_proj.weight",
                   "feature_projection.projection.bias": "post_extract_proj.bias",
                   "encoder.layer_norm.weight": "encoder.layer_norm.weight",
                   "encoder.layer_norm.bias": "encoder.layer_norm.bias"}
        out[renamed[key]] = value
    return out


def _fields(large: bool, conv_bias: bool = False) -> dict:
    return {"encoder_layers": 2, "encoder_embed_dim": 48, "encoder_ffn_embed_dim": 96,
            "encoder_attention_heads": 4, "activation_fn": "gelu",
            "extractor_mode": "layer_norm" if large else "default",
            "layer_norm_first": large, "conv_feature_layers": CONV, "conv_bias": conv_bias,
            "conv_pos": 16, "conv_pos_groups": 4, "final_dim": 24}


def _write(tmp_path: Path, family: str, large: bool, *, style: str = "cfg",
           parametrized: bool = False, finetuned: bool = False) -> tuple[Path, object]:
    model = _source(family, large)
    state = _fairseq_state(model, large, parametrized)
    if family == "hubert":  # pretraining heads fairseq keeps in the file
        state["label_embs_concat"] = torch.randn(504, 24)
        state["final_proj.weight"] = torch.randn(24, 48)
        state["final_proj.bias"] = torch.randn(24)
    else:
        state["quantizer.vars"] = torch.randn(1, 640, 12)
        state["quantizer.weight_proj.weight"] = torch.randn(640, 32)
        state["quantizer.weight_proj.bias"] = torch.randn(640)
        state["project_q.weight"] = torch.randn(24, 24)
        state["project_q.bias"] = torch.randn(24)
        state["final_proj.weight"] = torch.randn(24, 48)
        state["final_proj.bias"] = torch.randn(24)
    fields = _fields(large)
    task = {"_name": "audio_pretraining", "normalize": large, "sample_rate": 16000}
    if finetuned:
        state = {f"w2v_encoder.w2v_model.{k}": v for k, v in state.items()}
        state["w2v_encoder.proj.weight"] = torch.randn(32, 48)
        state["w2v_encoder.proj.bias"] = torch.randn(32)
        ckpt = {"model": state, "cfg": {
            "model": {"_name": "wav2vec_ctc",
                      "w2v_args": {"model": {"_name": family, **fields}, "task": task}},
            "task": {"_name": "audio_finetuning", "normalize": large}}}
    elif style == "cfg":
        ckpt = {"model": state, "cfg": {"model": {"_name": family, **fields}, "task": task},
                "optimizer_history": [{"criterion_name": "ModelCriterion", "num_updates": 7}]}
    else:  # older fairseq: an argparse.Namespace
        args = argparse.Namespace(arch=f"{family}_base" if family == "hubert" else "wav2vec2",
                                  normalize=large, sample_rate=16000, **fields)
        ckpt = {"model": state, "args": args, "extra_state": {"epoch": 3}}
    path = tmp_path / f"{family}.pt"
    torch.save(ckpt, path)
    return path, model


def _assert_same(path: Path, source) -> None:
    encoder = load_encoder(str(path), normalize=False)
    torch.manual_seed(1)
    wave = torch.randn(2, 4000)
    lengths = torch.tensor([4000, 4000])
    with torch.inference_mode():
        expected = source(wave, output_hidden_states=True).hidden_states
        got = encoder.encode(wave, lengths)
    assert len(expected) == 3
    for i, hidden in enumerate(expected):
        torch.testing.assert_close(got.layers[str(i)], hidden, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family", ["hubert", "wav2vec2"])
@pytest.mark.parametrize("large", [False, True])
def test_fairseq_checkpoint_matches_source(tmp_path, family, large):
    path, source = _write(tmp_path, family, large, parametrized=large)
    _assert_same(path, source)
    encoder = load_encoder(str(path))
    assert encoder.source["family"] == family
    assert encoder.source["layer_norm_first"] is large
    assert encoder.do_normalize is large  # the task's normalize field
    assert encoder.source["dropped_keys"] == (3 if family == "hubert" else 7)


def test_namespace_args_and_directory(tmp_path):
    path, source = _write(tmp_path, "wav2vec2", False, style="args")
    assert checkpoint_file(tmp_path) == path
    _assert_same(tmp_path, source)  # the directory holding one .pt
    assert load_encoder(str(tmp_path)).source["config_from"] == "args"


def test_finetuned_checkpoint_loads_its_encoder(tmp_path):
    path, source = _write(tmp_path, "hubert", True, finetuned=True)
    _assert_same(path, source)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


class Plain:
    pass


@pytest.mark.parametrize("payload,name", [(Evil(), "posix.system"), (Plain(), "Plain")])
def test_classes_outside_the_allowlist_are_refused(tmp_path, payload, name):
    path, _ = _write(tmp_path, "hubert", False)
    ckpt = torch.load(path, weights_only=True)
    ckpt["extra_state"] = {"thing": payload}
    torch.save(ckpt, path)
    with pytest.raises(SpeechrankError) as info:
        load_encoder(str(path))
    message = str(info.value)
    assert "\n" not in message and "refusing to unpickle class" in message and name in message


def test_missing_and_unexpected_weights_are_refused(tmp_path):
    path, _ = _write(tmp_path, "hubert", False)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["model"]["encoder.layers.1.fc2.weight"]
    torch.save(ckpt, path)
    with pytest.raises(SpeechrankError, match="missing from the fairseq checkpoint"):
        load_encoder(str(path))
    ckpt["model"]["encoder.layers.1.fc2.weight"] = torch.zeros(48, 96)
    ckpt["model"]["encoder.adapter.weight"] = torch.zeros(3)
    torch.save(ckpt, path)
    with pytest.raises(SpeechrankError, match=r"unexpected weight 'encoder\.adapter\.weight'"):
        load_encoder(str(path))


def test_conv_layers_are_parsed_without_eval():
    assert parse_conv_layers(CONV) == [(32, 10, 5), (32, 3, 2), (32, 3, 2), (32, 2, 2)]
    with pytest.raises(SpeechrankError, match="conv_feature_layers"):
        parse_conv_layers("__import__('os').system('true')")
