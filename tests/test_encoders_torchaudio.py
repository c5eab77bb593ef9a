"""torchaudio wav2vec 2.0 / HuBERT state dicts and Lightning checkpoints load into Hugging Face
models exactly, without torchaudio.

torchaudio cannot be imported here, so two independent references stand in for it:

- the key layout torchaudio's source declares, written out by hand from
  ``src/torchaudio/models/wav2vec2/components.py`` (``ConvLayerBlock``, ``FeatureProjection``,
  ``ConvolutionalPositionalEmbedding``, ``SelfAttention``, ``FeedForward``, ``EncoderLayer``,
  ``Transformer``, ``Encoder``, ``MaskGenerator``, ``LogitGenerator``) and ``model.py``
  (``Wav2Vec2Model``: ``feature_extractor``, ``encoder``, ``aux``; ``HuBERTPretrainModel``:
  ``wav2vec2``, ``mask_generator``, ``logit_generator``) of pytorch/audio, with the shapes those
  modules give their parameters (:func:`declared_layout`);
- a Hugging Face model whose weights are set at random, converted to torchaudio's names the way
  ``src/torchaudio/models/wav2vec2/utils/import_huggingface.py`` (``_build``) copies them:
  ``feature_extractor`` -> ``feature_extractor``, ``feature_projection`` ->
  ``encoder.feature_projection``, ``encoder`` -> ``encoder.transformer``
  (:func:`hf_to_torchaudio`).

The converted key set must equal the declared one (names and shapes); the loader must then give
back every hidden state of the Hugging Face model to 1e-5. The Lightning container follows
pytorch/audio ``examples/hubert/lightning_modules.py`` (``HuBERTPreTrainModule.model``) and the
file layout Lightning 2.x writes (``global_step``, ``epoch``, ``loops``, ``callbacks``, ...).
"""

from __future__ import annotations

import os
import pathlib
from pathlib import Path

import pytest
import torch

from speechrank.encoders.torchaudio import (
    TorchaudioArch,
    encoder_prefix,
    infer_arch,
    load_torchaudio_encoder,
    read_checkpoint,
    split_state,
    state_dict_of,
)
from speechrank.errors import SpeechrankError

WIDTH, HEADS, LAYERS, FFN, CHANNELS, POS_K, POS_G = 32, 4, 2, 64, 8, 4, 4
#: torchaudio's default layout (model.py, wav2vec2_model) with narrow channels.
KERNELS, STRIDES = (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)


def _hf_source(family: str = "hubert", large: bool = False, *, kernels=KERNELS,
               strides=STRIDES, conv_bias: bool = False, stable: bool | None = None,
               seed: int = 0):
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    cls, cfg_cls = (HubertModel, HubertConfig) if family == "hubert" else (
        Wav2Vec2Model, Wav2Vec2Config)
    config = cfg_cls(
        hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, conv_dim=(CHANNELS,) * len(kernels), conv_kernel=kernels,
        conv_stride=strides, conv_bias=conv_bias, num_conv_pos_embeddings=POS_K,
        num_conv_pos_embedding_groups=POS_G, feat_extract_norm="layer" if large else "group",
        do_stable_layer_norm=large if stable is None else stable, layer_norm_eps=1e-5)
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():  # norms start at 1/0: make every weight matter
        for name, param in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    return model


