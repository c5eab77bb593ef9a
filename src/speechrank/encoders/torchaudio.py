"""torchaudio wav2vec 2.0 / HuBERT weights as MODEL, without torchaudio or Lightning.

torchaudio's ``Wav2Vec2Model`` (built by ``wav2vec2_model``, ``wav2vec2_base``, ``hubert_base``,
``hubert_large`` ... in ``torchaudio/models/wav2vec2/model.py``) and the ``HuBERTPretrainModel``
that wraps it (``hubert_pretrain_base`` ...) are the architecture of wav2vec 2.0 (Baevski et
al., 2020) and HuBERT (Hsu et al., 2021), with module names chosen to match the Hugging Face
classes: torchaudio's own importer (``utils/import_huggingface.py``) copies Hugging Face's
``feature_extractor``, ``feature_projection`` and ``encoder`` state dicts into torchaudio's
``feature_extractor``, ``encoder.feature_projection`` and ``encoder.transformer`` unchanged.
This module inverts that:

==============================================  ==============================================
torchaudio (after the container's prefix)        Hugging Face ``HubertModel``/``Wav2Vec2Model``
==============================================  ==============================================
``feature_extractor.conv_layers.i.conv``        ``feature_extractor.conv_layers.i.conv``
``feature_extractor.conv_layers.i.layer_norm``  ``feature_extractor.conv_layers.i.layer_norm``
``encoder.feature_projection.{layer_norm,``     ``feature_projection.{layer_norm,projection}``
``projection}``
``encoder.transformer.pos_conv_embed.conv``     ``encoder.pos_conv_embed.conv`` (weight norm,
(``parametrizations.weight.original0/1``, or    ``dim=2``; a plain ``weight``, as TorchScript
``weight_g/v`` in older releases, or ``weight``)  preparation leaves it, is split into g and v)
``encoder.transformer.layer_norm``              ``encoder.layer_norm``
``encoder.transformer.layers.i.*``              ``encoder.layers.i.*`` (``attention.{q,k,v,out}
                                                _proj``, ``layer_norm``, ``feed_forward.*``,
                                                ``final_layer_norm``)
``mask_generator.mask_embedding``               ``masked_spec_embed``
==============================================  ==============================================

Containers recognised by their prefix (the key that holds
``feature_extractor.conv_layers.0.conv.weight`` beside ``encoder.feature_projection``): a bare
``Wav2Vec2Model`` state dict (torchaudio's bundle ``.pth`` files), a ``HuBERTPretrainModel``
(``wav2vec2.``), the Lightning checkpoints of torchaudio's HuBERT recipe
(``examples/hubert/lightning_modules.py``: ``HuBERTPreTrainModule.model`` -> ``model.wav2vec2.``,
with ``global_step`` and ``epoch`` beside ``state_dict``), and ESPnet's torchaudio HuBERT
(``encoder.hubert_pretrain_model.wav2vec2.``). Heads are dropped and counted: HuBERT's
``logit_generator`` (``label_embeddings``, ``final_proj``), a CTC ``aux`` linear layer, and
ESPnet's ``global_step`` buffer. Any other key is refused, WavLM's attention (``in_proj_weight``,
``rel_attn_embed``) by name.

What the weights say and what they do not (:func:`infer_arch`):

- read from shapes: conv channels and kernels, conv bias, extractor mode (a norm on conv 0 only
  is ``group_norm``, on every conv ``layer_norm``), model width, layer count, feed-forward
  width, positional-conv kernel and groups;
- not in the weights: conv strides, attention heads and ``layer_norm_first``. They come from
  an explicit :class:`TorchaudioArch`, else from plain ``hyper_parameters`` saved with the
  checkpoint (torchaudio factory argument names, or a ``model_name`` naming a factory), else
  from what every torchaudio factory does: strides 5,2,2,2,2,2,2 for kernels 10,3,3,3,3,2,2
  (any other kernel layout is refused), heads 12 for width 768 and 16 for 1024, 1280 and 1920
  (any other width is refused), ``layer_norm_first`` exactly when the extractor uses
  ``layer_norm``. Each value's source is recorded in ``describe()``.

Files are read with ``torch.load(weights_only=True)`` and no allowed class: a Lightning
checkpoint's loops, callbacks, optimizer and scheduler states are plain containers and tensors;
anything else (omegaconf hyper-parameters, a ``pathlib`` path ...) is refused in one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from speechrank.encoders import statemap
from speechrank.encoders.fairseq import Family, hf_config, load_weights_only
from speechrank.errors import SpeechrankError

#: A torchaudio encoder holds these two keys after its container's prefix.
ANCHOR_KEYS = ("feature_extractor.conv_layers.0.conv.weight",
               "encoder.feature_projection.projection.weight")

#: torchaudio's default feature-extractor layout (``model.py``, ``wav2vec2_model``).
DEFAULT_CONV_LAYOUT: tuple[tuple[int, int], ...] = (
    (10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2))

#: Attention heads of every torchaudio factory by model width (``model.py``: base 768/12;
#: large, lv60k, xlsr_300m 1024/16; hubert_xlarge, xlsr_1b 1280/16; xlsr_2b 1920/16).
HEADS_BY_WIDTH: dict[int, int] = {768: 12, 1024: 16, 1280: 16, 1920: 16}

#: The factories' architecture fields (``model.py``); the ``hubert_pretrain_*`` factories
#: that torchaudio's HuBERT recipe names in its ``model_name`` build the ``hubert_*`` encoders.
def _factory(extractor_mode: str, conv_bias: bool, width: int, layers: int,
             layer_norm_first: bool) -> dict[str, Any]:
    """A factory's architecture fields; every factory's feed-forward is 4 times its width."""
    return dict(extractor_mode=extractor_mode, extractor_conv_bias=conv_bias,
                encoder_embed_dim=width, encoder_num_layers=layers,
                encoder_num_heads=HEADS_BY_WIDTH[width], encoder_ff_interm_features=4 * width,
                encoder_layer_norm_first=layer_norm_first)


FACTORIES: dict[str, dict[str, Any]] = {
    "wav2vec2_base": _factory("group_norm", False, 768, 12, False),
    "wav2vec2_large": _factory("group_norm", False, 1024, 24, False),
    "wav2vec2_large_lv60k": _factory("layer_norm", True, 1024, 24, True),
    "hubert_base": _factory("group_norm", False, 768, 12, False),
    "hubert_large": _factory("layer_norm", False, 1024, 24, True),
    "hubert_xlarge": _factory("layer_norm", False, 1280, 48, True),
}
FACTORIES["hubert_pretrain_base"] = FACTORIES["hubert_base"]
FACTORIES["hubert_pretrain_large"] = FACTORIES["hubert_large"]
FACTORIES["hubert_pretrain_xlarge"] = FACTORIES["hubert_xlarge"]

_ENCODER_RULES: statemap.Rules = statemap.compile_rules((
    (r"^feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(weight|bias)$",
     r"feature_extractor.conv_layers.\1.\2.\3"),
    (r"^encoder\.feature_projection\.(layer_norm|projection)\.(weight|bias)$",
     r"feature_projection.\1.\2"),
    (r"^encoder\.transformer\.pos_conv_embed\.conv\.bias$", "encoder.pos_conv_embed.conv.bias"),
    (r"^encoder\.transformer\.layer_norm\.(weight|bias)$", r"encoder.layer_norm.\1"),
    (r"^encoder\.transformer\.layers\.(\d+)\.attention\.(q|k|v|out)_proj\.(weight|bias)$",
     r"encoder.layers.\1.attention.\2_proj.\3"),
    (r"^encoder\.transformer\.layers\.(\d+)\.(layer_norm|final_layer_norm)\.(weight|bias)$",
     r"encoder.layers.\1.\2.\3"),
    (r"^encoder\.transformer\.layers\.(\d+)\.feed_forward\."
     r"(intermediate_dense|output_dense)\.(weight|bias)$", r"encoder.layers.\1.feed_forward.\2.\3"),
))
_POS = "encoder.transformer.pos_conv_embed.conv."
_POS_G = (_POS + "parametrizations.weight.original0", _POS + "weight_g")
_POS_V = (_POS + "parametrizations.weight.original1", _POS + "weight_v")
_POS_PLAIN = _POS + "weight"
_WAVLM_MARKS = ("in_proj_weight", "in_proj_bias", "rel_attn_embed", "gru_rel_pos")


@dataclass(frozen=True)
class TorchaudioArch:
    """What a torchaudio state dict cannot say about its model; ``None`` means infer it."""

    num_heads: int | None = None
    layer_norm_first: bool | None = None
    conv_strides: tuple[int, ...] | None = None


@dataclass
class TorchaudioWeights:
    """A torchaudio encoder found in a state dict.

    Attributes:
        encoder: the ``Wav2Vec2Model`` weights with the container's prefix removed.
        prefix: that prefix (``""``, ``"wav2vec2."``, ``"model.wav2vec2."`` ...).
        container: what the prefix and heads say the file is (for ``describe()``).
        mask_embedding: ``HuBERTPretrainModel``'s mask embedding, if present.
        dropped: head keys with no place in the bare encoder.
        family: ``hubert`` when the file holds HuBERT's pretraining heads, else ``None``.
    """

    encoder: dict[str, torch.Tensor]
    prefix: str
    container: str
    mask_embedding: torch.Tensor | None
    dropped: list[str]
    family: Family | None


def encoder_prefix(keys: Iterable[str]) -> str | None:
    """The prefix under which ``keys`` hold a torchaudio ``Wav2Vec2Model``, else ``None``.

    Raises:
        SpeechrankError: more than one torchaudio encoder in one state dict.
    """
    keyset = keys if isinstance(keys, (set, frozenset, dict)) else set(keys)
    first, second = ANCHOR_KEYS
    found = sorted(k[: -len(first)] for k in keyset
                   if k.endswith(first) and k[: -len(first)] + second in keyset
                   and (len(k) == len(first) or k[-len(first) - 1] == "."))
    if len(found) > 1:
        raise SpeechrankError(
            f"{len(found)} torchaudio encoders in one state dict (under "
            f"{', '.join(repr(p) for p in found[:3])}); cannot tell which to measure")
    return found[0] if found else None


def state_dict_of(obj: Any) -> Mapping[str, Any] | None:
    """The state dict inside a loaded file: the file itself, Lightning's ``state_dict`` or a
    ``model`` entry (a fairseq file, which has ``cfg`` or ``args`` beside ``model``, is not
    one); ``None`` when none holds a torchaudio encoder."""
    if not isinstance(obj, Mapping):
        return None
    candidates: list[Any] = [obj.get("state_dict")]
    if "cfg" not in obj and "args" not in obj:
        candidates.append(obj.get("model"))
    candidates.append(obj)
    for candidate in candidates:
        if isinstance(candidate, Mapping) and encoder_prefix(
                [k for k in candidate if isinstance(k, str)]) is not None:
            return candidate
    return None


def split_state(state: Mapping[str, Any]) -> TorchaudioWeights:
    """Separate the encoder weights from the heads around them.

    Raises:
        SpeechrankError: no torchaudio encoder, a WavLM encoder, or a key that is neither an
            encoder weight nor a known head.
    """
    keys = [k for k in state if isinstance(k, str)]
    prefix = encoder_prefix(keys)
    if prefix is None:
        raise SpeechrankError(
            "not a torchaudio wav2vec 2.0 / HuBERT state dict (no "
            f"{ANCHOR_KEYS[0]} beside {ANCHOR_KEYS[1]})")
    outer = prefix.removesuffix("wav2vec2.") if prefix.endswith("wav2vec2.") else None
    encoder: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    mask: torch.Tensor | None = None
    has_logits = False
    for key in keys:
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise SpeechrankError(f"'{key}' in the state dict is a {type(value).__name__}, "
                                  "not a tensor")
        if key.startswith(prefix) and not re.fullmatch(r"aux\.(weight|bias)",
                                                       key[len(prefix):]):
            rest = key[len(prefix):]
            if any(mark in rest for mark in _WAVLM_MARKS):
                raise SpeechrankError(
                    f"'{key}' is WavLM's attention (torchaudio wavlm_model); only wav2vec 2.0 "
                    "and HuBERT torchaudio models are mapped")
            encoder[rest] = value
        elif outer is not None and key == outer + "mask_generator.mask_embedding":
            mask = value
        elif outer is not None and key.startswith(outer + "logit_generator."):
            dropped.append(key)
            has_logits = True
        elif re.search(r"(^|\.)aux\.(weight|bias)$", key) or (
                key.endswith("global_step") and value.numel() == 1):
            dropped.append(key)  # CTC head; ESPnet's step-counter buffer
        else:
            raise SpeechrankError(
                f"unexpected weight '{key}' beside the torchaudio encoder under '{prefix}'")
    if outer is None:
        container = "Wav2Vec2Model state dict" if not prefix else f"Wav2Vec2Model under {prefix!r}"
    else:
        container = ("HuBERTPretrainModel" if not outer
                     else f"HuBERTPretrainModel under {outer!r}")
    family: Family | None = "hubert" if has_logits or mask is not None else None
    return TorchaudioWeights(encoder, prefix, container, mask, dropped, family)


def _plain(value: Any) -> Any:
    """Hyper-parameter values as plain Python (lists for tuples), for comparison."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _declared(hyper: Mapping[str, Any] | None,
              declared_by: str = "hyper_parameters") -> tuple[dict[str, Any], str]:
    """Factory arguments a checkpoint declares: its own fields over a named factory's."""
    if not hyper:
        return {}, ""
    fields: dict[str, Any] = {}
    where = declared_by
    name = hyper.get("model_name")
    if isinstance(name, str) and name in FACTORIES:
        fields.update(FACTORIES[name])
        where = f"{declared_by} model_name {name!r} (torchaudio factory)"
    for key in ("extractor_mode", "extractor_conv_layer_config", "extractor_conv_bias",
                "encoder_embed_dim", "encoder_num_layers", "encoder_num_heads",
                "encoder_ff_interm_features", "encoder_pos_conv_kernel",
                "encoder_pos_conv_groups", "encoder_layer_norm_first"):
        if hyper.get(key) is not None:
            fields[key] = _plain(hyper[key])
    return fields, where


