"""fairseq HuBERT and wav2vec 2.0 checkpoints (``.pt``) as MODEL, without fairseq.

The original HuBERT (Hsu et al., 2021) and wav2vec 2.0 (Baevski et al., 2020) checkpoints, and
many research runs, are fairseq ``.pt`` files: a pickle holding the state dict under ``model``
and the configuration under ``cfg`` (a plain nested dict in Hydra-era fairseq) or ``args``
(an ``argparse.Namespace`` in older releases). This module reads such a file with
``torch.load(weights_only=True)``, so no code in the file ever runs: the only classes it may
construct beyond tensors and containers are those in :data:`ALLOWED_GLOBALS`. Any other class
(omegaconf's ``DictConfig``, fairseq's ``Dictionary``, or anything hostile) is refused with one
line naming it, found with ``torch.serialization.get_unsafe_globals_in_checkpoint`` before the
file is unpickled.

The weights are then mapped onto the matching Hugging Face model (``HubertModel`` or
``Wav2Vec2Model``) built from a configuration derived from the fairseq fields:

============================================  ==================================================
fairseq                                       Hugging Face
============================================  ==================================================
``feature_extractor.conv_layers.i.0``         ``feature_extractor.conv_layers.i.conv``
``feature_extractor.conv_layers.0.2``         ``feature_extractor.conv_layers.0.layer_norm``
                                              (group norm, ``extractor_mode=default``)
``feature_extractor.conv_layers.i.2.1``       ``feature_extractor.conv_layers.i.layer_norm``
                                              (``extractor_mode=layer_norm``)
``layer_norm``                                ``feature_projection.layer_norm``
``post_extract_proj``                         ``feature_projection.projection`` (identity when
                                              fairseq has none: CNN width = model width)
``encoder.pos_conv.0`` (``weight_g/v`` or     ``encoder.pos_conv_embed.conv`` (same weight-norm
``parametrizations.weight.original0/1``)      factors, ``dim=2``)
``encoder.layers.i.self_attn.{q,k,v,out}_proj``  ``encoder.layers.i.attention.*``
``encoder.layers.i.self_attn_layer_norm``     ``encoder.layers.i.layer_norm``
``encoder.layers.i.fc1`` / ``fc2``            ``encoder.layers.i.feed_forward.intermediate_dense``
                                              / ``output_dense``
``encoder.layers.i.final_layer_norm``,        same names
``encoder.layer_norm``
``mask_emb``                                  ``masked_spec_embed``
============================================  ==================================================

The pretraining heads (HuBERT's ``label_embs_concat``/``final_proj``, wav2vec 2.0's
``quantizer``/``project_q``/``final_proj``) have no place in the bare encoder and are dropped,
counted in ``describe()``. A fine-tuned checkpoint (``w2v_encoder.w2v_model.*`` with the
pretraining fields under ``w2v_args``) loads its encoder and drops the CTC projection. Any
other key, or an encoder weight the file lacks, is refused: a partly random model is never
measured. ``layer_norm_first`` (the "large" models) maps to ``do_stable_layer_norm``; the key
names are the same in both variants.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from speechrank.encoders import statemap
from speechrank.errors import SpeechrankError

Family = Literal["hubert", "wav2vec2"]

#: The only non-tensor classes a fairseq checkpoint may make ``torch.load`` construct.
ALLOWED_GLOBALS: tuple[type, ...] = (argparse.Namespace,)

#: fairseq's default ``conv_feature_layers`` (every base and large model uses it).
DEFAULT_CONV_LAYERS = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"

#: Prefixes of pretraining (or fine-tuning) heads that the bare encoder does not have.
DROPPED_PREFIXES: tuple[str, ...] = (
    "label_embs_concat", "final_proj.", "quantizer.", "project_q.", "project_inp.",
    "target_glu.", "proj.",
)
_FINETUNED_PREFIX = "w2v_encoder.w2v_model."

_LAYER_RULES: statemap.Rules = statemap.compile_rules((
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)$",
     r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)$",
     r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)$",
     r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"^layer_norm\.(weight|bias)$", r"feature_projection.layer_norm.\1"),
    (r"^post_extract_proj\.(weight|bias)$", r"feature_projection.projection.\1"),
    (r"^encoder\.pos_conv\.0\.bias$", "encoder.pos_conv_embed.conv.bias"),
    (r"^encoder\.layer_norm\.(weight|bias)$", r"encoder.layer_norm.\1"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)$",
     r"encoder.layers.\1.attention.\2_proj.\3"),
    (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)$",
     r"encoder.layers.\1.layer_norm.\2"),
    (r"^encoder\.layers\.(\d+)\.fc1\.(weight|bias)$",
     r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"^encoder\.layers\.(\d+)\.fc2\.(weight|bias)$",
     r"encoder.layers.\1.feed_forward.output_dense.\2"),
    (r"^encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)$",
     r"encoder.layers.\1.final_layer_norm.\2"),
    (r"^mask_emb$", "masked_spec_embed"),
))
_POS_G = ("encoder.pos_conv.0.weight_g", "encoder.pos_conv.0.parametrizations.weight.original0")
_POS_V = ("encoder.pos_conv.0.weight_v", "encoder.pos_conv.0.parametrizations.weight.original1")


def load_weights_only(path: str | Path, allowed: tuple[type, ...] = ALLOWED_GLOBALS, *,
                      mmap: bool = False) -> Any:
    """Unpickle ``path`` with ``weights_only=True``, letting it construct only tensors,
    containers and the classes in ``allowed``; any other class is refused by name before the
    file is unpickled (``torch.serialization.get_unsafe_globals_in_checkpoint``).

    ``mmap=True`` maps the tensors instead of reading them (zip-format files; an older
    file is read whole): what reading a checkpoint's metadata costs then is its pickle.

    Raises:
        SpeechrankError: the file is unreadable, or holds a class outside ``allowed`` (named).
    """
    path = Path(path)
    names = frozenset(f"{cls.__module__}.{cls.__qualname__}" for cls in allowed)
    allowed_text = ", ".join(sorted(names)) or "none"
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # legacy (non-zip) files: the weights_only load decides below
        unsafe = []
    refused = [name for name in unsafe if name not in names]
    if refused:
        raise SpeechrankError(
            f"{path}: refusing to unpickle class {refused[0]} (allowed: {allowed_text}); "
            "re-save the checkpoint with plain dict/list values")
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return _load(path, mmap)
    except Exception as err:  # any unpickling failure: a bad file
        text = str(err)
        match = re.search(r"GLOBAL ([\w.]+)", text)
        if match:
            raise SpeechrankError(
                f"{path}: refusing to unpickle class {match.group(1)} "
                f"(allowed: {allowed_text})") from None
        first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
        raise SpeechrankError(f"{path}: cannot read the checkpoint ({first})") from None


def read_checkpoint(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """Unpickle a fairseq checkpoint with ``weights_only=True`` and :data:`ALLOWED_GLOBALS`
    (:func:`load_weights_only`).

    Raises:
        SpeechrankError: the file is unreadable, holds a class outside the allowlist (named),
            or has no ``model`` state dict.
    """
    state = load_weights_only(path, mmap=mmap)
    if not isinstance(state, dict) or not isinstance(state.get("model"), Mapping):
        raise SpeechrankError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    return state


def _load(path: Path, mmap: bool) -> Any:
    if mmap:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # a legacy (non-zip) file cannot be mapped
            if "mmap" not in str(err):
                raise
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, argparse.Namespace):
        return dict(vars(value))
    if isinstance(value, Mapping):
        return dict(value)
    return {}


def checkpoint_fields(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(model fields, task fields, where they came from) of a checkpoint's configuration.

    A fine-tuned checkpoint's encoder fields live under ``w2v_args``; they are returned instead.
    """
    cfg = state.get("cfg")
    if isinstance(cfg, Mapping) and cfg.get("model") is not None:
        model, task, where = _as_dict(cfg.get("model")), _as_dict(cfg.get("task")), "cfg"
    elif state.get("args") is not None:
        args = _as_dict(state["args"])
        model, task, where = args, args, "args"
    else:
        raise SpeechrankError("the checkpoint has no 'cfg' or 'args' configuration")
    inner = model.get("w2v_args")
    if inner is not None:
        inner_d = _as_dict(inner)
        if "model" in inner_d:
            return _as_dict(inner_d["model"]), _as_dict(inner_d.get("task")) or task, where
        return inner_d, inner_d, where
    return model, task, where