def hf_to_torchaudio(model, pos: str = "parametrizations") -> dict[str, torch.Tensor]:
    """A Hugging Face model's weights under torchaudio's names, as ``import_huggingface.py``'s
    ``_build`` copies them (submodule state dicts loaded unchanged into torchaudio's
    ``feature_extractor``, ``encoder.feature_projection`` and ``encoder.transformer``)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in model.feature_extractor.state_dict().items():
        out["feature_extractor." + key] = value.clone()
    for key, value in model.feature_projection.state_dict().items():
        out["encoder.feature_projection." + key] = value.clone()
    for key, value in model.encoder.state_dict().items():
        out["encoder.transformer." + key] = value.clone()
    base = "encoder.transformer.pos_conv_embed.conv."
    g = out.pop(base + "parametrizations.weight.original0")
    v = out.pop(base + "parametrizations.weight.original1")
    if pos == "parametrizations":  # nn.utils.parametrizations.weight_norm (current torchaudio)
        out[base + "parametrizations.weight.original0"] = g
        out[base + "parametrizations.weight.original1"] = v
    elif pos == "weight_g":  # nn.utils.weight_norm (older torchaudio)
        out[base + "weight_g"], out[base + "weight_v"] = g, v
    else:  # __prepare_scriptable__ removes the parametrization: one plain weight
        out[base + "weight"] = torch._weight_norm(v, g, 2)
    return out


def declared_layout(*, n_conv: int = len(KERNELS), mode: str = "group_norm",
                    conv_bias: bool = False, pretrain: bool = False, num_classes: int = 5,
                    final_dim: int = 6) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of torchaudio's modules, read from components.py/model.py."""
    keys: dict[str, tuple[int, ...]] = {}
    in_ch = 1
    for i, k in enumerate(KERNELS[:n_conv]):
        # ConvLayerBlock: self.conv = nn.Conv1d(in, out, k, stride, bias); self.layer_norm =
        # nn.GroupNorm(out, out, affine=True) on block 0 (group_norm) or LayerNorm(out) on all
        block = f"feature_extractor.conv_layers.{i}."
        keys[block + "conv.weight"] = (CHANNELS, in_ch, k)
        if conv_bias:
            keys[block + "conv.bias"] = (CHANNELS,)
        if mode == "layer_norm" or i == 0:
            keys[block + "layer_norm.weight"] = (CHANNELS,)
            keys[block + "layer_norm.bias"] = (CHANNELS,)
        in_ch = CHANNELS
    # Encoder(feature_projection, transformer); FeatureProjection: layer_norm, projection
    keys["encoder.feature_projection.layer_norm.weight"] = (CHANNELS,)
    keys["encoder.feature_projection.layer_norm.bias"] = (CHANNELS,)
    keys["encoder.feature_projection.projection.weight"] = (WIDTH, CHANNELS)
    keys["encoder.feature_projection.projection.bias"] = (WIDTH,)
    # ConvolutionalPositionalEmbedding: Conv1d(groups) under weight_norm(name="weight", dim=2)
    pos = "encoder.transformer.pos_conv_embed.conv."
    keys[pos + "bias"] = (WIDTH,)
    keys[pos + "parametrizations.weight.original0"] = (1, 1, POS_K)
    keys[pos + "parametrizations.weight.original1"] = (WIDTH, WIDTH // POS_G, POS_K)
    # Transformer: layer_norm = nn.LayerNorm(embed_dim); layers = ModuleList(EncoderLayer)
    keys["encoder.transformer.layer_norm.weight"] = (WIDTH,)
    keys["encoder.transformer.layer_norm.bias"] = (WIDTH,)
    for i in range(LAYERS):
        layer = f"encoder.transformer.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):  # SelfAttention
            keys[f"{layer}attention.{proj}.weight"] = (WIDTH, WIDTH)
            keys[f"{layer}attention.{proj}.bias"] = (WIDTH,)
        for norm in ("layer_norm", "final_layer_norm"):  # EncoderLayer
            keys[f"{layer}{norm}.weight"] = (WIDTH,)
            keys[f"{layer}{norm}.bias"] = (WIDTH,)
        keys[f"{layer}feed_forward.intermediate_dense.weight"] = (FFN, WIDTH)  # FeedForward
        keys[f"{layer}feed_forward.intermediate_dense.bias"] = (FFN,)
        keys[f"{layer}feed_forward.output_dense.weight"] = (WIDTH, FFN)
        keys[f"{layer}feed_forward.output_dense.bias"] = (WIDTH,)
    if not pretrain:
        return keys
    # HuBERTPretrainModel(wav2vec2, mask_generator, logit_generator)
    keys = {"wav2vec2." + k: v for k, v in keys.items()}
    keys["mask_generator.mask_embedding"] = (WIDTH,)
    keys["logit_generator.label_embeddings"] = (num_classes, final_dim)
    keys["logit_generator.final_proj.weight"] = (final_dim, WIDTH)
    keys["logit_generator.final_proj.bias"] = (final_dim,)
    return keys


def _pretrain_state(model, **kw) -> dict[str, torch.Tensor]:
    """A ``HuBERTPretrainModel`` state dict around the converted encoder."""
    state = {"wav2vec2." + k: v for k, v in hf_to_torchaudio(model, **kw).items()}
    state["mask_generator.mask_embedding"] = model.masked_spec_embed.detach().clone()
    state["logit_generator.label_embeddings"] = torch.randn(5, 6)
    state["logit_generator.final_proj.weight"] = torch.randn(6, WIDTH)
    state["logit_generator.final_proj.bias"] = torch.randn(6)
    return state


def lightning_checkpoint(state: dict[str, torch.Tensor], *, step: int, attribute: str = "model",
                         hyper: dict | None = None) -> dict:
    """What Lightning 2.x saves for ``HuBERTPreTrainModule`` (its module under ``model``)."""
    ckpt = {
        "epoch": 0, "global_step": step, "pytorch-lightning_version": "2.6.6",
        "state_dict": {f"{attribute}.{k}": v for k, v in state.items()},
        "loops": {"fit_loop": {"state_dict": {},
                               "epoch_loop.state_dict": {"_batches_that_stepped": step}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
            "monitor": "val_loss", "best_model_score": torch.tensor(3.5),
            "best_k_models": {"/x/epoch=0-step=4.ckpt": torch.tensor(3.5)},
            "dirpath": "/x", "kth_value": torch.tensor(3.5), "last_model_path": ""}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 5e-4, "params": [0, 1]}]}],
        "lr_schedulers": [{"warmup_updates": 32000, "max_updates": 250000, "base_lrs": [5e-4],
                           "last_epoch": step, "_step_count": step + 1}],
    }
    if hyper is not None:
        ckpt["hyper_parameters"] = hyper
    return ckpt