def infer_arch(encoder: Mapping[str, torch.Tensor], *, arch: TorchaudioArch | None = None,
               hyper_parameters: Mapping[str, Any] | None = None,
               declared_by: str = "hyper_parameters"
               ) -> tuple[dict[str, Any], dict[str, str]]:
    """The model's fields (fairseq names, for :func:`~speechrank.encoders.fairseq.hf_config`)
    from the weights' shapes, and where each value came from.

    Raises:
        SpeechrankError: inconsistent shapes, or a value the weights cannot give and nothing
            else declares (strides of a non-default conv layout, heads of an unknown width).
    """
    arch = arch or TorchaudioArch()
    declared = _Declared(*_declared(hyper_parameters, declared_by))
    source: dict[str, str] = {}
    conv, biased = _conv_layers(encoder)
    mode = _extractor_mode(encoder, len(conv), declared.fields)
    source["extractor_mode"] = "weights (which conv layers carry a norm)"
    strides = _conv_strides(conv, arch, declared, source)
    width, layers, ffn, pos_kernel, pos_groups = _transformer_shape(encoder, conv)
    for name in ("encoder_embed_dim", "encoder_layers", "encoder_ffn_embed_dim",
                 "conv_channels_and_kernels", "conv_bias", "conv_pos", "conv_pos_groups"):
        source[name] = "weights (shapes)"

    checks = {"extractor_mode": mode, "extractor_conv_bias": biased,
              "encoder_embed_dim": width, "encoder_num_layers": layers,
              "encoder_ff_interm_features": ffn, "encoder_pos_conv_kernel": pos_kernel,
              "encoder_pos_conv_groups": pos_groups}
    for name, value in checks.items():
        if name in declared.fields and declared.fields[name] != value:
            raise SpeechrankError(f"{declared.where} declares {name}={declared.fields[name]!r}, "
                                  f"the weights have {value!r}")
    heads = _num_heads(width, arch, declared, source)
    first = _layer_norm_first(mode, arch, declared, source)

    layout_text = repr([(o, k, s) for (o, _i, k), s in zip(conv, strides, strict=True)])
    fields = {
        "encoder_embed_dim": width, "encoder_layers": layers, "encoder_attention_heads": heads,
        "encoder_ffn_embed_dim": ffn, "activation_fn": "gelu",
        "conv_feature_layers": layout_text,
        "conv_bias": biased, "extractor_mode": "layer_norm" if mode == "layer_norm"
        else "default", "conv_pos": pos_kernel, "conv_pos_groups": pos_groups,
        "layer_norm_first": first,
    }
    return fields, source


