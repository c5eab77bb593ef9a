"""ESPnet HuBERT pretraining checkpoints as MODEL, without ESPnet.

ESPnet's ``hubert`` task (``espnet2/tasks/hubert.py``) builds one of two encoders and keeps it as
the model's ``encoder`` (``espnet2/hubert/espnet_model.py``); its trainer saves
``model.state_dict()`` as ``<N>epoch.pth`` beside the run's ``config.yaml``:

- ``encoder: torchaudio_hubert`` (``TorchAudioHuBERTPretrainEncoder`` in
  ``espnet2/asr/encoder/hubert_encoder.py``) holds torchaudio's ``HuBERTPretrainModel`` as
  ``hubert_pretrain_model``: keys ``encoder.hubert_pretrain_model.wav2vec2.*`` plus a
  ``encoder.global_step`` buffer, mapped by :mod:`speechrank.encoders.torchaudio`. Its
  ``encoder_conf`` is torchaudio's factory arguments over the encoder's defaults (a HuBERT base);
- ``encoder: hubert_pretrain`` (``FairseqHubertPretrainEncoder``) holds fairseq's ``HubertModel``
  as ``encoder``: keys ``encoder.encoder.*`` under fairseq's names, mapped by
  :mod:`speechrank.encoders.fairseq`. Its ``encoder_conf`` renames four fields (``output_size``,
  ``linear_units``, ``attention_heads``, ``num_blocks``) over its own defaults (1024, 1024, 12,
  12) and passes the rest to fairseq's ``HubertConfig``.

``config.yaml`` is plain YAML (ESPnet dumps its arguments), read with ``yaml.safe_load``. The
input must be the raw waveform (``frontend: null``); ``normalize: null`` feeds it as loaded,
``utterance_mvn`` with ``norm_vars: true`` is speechrank's per-utterance normalisation, and any
other normaliser (``utterance_mvn``'s default removes the mean only; ``global_mvn`` needs its
statistics file) is refused unless the caller sets the normalisation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from speechrank.errors import SpeechrankError

CONFIG_FILE = "config.yaml"
Flavour = Literal["torchaudio_hubert", "hubert_pretrain"]

#: ``TorchAudioHuBERTPretrainEncoder.__init__`` defaults (architecture fields only).
TORCHAUDIO_DEFAULTS: dict[str, Any] = {
    "extractor_mode": "group_norm",
    "extractor_conv_layer_config": [[512, 10, 5]] + [[512, 3, 2]] * 4 + [[512, 2, 2]] * 2,
    "extractor_conv_bias": False, "encoder_embed_dim": 768, "encoder_pos_conv_kernel": 128,
    "encoder_pos_conv_groups": 16, "encoder_num_layers": 12, "encoder_num_heads": 12,
    "encoder_ff_interm_features": 3072, "encoder_layer_norm_first": False,
}
#: ``FairseqHubertPretrainEncoder``'s own fields -> fairseq ``HubertConfig`` fields, defaults.
FAIRSEQ_RENAMES: dict[str, tuple[str, int]] = {
    "output_size": ("encoder_embed_dim", 1024), "linear_units": ("encoder_ffn_embed_dim", 1024),
    "attention_heads": ("encoder_attention_heads", 12), "num_blocks": ("encoder_layers", 12),
}
_FAIRSEQ_PREFIX = "encoder.encoder."


@dataclass
class EspnetConfig:
    """What an ESPnet HuBERT run's ``config.yaml`` says about its encoder."""

    path: Path
    flavour: Flavour
    encoder_conf: dict[str, Any]
    normalize: bool | None  # None: a normaliser speechrank does not reproduce
    normalize_from: str


def read_config(directory: Path) -> EspnetConfig | None:
    """The HuBERT encoder ``directory/config.yaml`` declares; ``None`` when there is no such
    file or it is not an ESPnet HuBERT configuration.

    Raises:
        SpeechrankError: an ESPnet HuBERT configuration speechrank cannot follow (a
            feature-extracting frontend or pre-encoder).
    """
    import yaml

    path = directory / CONFIG_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, Mapping) or data.get("encoder") not in (
            "torchaudio_hubert", "hubert_pretrain"):
        return None
    for key in ("frontend", "preencoder"):
        if data.get(key) is not None:
            raise SpeechrankError(
                f"{path}: {key} '{data[key]}' computes features before the encoder; only "
                "raw-waveform HuBERT runs (frontend: null) map onto the Hugging Face classes")
    conf = data.get("encoder_conf")
    norm, norm_conf = data.get("normalize"), data.get("normalize_conf") or {}
    if norm is None:
        normalize, norm_from = False, "ESPnet config.yaml normalize: null"
    elif norm == "utterance_mvn" and isinstance(norm_conf, Mapping) and norm_conf.get(
            "norm_vars") is True and norm_conf.get("norm_means", True) is True:
        normalize, norm_from = True, "ESPnet config.yaml utterance_mvn with norm_vars"
    else:
        normalize = None
        norm_from = (f"ESPnet normaliser {norm!r} ({dict(norm_conf)}) has no speechrank "
                     "equivalent (utterance_mvn removes the mean only unless norm_vars: true)")
    return EspnetConfig(path=path, flavour=data["encoder"],
                        encoder_conf=dict(conf) if isinstance(conf, Mapping) else {},
                        normalize=normalize, normalize_from=norm_from)