def _assert_same(encoder, source) -> None:
    torch.manual_seed(1)
    wave = torch.randn(2, 4000)
    with torch.inference_mode():
        expected = source(wave, output_hidden_states=True).hidden_states
        got = encoder.encode(wave, torch.tensor([4000, 4000]))
    assert len(expected) == LAYERS + 1
    for i, hidden in enumerate(expected):
        torch.testing.assert_close(got.layers[str(i)], hidden, atol=1e-5, rtol=1e-5)


ARCH = TorchaudioArch(num_heads=HEADS)


@pytest.mark.parametrize("large", [False, True])
def test_converted_keys_are_the_layout_torchaudio_declares(large):
    model = _hf_source("hubert", large)
    mode = "layer_norm" if large else "group_norm"
    got = {k: tuple(v.shape) for k, v in hf_to_torchaudio(model).items()}
    assert got == declared_layout(mode=mode)
    pre = {k: tuple(v.shape) for k, v in _pretrain_state(model).items()}
    assert pre == declared_layout(mode=mode, pretrain=True)


@pytest.mark.parametrize("family", ["hubert", "wav2vec2"])
@pytest.mark.parametrize("large", [False, True])
def test_bare_state_dict_matches_source(tmp_path, family, large):
    source = _hf_source(family, large)
    path = tmp_path / "model.pth"
    torch.save(hf_to_torchaudio(source), path)
    encoder = load_torchaudio_encoder(path, normalize=False, arch=ARCH)
    _assert_same(encoder, source)
    info = encoder.source
    assert info["container"] == "Wav2Vec2Model state dict" and info["prefix"] == ""
    assert info["layer_norm_first"] is large and info["lightning"] is False
    assert "layer_norm extractor" in info["inferred"]["layer_norm_first"]
    assert info["inferred"]["conv_strides"].startswith("torchaudio's default layout")
    assert info["inferred"]["num_heads"] == "argument"
    assert info["family"] == "wav2vec2"  # a bare state dict does not say; both compute alike
    # torchaudio's bundles normalise exactly their layer_norm_first models
    assert load_torchaudio_encoder(path, arch=ARCH).do_normalize is large