@dataclass(frozen=True)
class _Declared:
    """Architecture fields a checkpoint declares beside its weights, and who declares them."""

    fields: dict[str, Any]
    where: str


def _need(encoder: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in encoder:
        raise SpeechrankError(f"the torchaudio encoder has no '{key}'")
    return encoder[key]


def _conv_layers(encoder: Mapping[str, torch.Tensor]
                 ) -> tuple[list[tuple[int, int, int]], bool]:
    """The feature extractor's conv layers as (out, in, kernel), chained, and whether they
    have a bias (all or none)."""
    conv: list[tuple[int, int, int]] = []
    while f"feature_extractor.conv_layers.{len(conv)}.conv.weight" in encoder:
        w = encoder[f"feature_extractor.conv_layers.{len(conv)}.conv.weight"]
        if w.ndim != 3:
            raise SpeechrankError(f"conv layer {len(conv)} weight has shape {tuple(w.shape)}")
        conv.append((int(w.shape[0]), int(w.shape[1]), int(w.shape[2])))
    for i, (_out, inp, _k) in enumerate(conv):
        if inp != (1 if i == 0 else conv[i - 1][0]):
            raise SpeechrankError(f"conv layer {i} takes {inp} channels, not "
                                  f"{1 if i == 0 else conv[i - 1][0]}")
    biased = [f"feature_extractor.conv_layers.{i}.conv.bias" in encoder
              for i in range(len(conv))]
    if len(set(biased)) != 1:
        raise SpeechrankError("some conv layers have a bias and others not")
    return conv, biased[0]


def _extractor_mode(encoder: Mapping[str, torch.Tensor], n_conv: int,
                    declared: Mapping[str, Any]) -> str:
    """``group_norm`` (a norm on conv 0 only) or ``layer_norm`` (on every conv)."""
    normed = [i for i in range(n_conv)
              if f"feature_extractor.conv_layers.{i}.layer_norm.weight" in encoder]
    if normed == [0] and n_conv > 1:
        return "group_norm"
    if normed == list(range(n_conv)) and n_conv > 1:
        return "layer_norm"
    if normed == [0]:
        return str(declared.get("extractor_mode", "group_norm"))
    raise SpeechrankError(
        f"conv layers {normed} carry a norm: neither group_norm (conv 0 only) nor "
        "layer_norm (every conv)")


def _conv_strides(conv: list[tuple[int, int, int]], arch: TorchaudioArch, declared: _Declared,
                  source: dict[str, str]) -> tuple[int, ...]:
    """The conv strides (the weights do not hold them): given, declared, or the default
    layout's when the kernels are the default's."""
    kernels = tuple(k for _o, _i, k in conv)
    strides: tuple[int, ...]
    layout = declared.fields.get("extractor_conv_layer_config")
    if arch.conv_strides is not None:
        strides, source["conv_strides"] = tuple(arch.conv_strides), "argument"
    elif layout is not None:
        try:
            strides = tuple(int(s) for _c, _k, s in layout)
            given = tuple((int(c), int(k)) for c, k, _s in layout)
        except (TypeError, ValueError):
            raise SpeechrankError(
                f"extractor_conv_layer_config {layout!r} is not a list of "
                "(channels, kernel, stride)") from None
        have = tuple((o, k) for o, _i, k in conv)
        if given != have:
            raise SpeechrankError(f"{declared.where} declares conv (channels, kernel) {given}, "
                                  f"the weights have {have}")
        source["conv_strides"] = declared.where
    elif kernels == tuple(k for k, _s in DEFAULT_CONV_LAYOUT):
        strides = tuple(s for _k, s in DEFAULT_CONV_LAYOUT)
        source["conv_strides"] = "torchaudio's default layout (kernels 10,3,3,3,3,2,2)"
    else:
        raise SpeechrankError(
            f"conv kernels {kernels} are not torchaudio's default layout, and the strides are "
            "not in the weights; give them (TorchaudioArch.conv_strides, or "
            "extractor_conv_layer_config in the checkpoint's hyper_parameters)")
    if len(strides) != len(conv):
        raise SpeechrankError(f"{len(strides)} conv strides for {len(conv)} conv layers")
    return strides


def _transformer_shape(encoder: Mapping[str, torch.Tensor], conv: list[tuple[int, int, int]]
                       ) -> tuple[int, int, int, int, int]:
    """(width, layers, feed-forward width, positional conv kernel, its groups)."""
    proj = _need(encoder, "encoder.feature_projection.projection.weight")
    width, conv_out = int(proj.shape[0]), int(proj.shape[1])
    if conv_out != conv[-1][0]:
        raise SpeechrankError(f"the feature projection takes {conv_out} channels, the last "
                              f"conv gives {conv[-1][0]}")
    pos = next((encoder[k] for k in (*_POS_V, _POS_PLAIN) if k in encoder), None)
    if pos is None or pos.ndim != 3 or pos.shape[0] != width or width % pos.shape[1]:
        raise SpeechrankError("the positional convolution's weight is missing or misshapen")
    pos_kernel, pos_groups = int(pos.shape[2]), width // int(pos.shape[1])
    layers = 0
    while f"encoder.transformer.layers.{layers}.attention.q_proj.weight" in encoder:
        layers += 1
    if layers == 0:
        raise SpeechrankError("the torchaudio encoder has no transformer layers")
    ffn = int(_need(encoder, "encoder.transformer.layers.0.feed_forward.intermediate_dense."
                             "weight").shape[0])
    return width, layers, ffn, pos_kernel, pos_groups


def _num_heads(width: int, arch: TorchaudioArch, declared: _Declared,
               source: dict[str, str]) -> int:
    """Attention heads (not in the weights): given, declared, or the factories' for the
    width."""
    if arch.num_heads is not None:
        heads, source["num_heads"] = int(arch.num_heads), "argument"
    elif declared.fields.get("encoder_num_heads") is not None:
        heads, source["num_heads"] = int(declared.fields["encoder_num_heads"]), declared.where
    elif width in HEADS_BY_WIDTH:
        heads = HEADS_BY_WIDTH[width]
        source["num_heads"] = f"torchaudio factories (width {width} has {heads} heads)"
    else:
        raise SpeechrankError(
            f"the number of attention heads is not in the weights and width {width} is no "
            "torchaudio factory's; give it (TorchaudioArch.num_heads, or encoder_num_heads in "
            "the checkpoint's hyper_parameters)")
    if heads < 1 or width % heads:
        raise SpeechrankError(f"{heads} attention heads do not divide width {width}")
    return heads


def _layer_norm_first(mode: str, arch: TorchaudioArch, declared: _Declared,
                      source: dict[str, str]) -> bool:
    if arch.layer_norm_first is not None:
        source["layer_norm_first"] = "argument"
        return bool(arch.layer_norm_first)
    if declared.fields.get("encoder_layer_norm_first") is not None:
        source["layer_norm_first"] = declared.where
        return bool(declared.fields["encoder_layer_norm_first"])
    source["layer_norm_first"] = ("torchaudio factories (every layer_norm extractor is "
                                  "layer_norm_first, every group_norm one is not)")
    return mode == "layer_norm"


def _weight_norm_factors(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(g, v)`` of ``weight_norm(dim=2)`` for a plain weight: g is the norm over every
    dimension but the kernel's, v the weight itself."""
    g = weight.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
    return g, weight


def map_state_dict(encoder: Mapping[str, torch.Tensor], target_keys: set[str],
                   mask_embedding: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """torchaudio encoder weights renamed for the Hugging Face model.

    Raises:
        SpeechrankError: a key with no Hugging Face counterpart, or a Hugging Face weight the
            file lacks.
    """
    pos_g, pos_v = statemap.pos_conv_targets(target_keys)
    if pos_g is None or pos_v is None:
        raise SpeechrankError("this transformers build has no weight-normed pos_conv")
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in encoder.items():
        if key in _POS_G:
            mapped[pos_g] = tensor
            continue
        if key in _POS_V:
            mapped[pos_v] = tensor
            continue
        if key == _POS_PLAIN:
            mapped[pos_g], mapped[pos_v] = _weight_norm_factors(tensor)
            continue
        name = statemap.rename(key, _ENCODER_RULES)
        if name is None:
            raise SpeechrankError(f"unexpected weight '{key}' in the torchaudio encoder")
        mapped[name] = tensor
    if mask_embedding is not None and "masked_spec_embed" in target_keys:
        mapped["masked_spec_embed"] = mask_embedding
    statemap.check_complete(mapped, target_keys, toolkit="torchaudio",
                   holder="the torchaudio state dict")
    return mapped


def build_model(state: Mapping[str, Any], *, arch: TorchaudioArch | None = None,
                hyper_parameters: Mapping[str, Any] | None = None,
                family: Family | None = None, declared_by: str = "hyper_parameters"
                ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The Hugging Face model holding a torchaudio state dict's encoder, and what was read.

    ``family`` (else the file's HuBERT heads, else ``hyper_parameters['model_name']``) picks
    ``HubertModel`` or ``Wav2Vec2Model``; a bare ``Wav2Vec2Model`` state dict does not say
    which objective trained it, and both classes compute the same hidden states from it.
    """
    from transformers import HubertModel, Wav2Vec2Model

    weights = split_state(state)
    fields, source = infer_arch(weights.encoder, arch=arch, hyper_parameters=hyper_parameters,
                                declared_by=declared_by)
    name = str((hyper_parameters or {}).get("model_name") or "").lower()
    chosen: Family
    if family is not None:
        chosen, family_from = family, "argument"
    elif weights.family is not None:
        chosen, family_from = weights.family, "HuBERT pretraining heads in the file"
    elif "hubert" in name or "wav2vec2" in name:
        chosen = "hubert" if "hubert" in name else "wav2vec2"
        family_from = "hyper_parameters model_name"
    else:
        chosen, family_from = "wav2vec2", ("not recorded in a bare Wav2Vec2Model state dict "
                                           "(HuBERT and wav2vec 2.0 share it)")
    config = hf_config(chosen, fields)
    model = (HubertModel if chosen == "hubert" else Wav2Vec2Model)(config)
    mapped = map_state_dict(weights.encoder, set(model.state_dict()), weights.mask_embedding)
    statemap.load_mapped(model, mapped)
    info = {"kind": "torchaudio", "container": weights.container, "prefix": weights.prefix,
            "family": chosen, "family_from": family_from,
            "num_heads": int(config.num_attention_heads),
            "layer_norm_first": bool(config.do_stable_layer_norm),
            "conv_layers": fields["conv_feature_layers"], "inferred": source,
            "dropped_keys": len(weights.dropped)}
    return model, info


@dataclass
class TorchaudioCheckpoint:
    """A torchaudio file as read: its state dict and, for a Lightning checkpoint, the
    ``global_step``, ``epoch`` and plain ``hyper_parameters`` beside it."""

    path: Path
    state: Mapping[str, Any]
    lightning: bool
    global_step: int | None
    epoch: int | None
    hyper_parameters: dict[str, Any] | None


def read_checkpoint(path: str | Path) -> TorchaudioCheckpoint:
    """Read a torchaudio state dict or Lightning ``.ckpt`` (``weights_only``, no class allowed).

    Raises:
        SpeechrankError: unreadable, refused class, or no torchaudio encoder inside.
    """
    path = Path(path)
    obj = load_weights_only(path, allowed=())
    try:
        state = state_dict_of(obj)
    except SpeechrankError as err:
        raise SpeechrankError(f"{path}: {err}") from None
    if state is None:
        raise SpeechrankError(
            f"{path}: not a torchaudio wav2vec 2.0 / HuBERT checkpoint (no "
            f"{ANCHOR_KEYS[0]} beside {ANCHOR_KEYS[1]})")
    lightning = isinstance(obj, Mapping) and state is obj.get("state_dict")

    def whole(value: Any) -> int | None:
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else None

    hyper = obj.get("hyper_parameters") if lightning else None
    return TorchaudioCheckpoint(
        path=path, state=state, lightning=lightning,
        global_step=whole(obj.get("global_step")) if lightning else None,
        epoch=whole(obj.get("epoch")) if lightning else None,
        hyper_parameters=dict(hyper) if isinstance(hyper, Mapping) else None)


def load_torchaudio_model(path: str | Path, *, arch: TorchaudioArch | None = None
                          ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The Hugging Face model holding a torchaudio file's encoder, and what was read.

    The returned info adds the input normalisation default: off for a Lightning checkpoint
    (torchaudio's HuBERT recipe feeds ``torchaudio.load`` waveforms as they are), otherwise
    ``layer_norm_first`` (torchaudio's bundles normalise exactly their layer_norm_first models).
    """
    ckpt = read_checkpoint(path)
    try:
        model, info = build_model(ckpt.state, arch=arch, hyper_parameters=ckpt.hyper_parameters)
    except SpeechrankError as err:
        raise SpeechrankError(f"{ckpt.path}: {err}") from None
    hyper_norm = (ckpt.hyper_parameters or {}).get("normalize")
    if isinstance(hyper_norm, bool):
        normalize, norm_from = hyper_norm, "hyper_parameters normalize"
    elif ckpt.lightning:
        normalize, norm_from = False, ("torchaudio's HuBERT recipe trains on unnormalised "
                                       "waveforms")
    else:
        normalize = info["layer_norm_first"]
        norm_from = "torchaudio bundles normalise exactly their layer_norm_first models"
    info.update({"path": str(ckpt.path.resolve()), "lightning": ckpt.lightning,
                 "global_step": ckpt.global_step, "epoch": ckpt.epoch,
                 "normalize": normalize, "normalize_from": norm_from, "sample_rate": 16000})
    return model, info


def load_torchaudio_encoder(path: str | Path, *, device: torch.device | str = "cpu",
                            dtype: torch.dtype | None = None, normalize: bool | None = None,
                            name: str | None = None, arch: TorchaudioArch | None = None) -> Any:
    """A :class:`~speechrank.encoders.huggingface.HuggingFaceEncoder` for a torchaudio file."""
    from speechrank.encoders.huggingface import HuggingFaceEncoder

    model, info = load_torchaudio_model(path, arch=arch)
    if normalize is None:
        do_normalize, norm_source = info["normalize"], info["normalize_from"]
    else:
        do_normalize, norm_source = bool(normalize), "user (normalize argument)"
    return HuggingFaceEncoder(model, name=name or str(path), sample_rate=info["sample_rate"],
                              do_normalize=do_normalize, normalize_source=norm_source,
                              source=info, device=device, dtype=dtype)
