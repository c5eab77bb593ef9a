"""Hugging Face waveform encoders (wav2vec 2.0, HuBERT, WavLM, data2vec-audio, and any
``AutoModel`` that takes ``input_values`` and returns ``hidden_states``).

Layers follow docs/design.md, "Rows and layer names" and the library's own numbering: ``"0"`` is
``hidden_states[0]``, the input of the first transformer layer (after the positional
convolution, and after the encoder LayerNorm in post-LN "base" models); ``"i"`` is the output
of transformer layer i; in pre-LN (``do_stable_layer_norm``) models ``"L"`` is taken before the
encoder's final LayerNorm, as transformers returns it. ``"cnn"`` is the convolutional feature
encoder's output (``model.feature_extractor``), before the feature projection and its
LayerNorm: ``conv_dim[-1]`` wide, where the numbered layers are ``hidden_size`` wide.

Padding (see research/anchors.md section 4, and huggingface/transformers#10117,
facebookresearch/fairseq#3227):

- ``feat_extract_norm == "group"`` (wav2vec2-base, HuBERT-base, WavLM-base) normalises the first
  convolution over time, so zero padding changes every frame. These models were trained
  without an attention mask and get none; they only run on equal-length batches
  (``equal_length_batches``), which :meth:`HuggingFaceEncoder.encode` enforces itself by
  running each distinct length separately.
- layer-norm convolutions (large/lv60 models, ``random:tiny``) get an attention mask built
  from the lengths, and a padded batch gives the valid frames of one-at-a-time extraction.
- data2vec-audio has layer-norm convolutions but a stack of positional convolutions that
  spreads the (masked-to-zero) padding into the last ``layers x kernel / 2`` valid frames, so it
  gets the attention mask *and* equal-length batches.
- other model types get the mask when their convolutions use layer norm and equal-length
  batches in every case, since their padding behaviour is not verified here.

Beyond the four families, any ``AutoModel`` with ``input_values``, a convolution length formula
and per-layer hidden states at the convolution frame rate works (UniSpeech, UniSpeech-SAT and
wav2vec2-conformer were tried). Models that change the frame rate inside the encoder (SEW,
SEW-D) are refused at the first batch; spectrogram models (Whisper) at construction.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from speechrank.encoders.base import EncoderOutput, ModuleBackedEncoder
from speechrank.encoders.normalization import NORMALIZE_EPS, normalize_waveforms, valid_mask
from speechrank.encoders.runtime import (
    autocast_context,
    eval_mode,
    hash_module,
    module_dtype,
)
from speechrank.errors import SpeechrankError

#: Model types whose padding behaviour and layer layout this adapter has verified.
KNOWN_FAMILIES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")

#: Sampling rate when a model ships no ``preprocessor_config.json``.
DEFAULT_SAMPLE_RATE = 16_000

# Configuration keys that describe how a model was saved, not what it computes.
_VOLATILE_CONFIG_KEYS = frozenset({
    "transformers_version", "architectures", "dtype", "torch_dtype", "output_hidden_states",
    "output_attentions", "return_dict", "use_cache",
})


def padding_rule(config: Any) -> tuple[bool, bool, str]:
    """``(use_attention_mask, equal_length_batches, reason)`` for a model configuration."""
    model_type = getattr(config, "model_type", "")
    norm = getattr(config, "feat_extract_norm", None)
    if norm == "group":
        return (False, True, "group norm over time in the first convolution: no attention "
                "mask (as trained), equal-length batches only")
    if model_type == "data2vec-audio":
        return (True, True, "layer-norm convolutions get an attention mask, but the stacked "
                "positional convolutions spread padding into valid frames: equal-length "
                "batches only")
    if model_type in KNOWN_FAMILIES:
        return (True, False, "layer-norm convolutions: attention mask from the lengths; "
                "padded batches give the valid frames of one-at-a-time extraction")
    return (True, True, f"model type {model_type!r}: attention mask from the lengths; padding "
            "behaviour not verified, so equal-length batches only")


def _base_model_class(model_type: str) -> Any:
    """The bare encoder class of a known family (``AutoModel`` otherwise)."""
    import transformers

    classes = {
        "wav2vec2": "Wav2Vec2Model", "hubert": "HubertModel", "wavlm": "WavLMModel",
        "data2vec-audio": "Data2VecAudioModel",
    }
    return getattr(transformers, classes.get(model_type, "AutoModel"))


class HuggingFaceEncoder(ModuleBackedEncoder):
    """A Hugging Face waveform model seen through the :class:`SpeechEncoder` contract.

    Args:
        model: a ``PreTrainedModel`` taking ``input_values`` (raw waveforms), with
            ``_get_feat_extract_output_lengths`` and ``output_hidden_states`` support.
        name: what the user called it (``random:tiny``, a directory, a hub id).
        sample_rate: waveform rate the model expects.
        do_normalize: zero-mean unit-variance input per utterance over its valid samples.
        normalize_source: where ``do_normalize`` came from (recorded in ``describe()``).
        source: how the model was obtained (recorded in ``describe()``).
        device: where to run (the model is moved there); ``None`` leaves it where it is, so a
            model being trained can be wrapped for monitoring without side effects.
        dtype: weight dtype the model is cast to; ``None`` leaves the weights alone (float32
            weights then run under bf16 autocast on CUDA).
    """

    def __init__(self, model: torch.nn.Module, *, name: str,
                 sample_rate: int = DEFAULT_SAMPLE_RATE, do_normalize: bool = True,
                 normalize_source: str = "argument", source: dict[str, Any] | None = None,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        config = getattr(model, "config", None)
        if config is None or not hasattr(model, "_get_feat_extract_output_lengths"):
            raise SpeechrankError(
                f"{name}: {type(model).__name__} is not a waveform encoder speechrank can read "
                "(no _get_feat_extract_output_lengths)")
        if getattr(model, "main_input_name", "input_values") != "input_values":
            raise SpeechrankError(
                f"{name}: {type(model).__name__} takes {model.main_input_name!r}, not raw "
                "waveforms ('input_values'); speechrank reads waveform encoders only")
        num_layers = getattr(config, "num_hidden_layers", None)
        hidden = getattr(config, "hidden_size", None)
        if not isinstance(num_layers, int) or not isinstance(hidden, int):
            raise SpeechrankError(
                f"{name}: the configuration has no num_hidden_layers/hidden_size")
        self.model = model
        self.config = config
        self.name = name
        self.family = str(getattr(config, "model_type", type(model).__name__))
        self.sample_rate = int(sample_rate)
        self.do_normalize = bool(do_normalize)
        self.normalize_source = normalize_source
        self.source = dict(source or {})
        self.use_attention_mask, self.equal_length_batches, self.padding_reason = (
            padding_rule(config))
        self._lengths_takes_adapter = (
            "add_adapter" in inspect.signature(model._get_feat_extract_output_lengths).parameters)
        self.dim = hidden
        numbered = [str(i) for i in range(num_layers + 1)]
        extractor = getattr(model, "feature_extractor", None)
        self._has_cnn = isinstance(extractor, torch.nn.Module)
        self.layer_names = (["cnn"] if self._has_cnn else []) + numbered
        dims = {n: hidden for n in numbered}
        if self._has_cnn:
            conv_dim = getattr(config, "conv_dim", None)
            dims["cnn"] = int(conv_dim[-1]) if conv_dim else hidden
        self.layer_dims = {n: dims[n] for n in self.layer_names}
        strides = getattr(config, "conv_stride", None)
        if strides:
            hop = 1
            for s in strides:
                hop *= int(s)
            self.frame_rate = self.sample_rate / hop
        else:
            probe = torch.tensor([10 * self.sample_rate, 20 * self.sample_rate])
            frames = self.frame_lengths(probe)
            self.frame_rate = float(frames[1] - frames[0]) / 10.0
        self.min_samples = self._min_samples()
        self._fingerprint: str | None = None
        if device is not None:
            self.to(device)
        if dtype is not None:
            self.model.to(dtype=dtype)

    # -- geometry --------------------------------------------------------------------------

    def frame_lengths(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Valid frames by the model's own ``_get_feat_extract_output_lengths`` (adapters off:
        the hidden states come before any adapter); never negative."""
        samples = torch.as_tensor(num_samples, dtype=torch.long).cpu()
        kwargs = {"add_adapter": False} if self._lengths_takes_adapter else {}
        frames = self.model._get_feat_extract_output_lengths(samples, **kwargs)
        return torch.as_tensor(frames, dtype=torch.long).clamp_min(0)

    def _min_samples(self) -> int:
        """Fewest samples that give one output frame (the receptive field)."""
        lo, hi = 1, 1
        while int(self.frame_lengths(torch.tensor([hi]))[0]) < 1:
            hi *= 2
            if hi > 10 * self.sample_rate:
                raise SpeechrankError(f"{self.name}: no output frame even for 10 s of audio")
        while lo < hi:
            mid = (lo + hi) // 2
            if int(self.frame_lengths(torch.tensor([mid]))[0]) >= 1:
                hi = mid
            else:
                lo = mid + 1
        return lo

    # -- device ----------------------------------------------------------------------------

    @property
    def torch_module(self) -> torch.nn.Module:
        return self.model

    @property
    def weight_dtype(self) -> torch.dtype:
        return module_dtype(self.model)

    @property
    def autocast(self) -> bool:
        """bf16 autocast runs on CUDA when the weights are float32."""
        return self.device.type == "cuda" and self.weight_dtype == torch.float32

    # -- encoding --------------------------------------------------------------------------

    def _select(self, layers: Sequence[str] | None) -> list[str]:
        if layers is None:
            return list(self.layer_names)
        wanted = {str(n) for n in layers}
        unknown = sorted(wanted.difference(self.layer_names))
        if unknown:
            raise SpeechrankError(
                f"{self.name}: unknown layer(s) {', '.join(unknown)} (available: "
                f"{', '.join(self.layer_names[:1])} ... {self.layer_names[-1]})")
        return [n for n in self.layer_names if n in wanted]

    def _check(self, waveforms: torch.Tensor, lengths: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if waveforms.dim() != 2:
            raise ValueError(f"waveforms must be [B, S], got shape {tuple(waveforms.shape)}")
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        if lengths.shape != (waveforms.shape[0],):
            raise ValueError(f"lengths must be [{waveforms.shape[0]}], got {tuple(lengths.shape)}")
        if lengths.numel() and int(lengths.max()) > waveforms.shape[1]:
            raise ValueError("a length exceeds the padded waveform width")
        short = (lengths < self.min_samples).nonzero().flatten()
        if short.numel():
            row = int(short[0])
            raise SpeechrankError(
                f"{self.name}: waveform {row} has {int(lengths[row])} samples; the encoder "
                f"needs at least {self.min_samples} for one output frame")
        return waveforms, lengths

    def encode(self, waveforms: torch.Tensor, lengths: torch.Tensor,
               layers: list[str] | None = None) -> EncoderOutput:
        """Per-layer float32 frames of a batch, on the encoder's device.

        Waveforms are cropped to the longest length; an ``equal_length_batches`` model runs
        each distinct length on its own, so any batch is safe (batching by equal length is
        only faster).
        """
        names = self._select(layers)
        waveforms, lengths = self._check(waveforms, lengths)
        batch = waveforms.shape[0]
        if batch == 0:
            empty = {n: torch.zeros(0, 0, self.layer_dims[n], device=self.device) for n in names}
            return EncoderOutput(empty, torch.zeros(0, dtype=torch.long, device=self.device))
        if not self.equal_length_batches or bool((lengths == lengths[0]).all()):
            width = int(lengths.max())
            return self._forward(waveforms[:, :width], lengths, names)
        # Padding would change the valid frames: run every distinct length by itself.
        frames = self.frame_lengths(lengths)
        out = {n: torch.zeros(batch, int(frames.max()), self.layer_dims[n], device=self.device)
               for n in names}
        for length in torch.unique(lengths).tolist():
            rows = (lengths == length).nonzero().flatten()
            part = self._forward(waveforms[rows.to(waveforms.device), :length], lengths[rows],
                                 names)
            rows_d = rows.to(self.device)
            for n in names:
                out[n][rows_d, : part.layers[n].shape[1]] = part.layers[n]
        return EncoderOutput(out, frames.to(self.device))

    def _forward(self, waveforms: torch.Tensor, lengths: torch.Tensor,
                 names: list[str]) -> EncoderOutput:
        device = self.device
        x = waveforms.to(device=device, dtype=torch.float32)
        lengths_d = lengths.to(device)
        if self.do_normalize:
            x = normalize_waveforms(x, lengths_d)
        if not self.autocast:
            x = x.to(self.weight_dtype)
        indices = [int(n) for n in names if n != "cnn"]
        captured: dict[str, torch.Tensor] = {}
        with contextlib.ExitStack() as stack:
            stack.enter_context(eval_mode(self.model))
            stack.enter_context(torch.inference_mode())
            stack.enter_context(autocast_context(device, self.autocast))
            stack.enter_context(warnings.catch_warnings())
            # torch warns when SDPA/MHA gets a bool padding mask next to a float bias (WavLM).
            warnings.filterwarnings("ignore", message=".*mismatched key_padding_mask.*")
            if not indices:  # only the CNN: skip the transformer altogether
                captured["cnn"] = self.model.feature_extractor(x).transpose(1, 2)
            else:
                if "cnn" in names:
                    def keep(_module: Any, _inputs: Any, output: torch.Tensor) -> None:
                        captured["cnn"] = output.transpose(1, 2)
                    stack.enter_context(_hook(self.model.feature_extractor, keep))
                mask = valid_mask(lengths_d, x.shape[1]).long() if self.use_attention_mask else None
                output = self.model(x, attention_mask=mask, output_hidden_states=indices)
                hidden = getattr(output, "hidden_states", None)
                self._check_hidden(hidden)
                for i in indices:
                    captured[str(i)] = hidden[i]
        expected = int(self.frame_lengths(torch.tensor([x.shape[1]]))[0])
        layers_out: dict[str, torch.Tensor] = {}
        for n in names:
            frames = captured[n]
            if frames.shape[1] != expected:
                raise SpeechrankError(
                    f"{self.name}: layer {n} has {frames.shape[1]} frames where the convolution "
                    f"formula gives {expected}; this model type changes the frame rate inside "
                    "the encoder and is not supported")
            layers_out[n] = frames.float()
        return EncoderOutput(layers_out, self.frame_lengths(lengths).to(device))

    def _check_hidden(self, hidden: Any) -> None:
        want = self.num_layers
        if hidden is None or len(hidden) != want:
            got = "no" if hidden is None else len(hidden)
            raise SpeechrankError(
                f"{self.name}: the model returned {got} hidden states where its configuration "
                f"promises {want} (num_hidden_layers + 1)")

    # -- identity --------------------------------------------------------------------------

    def fingerprint(self) -> str:
        """sha256 of the configuration, the input conventions and every weight (computed once;
        the weights of a loaded encoder do not change)."""
        if self._fingerprint is None:
            config = {k: v for k, v in self.config.to_dict().items()
                      if not k.startswith("_") and k not in _VOLATILE_CONFIG_KEYS}
            payload = {
                "adapter": "huggingface", "model_class": type(self.model).__name__,
                "config": config, "sample_rate": self.sample_rate,
                "do_normalize": self.do_normalize, "attention_mask": self.use_attention_mask,
            }
            self._fingerprint = hash_module(payload, self.model)
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        import transformers

        info = super().describe()
        info.update({
            "adapter": "huggingface",
            "family": self.family,
            "model_class": type(self.model).__name__,
            "source": self.source,
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "layer_numbering": ("Hugging Face hidden_states: '0' is the input of the first "
                                "transformer layer, 'i' the output of layer i"),
            "cnn_layer": ("convolutional feature encoder output, before the feature "
                          "projection" if self._has_cnn else None),
            "input_normalization": {"do_normalize": self.do_normalize, "eps": NORMALIZE_EPS,
                                    "over": "valid samples of each utterance",
                                    "source": self.normalize_source},
            "padding": {"attention_mask": self.use_attention_mask,
                        "equal_length_batches": self.equal_length_batches,
                        "reason": self.padding_reason},
            "min_samples": self.min_samples,
            "device": str(self.device),
            "weight_dtype": str(self.weight_dtype).removeprefix("torch."),
            "autocast": "bfloat16" if self.autocast else None,
            "eval_mode": True,
            "transformers_version": transformers.__version__,
        })
        return info


@contextlib.contextmanager
def _hook(module: torch.nn.Module, fn: Any) -> Any:
    handle = module.register_forward_hook(fn)
    try:
        yield
    finally:
        handle.remove()


# -- loading --------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_transformers() -> Any:
    """Silence transformers' progress bars and load report while loading (speechrank checks
    missing weights itself; unused head weights of fine-tuned checkpoints are expected)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _read_preprocessor(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as err:
        raise SpeechrankError(f"cannot read {path}: {err}") from None
    return data if isinstance(data, dict) else None


def _cached_file(repo_id: str, filename: str) -> str | None:
    """Path of ``filename`` of ``repo_id`` in the local Hugging Face cache, else ``None``."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id=repo_id, filename=filename)
    except ValueError:  # not a valid repo id
        return None
    return found if isinstance(found, str) else None


def _not_cached(spec: str) -> SpeechrankError:
    return SpeechrankError(
        f"model {spec!r} is not a local directory and not in the Hugging Face cache (offline); "
        f"download it first (e.g. `hf download {spec}`) or pass a local model directory")


def load_pretrained(spec: str, *, device: torch.device | str = "cpu",
                    dtype: torch.dtype | None = None,
                    normalize: bool | None = None) -> HuggingFaceEncoder:
    """Load a Hugging Face model directory, or a hub id from the local cache only.

    Never downloads (``local_files_only=True``). The input normalisation and sampling rate
    come from ``preprocessor_config.json`` when the model ships one (``do_normalize`` defaults
    to ``True``, as in ``Wav2Vec2FeatureExtractor``, when the file lacks the key or is absent);
    ``normalize`` overrides it.
    """
    from transformers import AutoConfig

    path = Path(spec).expanduser()
    is_dir = path.is_dir()
    ref = str(path) if is_dir else spec
    try:
        config = AutoConfig.from_pretrained(ref, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        if not is_dir:
            raise _not_cached(spec) from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SpeechrankError(f"{spec}: cannot read config.json ({first})") from None
    model_class = _base_model_class(getattr(config, "model_type", ""))
    try:
        with _quiet_transformers():
            model, info = model_class.from_pretrained(
                ref, config=config, local_files_only=True, dtype=dtype or torch.float32,
                output_loading_info=True)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = spec if is_dir else f"{spec} (Hugging Face cache)"
        raise SpeechrankError(f"{where}: cannot load the weights ({first})") from None
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("masked_spec_embed")]
    if missing:
        raise SpeechrankError(
            f"{spec}: {len(missing)} weight(s) missing from the checkpoint (e.g. {missing[0]}); "
            "refusing to measure a partly random model")
    preprocessor_path: str | None
    if is_dir:
        candidate = path / "preprocessor_config.json"
        preprocessor_path = str(candidate) if candidate.is_file() else None
    else:
        preprocessor_path = _cached_file(spec, "preprocessor_config.json")
    pre = _read_preprocessor(preprocessor_path)
    sample_rate = int(pre.get("sampling_rate", DEFAULT_SAMPLE_RATE)) if pre else DEFAULT_SAMPLE_RATE
    if normalize is not None:
        do_normalize, norm_source = bool(normalize), "user (normalize argument)"
    elif pre is not None:
        do_normalize = bool(pre.get("do_normalize", True))
        norm_source = ("preprocessor_config.json" if "do_normalize" in pre else
                       "Wav2Vec2FeatureExtractor default (no do_normalize key in "
                       "preprocessor_config.json)")
    else:
        do_normalize = True
        norm_source = "Wav2Vec2FeatureExtractor default (no preprocessor_config.json)"
    source = {"kind": "directory" if is_dir else "hub-cache",
              "path": str(path.resolve()) if is_dir else None,
              "hub_id": None if is_dir else spec,
              "preprocessor_config": preprocessor_path is not None}
    return HuggingFaceEncoder(model, name=spec, sample_rate=sample_rate,
                              do_normalize=do_normalize, normalize_source=norm_source,
                              source=source, device=device, dtype=dtype)