def parse_conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """Read fairseq's ``conv_feature_layers`` string without ``eval``.

    Only list and tuple literals of integers joined by ``+`` and repeated by ``* int`` are
    accepted, e.g. ``"[(512, 10, 5)] + [(512, 3, 2)] * 4"``.
    """
    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(type(node).__name__)

    try:
        layers = value(ast.parse(spec, mode="eval").body)
        out = [(int(d), int(k), int(s)) for d, k, s in layers]
    except (SyntaxError, ValueError, TypeError) as err:
        raise SpeechrankError(f"cannot read conv_feature_layers {spec!r} ({err})") from None
    if not out:
        raise SpeechrankError("conv_feature_layers is empty")
    return out


def detect_family(model_fields: Mapping[str, Any], keys: set[str]) -> Family:
    """``hubert`` or ``wav2vec2`` from the model's ``_name``/``arch``, else from its heads."""
    name = str(model_fields.get("_name") or model_fields.get("arch") or "").lower()
    if "hubert" in name or "label_embs_concat" in keys:
        return "hubert"
    if name.startswith("wav2vec") or any(k.startswith(("quantizer.", "project_q.")) for k in keys):
        return "wav2vec2"
    if name:
        raise SpeechrankError(
            f"fairseq model '{name}' is not a HuBERT or wav2vec 2.0 model")
    raise SpeechrankError("cannot tell whether this is a HuBERT or wav2vec 2.0 checkpoint")