@pytest.mark.parametrize("pos", ["weight_g", "plain"])
def test_positional_conv_spellings(tmp_path, pos):
    source = _hf_source("hubert", False)
    path = tmp_path / "model.pt"
    torch.save(hf_to_torchaudio(source, pos=pos), path)
    _assert_same(load_torchaudio_encoder(path, normalize=False, arch=ARCH), source)


def test_lightning_checkpoint_matches_source(tmp_path):
    source = _hf_source("hubert", True)
    path = tmp_path / "epoch=0-step=40.ckpt"
    torch.save(lightning_checkpoint(_pretrain_state(source), step=40,
                                    hyper={"encoder_num_heads": HEADS}), path)
    ckpt = read_checkpoint(path)
    assert ckpt.lightning and ckpt.global_step == 40 and ckpt.epoch == 0
    encoder = load_torchaudio_encoder(path)
    assert encoder.do_normalize is False  # the recipe trains on waveforms as loaded
    _assert_same(encoder, source)
    info = encoder.source
    assert info["container"] == "HuBERTPretrainModel under 'model.'"
    assert info["family"] == "hubert" and info["dropped_keys"] == 3
    assert info["inferred"]["num_heads"] == "hyper_parameters"
    assert info["global_step"] == 40
    assert type(encoder.model).__name__ == "HubertModel"
    torch.testing.assert_close(encoder.model.masked_spec_embed, source.masked_spec_embed)


def test_finetune_module_and_ctc_heads_are_dropped(tmp_path):
    source = _hf_source("hubert", False)
    state = {f"model.{k}": v for k, v in _pretrain_state(source).items()}
    state["aux.weight"], state["aux.bias"] = torch.randn(29, WIDTH), torch.randn(29)
    path = tmp_path / "finetune.ckpt"
    torch.save({"state_dict": state, "global_step": 3, "epoch": 0}, path)
    encoder = load_torchaudio_encoder(path, normalize=False, arch=ARCH)
    _assert_same(encoder, source)
    assert encoder.source["dropped_keys"] == 5
    bare = hf_to_torchaudio(source)  # wav2vec2_model(aux_num_out=29): aux inside the model
    bare["aux.weight"], bare["aux.bias"] = torch.randn(29, WIDTH), torch.randn(29)
    torch.save(bare, tmp_path / "asr.pth")
    _assert_same(load_torchaudio_encoder(tmp_path / "asr.pth", normalize=False, arch=ARCH),
                 source)


def test_espnet_torchaudio_hubert_prefix(tmp_path):
    """ESPnet's TorchAudioHuBERTPretrainEncoder keeps the model as ``hubert_pretrain_model``
    and a ``global_step`` buffer; ESPnet's model holds the encoder as ``encoder``."""
    source = _hf_source("hubert", False)
    state = {f"encoder.hubert_pretrain_model.{k}": v for k, v in _pretrain_state(source).items()}
    state["encoder.global_step"] = torch.tensor([120])
    torch.save(state, tmp_path / "valid.loss.best.pth")
    encoder = load_torchaudio_encoder(tmp_path / "valid.loss.best.pth", normalize=False,
                                      arch=ARCH)
    _assert_same(encoder, source)
    assert encoder.source["prefix"] == "encoder.hubert_pretrain_model.wav2vec2."


def test_declared_layout_and_factory_name(tmp_path):
    kernels, strides = (10, 3, 2), (5, 3, 2)  # not the default: only a declaration tells
    source = _hf_source("wav2vec2", False, kernels=kernels, strides=strides, conv_bias=True,
                        stable=True)
    layout = [[CHANNELS, k, s] for k, s in zip(kernels, strides, strict=True)]
    hyper = {"model_name": "my_wav2vec2", "encoder_num_heads": HEADS,
             "extractor_conv_layer_config": layout, "encoder_layer_norm_first": True}
    path = tmp_path / "epoch=1-step=9.ckpt"
    torch.save(lightning_checkpoint(hf_to_torchaudio(source), step=9, hyper=hyper), path)
    encoder = load_torchaudio_encoder(path, normalize=False)
    _assert_same(encoder, source)
    assert encoder.source["family"] == "wav2vec2"
    assert encoder.source["inferred"]["layer_norm_first"] == "hyper_parameters"
    with pytest.raises(SpeechrankError, match="not torchaudio's default layout"):
        infer_arch(split_state(hf_to_torchaudio(source)).encoder, arch=ARCH)
    # a factory name whose architecture the weights contradict is refused
    hyper = {"model_name": "hubert_pretrain_base"}
    torch.save(lightning_checkpoint(_pretrain_state(_hf_source()), step=1, hyper=hyper), path)
    with pytest.raises(SpeechrankError, match="declares encoder_embed_dim=768, the weights "
                                              "have 32"):
        load_torchaudio_encoder(path)