def _fairseq_fields(conf: Mapping[str, Any]) -> dict[str, Any]:
    fields = {name: conf.get(key, default) for key, (name, default) in FAIRSEQ_RENAMES.items()}
    for key, value in conf.items():
        if key not in FAIRSEQ_RENAMES:
            fields[key] = value  # HubertConfig fields pass through; the rest is ignored
    return fields


def build_model(state: Mapping[str, Any], config: EspnetConfig
                ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The Hugging Face model holding an ESPnet HuBERT state dict's encoder, and what was
    read.

    Raises:
        SpeechrankError: the weights do not belong to the flavour ``config.yaml`` names, or do
            not fit its architecture.
    """
    from speechrank.encoders import fairseq, torchaudio

    if config.flavour == "torchaudio_hubert":
        if torchaudio.encoder_prefix([k for k in state if isinstance(k, str)]) is None:
            raise SpeechrankError("config.yaml names encoder torchaudio_hubert, but the weights "
                                  "hold no torchaudio encoder")
        declared = {**TORCHAUDIO_DEFAULTS, **config.encoder_conf}
        model, info = torchaudio.build_model(
            state, hyper_parameters=declared, family="hubert",
            declared_by="ESPnet encoder_conf over TorchAudioHuBERTPretrainEncoder's defaults")
    else:
        weights = {k.removeprefix(_FAIRSEQ_PREFIX): v for k, v in state.items()
                   if isinstance(k, str) and k.startswith(_FAIRSEQ_PREFIX)}
        others = sorted(k for k in state if not str(k).startswith(_FAIRSEQ_PREFIX))
        if not weights or others:
            raise SpeechrankError(
                "config.yaml names encoder hubert_pretrain, but the weights are not all "
                f"under '{_FAIRSEQ_PREFIX}'" + (f" (e.g. '{others[0]}')" if others else ""))
        from transformers import HubertModel

        fields = _fairseq_fields(config.encoder_conf)
        hf = fairseq.hf_config("hubert", fields)
        model = HubertModel(hf)
        mapped, dropped = fairseq.map_state_dict(weights, set(model.state_dict()),
                                                 hf.hidden_size, int(hf.conv_dim[-1]))
        try:
            model.load_state_dict(mapped, strict=False)
        except RuntimeError as err:
            lines = str(err).strip().splitlines()
            detail = lines[1].strip() if len(lines) > 1 else lines[0]
            raise SpeechrankError(
                f"weights do not fit config.yaml's architecture ({detail})") from None
        model.eval()
        info = {"family": "hubert", "num_heads": int(hf.num_attention_heads),
                "layer_norm_first": bool(hf.do_stable_layer_norm),
                "dropped_keys": len(dropped)}
    info.update({"kind": "espnet", "encoder": config.flavour, "config": str(config.path)})
    return model, info


def load_espnet_encoder(path: str | Path, *, device: torch.device | str = "cpu",
                        dtype: torch.dtype | None = None, normalize: bool | None = None,
                        name: str | None = None) -> Any:
    """A :class:`~speechrank.encoders.huggingface.HuggingFaceEncoder` for an ESPnet HuBERT
    ``.pth`` whose run ``config.yaml`` lies beside it.

    Raises:
        SpeechrankError: no ESPnet HuBERT ``config.yaml`` beside the file, weights that do not
            match it, or a normaliser speechrank does not reproduce (and ``normalize`` unset).
    """
    from speechrank.encoders.fairseq import load_weights_only
    from speechrank.encoders.huggingface import HuggingFaceEncoder

    path = Path(path)
    config = read_config(path.parent)
    if config is None:
        raise SpeechrankError(f"{path}: no ESPnet HuBERT {CONFIG_FILE} beside it")
    obj = load_weights_only(path, allowed=())
    state = obj.get("model") if isinstance(obj, Mapping) and isinstance(
        obj.get("model"), Mapping) else obj
    if not isinstance(state, Mapping):
        raise SpeechrankError(f"{path}: not a state dict")
    try:
        model, info = build_model(state, config)
    except SpeechrankError as err:
        raise SpeechrankError(f"{path}: {err}") from None
    if normalize is not None:
        do_normalize, norm_source = bool(normalize), "user (normalize argument)"
    elif config.normalize is None:
        raise SpeechrankError(f"{path}: {config.normalize_from}; set the normalisation "
                              "explicitly (load_encoder(..., normalize=...))")
    else:
        do_normalize, norm_source = config.normalize, config.normalize_from
    info["path"] = str(path.resolve())
    rate = int(config.encoder_conf.get("sample_rate") or 16000)
    return HuggingFaceEncoder(model, name=name or str(path), sample_rate=rate,
                              do_normalize=do_normalize, normalize_source=norm_source,
                              source=info, device=device, dtype=dtype)