def hf_config(family: Family, fields: Mapping[str, Any]) -> Any:
    """The Hugging Face configuration matching fairseq ``fields`` (fairseq's defaults fill gaps)."""
    from transformers import HubertConfig, Wav2Vec2Config

    def get(name: str, default: Any) -> Any:
        value = fields.get(name)
        return default if value is None else value

    if int(get("pos_conv_depth", 1)) != 1:
        raise SpeechrankError("pos_conv_depth > 1 (data2vec-style positional convs) is not "
                              "a HuBERT/wav2vec 2.0 layout")
    act = str(get("activation_fn", "gelu"))
    if act not in ("gelu", "relu"):
        raise SpeechrankError(f"activation_fn '{act}' is not supported (gelu, relu)")
    mode = str(get("extractor_mode", "default"))
    if mode not in ("default", "layer_norm"):
        raise SpeechrankError(f"extractor_mode '{mode}' is not supported (default, layer_norm)")
    conv = parse_conv_layers(str(get("conv_feature_layers", DEFAULT_CONV_LAYERS)))
    common = dict(
        hidden_size=int(get("encoder_embed_dim", 768)),
        num_hidden_layers=int(get("encoder_layers", 12)),
        num_attention_heads=int(get("encoder_attention_heads", 12)),
        intermediate_size=int(get("encoder_ffn_embed_dim", 3072)),
        hidden_act=act,
        conv_dim=[c[0] for c in conv], conv_kernel=[c[1] for c in conv],
        conv_stride=[c[2] for c in conv], conv_bias=bool(get("conv_bias", False)),
        feat_extract_norm="layer" if mode == "layer_norm" else "group",
        feat_extract_activation="gelu",
        num_conv_pos_embeddings=int(get("conv_pos", 128)),
        num_conv_pos_embedding_groups=int(get("conv_pos_groups", 16)),
        do_stable_layer_norm=bool(get("layer_norm_first", False)),
        layer_norm_eps=1e-5,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        feat_proj_dropout=0.0, layerdrop=0.0,
    )
    if family == "hubert":
        return HubertConfig(**common, feat_proj_layer_norm=True, conv_pos_batch_norm=False)
    return Wav2Vec2Config(**common)