def test_factory_widths_give_heads_and_unknown_widths_are_refused(tmp_path):
    source = _hf_source("hubert", False)
    encoder_weights = split_state(hf_to_torchaudio(source)).encoder
    with pytest.raises(SpeechrankError, match="attention heads is not in the weights"):
        infer_arch(encoder_weights)
    wide = dict(encoder_weights)
    wide["encoder.feature_projection.projection.weight"] = torch.zeros(768, CHANNELS)
    wide["encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1"] = (
        torch.zeros(768, 48, POS_K))
    fields, where = infer_arch(wide)
    assert fields["encoder_attention_heads"] == 12 and "768" in where["num_heads"]
    assert fields["conv_pos"] == POS_K and fields["conv_pos_groups"] == 16


def test_refusals_are_one_line(tmp_path):
    source = _hf_source("hubert", False)
    cases = {}
    missing = hf_to_torchaudio(source)
    del missing["encoder.transformer.layers.1.feed_forward.output_dense.weight"]
    cases["missing from the torchaudio state dict"] = missing
    extra = hf_to_torchaudio(source)
    extra["encoder.transformer.layers.0.attention.extra.weight"] = torch.zeros(2)
    cases["unexpected weight"] = extra
    beside = _pretrain_state(source)
    beside["frontend.weight"] = torch.zeros(2)
    cases["unexpected weight 'frontend.weight' beside"] = beside
    wavlm = hf_to_torchaudio(source)
    wavlm["encoder.transformer.layers.0.attention.rel_attn_embed.weight"] = torch.zeros(4, 4)
    cases["WavLM"] = wavlm
    for i, (message, state) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.pth"
        torch.save(state, path)
        with pytest.raises(SpeechrankError, match=message) as info:
            load_torchaudio_encoder(path, arch=ARCH)
        assert "\n" not in str(info.value)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("payload,name", [(Evil(), "posix.system"),
                                          (pathlib.PurePosixPath("/data"), "PurePosixPath")])
def test_non_plain_objects_in_a_checkpoint_are_refused(tmp_path, payload, name):
    path = tmp_path / "epoch=0-step=1.ckpt"
    ckpt = lightning_checkpoint(_pretrain_state(_hf_source()), step=1,
                                hyper={"dataset_path": payload})
    torch.save(ckpt, path)
    with pytest.raises(SpeechrankError, match="refusing to unpickle class") as info:
        read_checkpoint(path)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_fairseq_files_are_not_torchaudio_and_back():
    source = _hf_source("hubert", False)
    fairseq_like = {"model": {"feature_extractor.conv_layers.0.0.weight": torch.zeros(1),
                              "encoder.layers.0.fc1.weight": torch.zeros(1)},
                    "cfg": {"model": {"_name": "hubert"}}}
    assert state_dict_of(fairseq_like) is None
    # a torchaudio state dict under 'model' beside a fairseq 'cfg' is still not claimed
    assert state_dict_of({"model": hf_to_torchaudio(source), "cfg": {}}) is None
    assert state_dict_of({"model": hf_to_torchaudio(source)}) is not None
    assert encoder_prefix(["model.w.feature_extractor.conv_layers.0.conv.weight"]) is None
    with pytest.raises(SpeechrankError, match="2 torchaudio encoders"):
        encoder_prefix([*(f"a.{k}" for k in hf_to_torchaudio(source)),
                        *(f"b.{k}" for k in hf_to_torchaudio(source))])


def test_not_a_torchaudio_file(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(SpeechrankError, match=r"not a torchaudio wav2vec 2\.0 / HuBERT"):
        read_checkpoint(Path(path))