def map_state_dict(state: Mapping[str, torch.Tensor], target_keys: set[str],
                   hidden_size: int, conv_out: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """fairseq encoder weights renamed for the Hugging Face model; also the dropped keys.

    Raises:
        SpeechrankError: a key that is neither an encoder weight nor a known head, or an
            encoder weight missing from the file.
    """
    mapped: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    pos_g, pos_v = statemap.pos_conv_targets(target_keys)
    for raw_key, tensor in state.items():
        key = raw_key.removeprefix(_FINETUNED_PREFIX)
        if raw_key.startswith("w2v_encoder.") and key == raw_key:
            key = raw_key.removeprefix("w2v_encoder.")  # w2v_encoder.proj: the CTC head
        if not isinstance(tensor, torch.Tensor):
            continue
        if key.startswith(DROPPED_PREFIXES):
            dropped.append(raw_key)
            continue
        if key in _POS_G or key in _POS_V:
            target = pos_g if key in _POS_G else pos_v
            if target is None:
                raise SpeechrankError("this transformers build has no weight-normed pos_conv")
            mapped[target] = tensor
            continue
        name = statemap.rename(key, _LAYER_RULES)
        if name is None:
            raise SpeechrankError(f"unexpected weight '{raw_key}' in the fairseq checkpoint")
        mapped[name] = tensor
    if ("feature_projection.projection.weight" not in mapped and hidden_size == conv_out
            and "post_extract_proj.weight" not in state):
        # fairseq has no projection when the CNN is as wide as the transformer.
        mapped["feature_projection.projection.weight"] = torch.eye(hidden_size)
        mapped["feature_projection.projection.bias"] = torch.zeros(hidden_size)
    statemap.check_complete(mapped, target_keys, toolkit="fairseq",
                            holder="the fairseq checkpoint")
    return mapped, dropped


def load_fairseq_model(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The Hugging Face model holding a fairseq checkpoint's encoder, and what was read.

    The returned info holds the family, where the config came from, the task's ``normalize``
    and ``sample_rate`` and the dropped head keys.
    """
    from transformers import HubertModel, Wav2Vec2Model

    path = Path(path)
    state = read_checkpoint(path)
    weights = state["model"]
    try:
        model_fields, task_fields, where = checkpoint_fields(state)
        stripped = {k.removeprefix(_FINETUNED_PREFIX) for k in weights}
        family = detect_family(model_fields, stripped)
        config = hf_config(family, model_fields)
        model = (HubertModel if family == "hubert" else Wav2Vec2Model)(config)
        target = set(model.state_dict())
        mapped, dropped = map_state_dict(weights, target, config.hidden_size,
                                         int(config.conv_dim[-1]))
    except SpeechrankError as err:
        raise SpeechrankError(f"{path}: {err}") from None
    statemap.load_mapped(model, mapped, where=str(path))
    info = {"kind": "fairseq", "path": str(path.resolve()), "family": family,
            "config_from": where, "normalize": bool(task_fields.get("normalize") or False),
            "sample_rate": int(task_fields.get("sample_rate") or 16000),
            "layer_norm_first": bool(config.do_stable_layer_norm),
            "dropped_keys": len(dropped)}
    return model, info


def load_fairseq_encoder(path: str | Path, *, device: torch.device | str = "cpu",
                         dtype: torch.dtype | None = None,
                         normalize: bool | None = None, name: str | None = None) -> Any:
    """A :class:`~speechrank.encoders.huggingface.HuggingFaceEncoder` for a fairseq ``.pt``.

    The input normalisation follows the checkpoint's task ``normalize`` field (fairseq's
    default, off, when absent: the base models were trained without it, the large ones with
    it); ``normalize`` overrides it.
    """
    from speechrank.encoders.huggingface import HuggingFaceEncoder

    model, info = load_fairseq_model(path)
    if normalize is None:
        do_normalize, norm_source = info["normalize"], "fairseq task normalize field"
    else:
        do_normalize, norm_source = bool(normalize), "user (normalize argument)"
    return HuggingFaceEncoder(model, name=name or str(path), sample_rate=info["sample_rate"],
                              do_normalize=do_normalize, normalize_source=norm_source,
                              source=info, device=device, dtype=dtype)
