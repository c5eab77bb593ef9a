"""speechrank's own small self-supervised encoder (BEST-RQ), its adapter and checkpoint files.

The model follows BEST-RQ (Chiu, Qin, Zhang, Yu and Wu, "Self-supervised Learning with
Random-projection Quantizer for Speech Recognition", ICML 2022, arXiv 2202.01855), scaled down
to train on two CPU cores:

- **Front end.** 80-bin log-mel filterbank energies from 25 ms Hann windows every 10 ms
  (``torch.stft`` with ``center=False``, power spectrum, an HTK mel matrix from
  :func:`transformers.audio_utils.mel_filter_bank` over 20-8000 Hz, ``log(mel + 1e-6)``).
  torchaudio is not used because its wheels do not import with the CPU build of torch the
  project pins; the mel matrix is stored in the checkpoint, so a checkpoint never depends on the
  library that built it. The log-mels are normalised to zero mean and unit variance per mel bin
  (the paper stresses that normalised inputs keep the random-projection quantiser from
  collapsing onto a few codes), then two consecutive frames are stacked: 160-dimensional
  features at 20 ms (50 frames per second). ``feature_norm="global"`` (the default) uses one
  mean and standard deviation per bin measured on the pretraining audio before step 0 and
  stored with the weights; ``"utterance"`` uses each utterance's own valid frames. Global
  statistics matter on noisy speech: per-utterance variance normalisation scales bins that hold
  only noise up to unit variance, and on the default synthetic corpus (white noise at 0-20 dB
  SNR) it made the quantiser's targets near-uniform noise (on 200 of its pretraining clips:
  perplexity 576 of 1,024 codes and 3.7 % of consecutive frames sharing a code, against 216
  and 13 % with global statistics), and the masked prediction stayed at chance.
- **Encoder.** A linear projection to the model width, a grouped convolutional relative position
  embedding (as in wav2vec 2.0) added to it, then pre-LN transformer layers with a key-padding
  mask and a final layer norm. The paper's Conformer is replaced by this plain transformer,
  which is smaller and faster on CPU.
- **Frame count.** For ``S`` samples at 16 kHz the front end makes ``n(S) = (S - 400) // 160 + 1``
  mel frames (0 when ``S < 400``) and the encoder ``T(S) = n(S) // 2`` frames (an odd last mel
  frame is dropped). One second gives 49 frames, like wav2vec 2.0.
- **Padding.** A padded frame never changes a valid one: each STFT frame only sees its own
  samples, per-utterance statistics use valid frames only, padded frames are zeroed before the
  position convolution (whose zero padding then matches an unpadded utterance) and are masked out
  of attention. A padded batch therefore gives the same valid frames as one utterance at a time.

Layer numbering follows docs/design.md, "Rows and layer names" (Hugging Face ``hidden_states``):
layer ``"0"`` is the input of the first transformer layer (projected features plus positions),
layer ``"i"`` the output of transformer layer ``i``; the last layer is taken after the final
layer norm, as Hugging Face does for its pre-LN ("stable layer norm") models.

Checkpoint directories written by ``speechrank pretrain`` hold ``config.json`` (with
``"model_type": "speechrank-bestrq"``), ``model.safetensors`` (the encoder under ``encoder.``, the
training head and quantiser under other prefixes), ``trainer.json`` and, for the newest
checkpoint of a run, the optimiser and random-number state used to resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechrank.encoders.base import EncoderOutput, SpeechEncoder

# The checkpoint format lives in one module; its names stay importable from here.
from speechrank.encoders.bestrq_format import (
    CONFIG_FILE,
    ENCODER_PREFIX,
    MODEL_FILE,
    MODEL_TYPE,
    TRAINER_FILE,
    read_checkpoint_config,
    read_trainer,
    write_model_files,
)
from speechrank.errors import SpeechrankError
from speechrank.options import FeatureNorm

__all__ = [
    "CONFIG_FILE",
    "ENCODER_PREFIX",
    "MODEL_FILE",
    "MODEL_TYPE",
    "SIZES",
    "TRAINER_FILE",
    "BestRqConfig",
    "BestRqEncoder",
    "BestRqModel",
    "LogMelFrontend",
    "build_bestrq_encoder",
    "config_for_size",
    "init_bestrq_model",
    "load_bestrq_checkpoint",
    "read_checkpoint_config",
    "write_model_files",
]

@dataclasses.dataclass(frozen=True)
class BestRqConfig:
    """Architecture and front end of a BEST-RQ encoder (everything needed to rebuild it).

    ``codebook_size`` and ``codebook_dim`` describe the pretraining target (the random-projection
    quantiser and the prediction head); the encoder itself does not use them.
    """

    sample_rate: int = 16000
    n_fft: int = 400  # 25 ms window
    hop_length: int = 160  # 10 ms hop
    n_mels: int = 80
    f_min: float = 20.0
    f_max: float = 8000.0
    log_floor: float = 1e-6
    stack: int = 2  # mel frames per encoder frame (20 ms)
    feature_norm: FeatureNorm = "global"  # or "utterance"
    norm_eps: float = 1e-5
    dim: int = 256
    num_layers: int = 4
    num_heads: int = 4
    ffn_dim: int = 1024
    pos_conv_kernel: int = 31
    pos_conv_groups: int = 16
    dropout: float = 0.0
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02
    codebook_size: int = 1024
    codebook_dim: int = 16

    def __post_init__(self) -> None:
        problems = []
        if self.dim % self.num_heads:
            problems.append(f"dim {self.dim} is not a multiple of num_heads {self.num_heads}")
        if self.dim % self.pos_conv_groups:
            problems.append(f"dim {self.dim} is not a multiple of pos_conv_groups "
                            f"{self.pos_conv_groups}")
        if self.pos_conv_kernel % 2 == 0:
            problems.append(f"pos_conv_kernel {self.pos_conv_kernel} must be odd")
        if min(self.num_layers, self.stack, self.n_mels, self.hop_length) < 1:
            problems.append("num_layers, stack, n_mels and hop_length must be positive")
        if self.n_fft < self.hop_length:
            problems.append("n_fft must be at least hop_length")
        if self.feature_norm not in ("global", "utterance"):
            problems.append(f"feature_norm must be 'global' or 'utterance', "
                            f"not {self.feature_norm!r}")
        if problems:
            raise SpeechrankError("bad BEST-RQ configuration: " + "; ".join(problems))

    @property
    def feature_dim(self) -> int:
        """Width of the stacked log-mel features (input of the projection)."""
        return self.n_mels * self.stack

    @property
    def frame_rate(self) -> float:
        """Encoder frames per second (50 for the defaults)."""
        return self.sample_rate / (self.hop_length * self.stack)

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Encoder frames for waveforms of ``num_samples`` samples (see the module docstring).

        ``n = (S - n_fft) // hop + 1`` mel frames for ``S >= n_fft`` (else 0), then
        ``n // stack`` encoder frames.
        """
        samples = torch.as_tensor(num_samples, dtype=torch.int64)
        mel = torch.where(samples >= self.n_fft,
                          torch.div(samples - self.n_fft, self.hop_length,
                                    rounding_mode="floor") + 1,
                          torch.zeros_like(samples))
        return torch.div(mel, self.stack, rounding_mode="floor")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BestRqConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SpeechrankError(f"unknown BEST-RQ configuration keys: {', '.join(unknown)}")
        return cls(**dict(data))


#: Named model sizes. ``tiny`` is the default (about 3.3 M encoder parameters, small enough to
#: train in minutes on two CPU cores); ``micro`` exists for tests and quick looks.
SIZES: dict[str, dict[str, Any]] = {
    "micro": {"dim": 64, "num_layers": 2, "num_heads": 2, "ffn_dim": 256,
              "pos_conv_kernel": 15, "pos_conv_groups": 8, "codebook_size": 256},
    "tiny": {},
    "small": {"dim": 384, "num_layers": 6, "num_heads": 6, "ffn_dim": 1536},
}


def config_for_size(size: str) -> BestRqConfig:
    """The :class:`BestRqConfig` of a named size (``micro``, ``tiny``, ``small``)."""
    if size not in SIZES:
        raise SpeechrankError(f"unknown model size {size!r}; choose one of "
                              f"{', '.join(SIZES)}")
    return BestRqConfig(**SIZES[size])


class LogMelFrontend(nn.Module):
    """Waveforms -> normalised, stacked log-mel features and their valid frame counts."""

    def __init__(self, config: BestRqConfig) -> None:
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        self.config = config
        fbank = mel_filter_bank(num_frequency_bins=config.n_fft // 2 + 1,
                                num_mel_filters=config.n_mels, min_frequency=config.f_min,
                                max_frequency=config.f_max, sampling_rate=config.sample_rate,
                                norm=None, mel_scale="htk")
        self.register_buffer("mel_fbank", torch.tensor(fbank, dtype=torch.float32))
        self.register_buffer("window", torch.hann_window(config.n_fft, periodic=True))
        # ``global`` normalisation statistics: set from the pretraining audio before step 0
        # (speechrank.pretrain) and saved with the weights; identity until then.
        self.register_buffer("feature_mean", torch.zeros(config.n_mels))
        self.register_buffer("feature_std", torch.ones(config.n_mels))

    def log_mel(self, waveforms: torch.Tensor,
                lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw log-mel energies ``[B, T * stack, n_mels]`` of the mel frames the encoder uses
        (garbage beyond each row's valid frames) and the ``[B]`` encoder frame counts ``T``."""
        c = self.config
        batch, num_samples = waveforms.shape
        if batch and int(lengths.max()) > num_samples:
            raise ValueError(f"lengths up to {int(lengths.max())} exceed the waveforms' "
                             f"{num_samples} samples")
        frames = c.num_frames(lengths.cpu()).to(waveforms.device)
        t_max = int(frames.max()) if batch else 0
        if t_max == 0:
            return waveforms.new_zeros(batch, 0, c.n_mels), frames
        n_mel = t_max * c.stack
        needed = (n_mel - 1) * c.hop_length + c.n_fft
        spec = torch.stft(waveforms[:, :needed], n_fft=c.n_fft, hop_length=c.hop_length,
                          window=self.window, center=False, return_complex=True)
        power = spec.real.square() + spec.imag.square()  # [B, freq, n_mel]
        return torch.log(power.transpose(1, 2) @ self.mel_fbank + c.log_floor), frames

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the global per-bin log-mel mean and standard deviation (``global`` norm)."""
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.feature_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward(self, waveforms: torch.Tensor,
                lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, S]`` waveforms (zero padded beyond ``lengths``) -> ``[B, T, n_mels * stack]``
        features (zero beyond each row's valid frames) and ``[B]`` valid frame counts."""
        c = self.config
        logmel, frames = self.log_mel(waveforms, lengths)
        batch, n_mel, _ = logmel.shape
        if n_mel == 0:
            return logmel.new_zeros(batch, 0, c.feature_dim), frames
        valid = (torch.arange(n_mel, device=logmel.device)[None, :]
                 < (frames * c.stack)[:, None]).unsqueeze(-1)
        if c.feature_norm == "global":
            normed = (logmel - self.feature_mean) / self.feature_std * valid
        else:  # per utterance, over its own valid frames
            count = (frames * c.stack).clamp(min=1).to(logmel.dtype)[:, None]
            mean = (logmel * valid).sum(1) / count
            centred = (logmel - mean[:, None, :]) * valid
            var = centred.square().sum(1) / count
            normed = centred / torch.sqrt(var + c.norm_eps)[:, None, :]
        return normed.reshape(batch, n_mel // c.stack, c.feature_dim), frames


class ConvPositionalEmbedding(nn.Module):
    """Grouped convolution over time whose GELU output is added to the frames (wav2vec 2.0's
    relative position embedding, Baevski et al. 2020, without weight normalisation)."""

    def __init__(self, config: BestRqConfig) -> None:
        super().__init__()
        self.conv = nn.Conv1d(config.dim, config.dim, config.pos_conv_kernel,
                              padding=config.pos_conv_kernel // 2, groups=config.pos_conv_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.conv(x.transpose(1, 2))).transpose(1, 2)


class TransformerLayer(nn.Module):
    """Pre-LN transformer layer: ``x + MHA(LN(x))`` then ``x + FFN(LN(x))``."""

    def __init__(self, config: BestRqConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.dropout = config.dropout
        self.attn_norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.attn_out = nn.Linear(config.dim, config.dim)
        self.ffn_norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(config.dim, config.ffn_dim)
        self.ffn_out = nn.Linear(config.ffn_dim, config.dim)

    def forward(self, x: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        """``x`` is ``[B, T, D]``; ``attend`` is a ``[B, 1, 1, T]`` boolean key mask."""
        batch, time, dim = x.shape
        p = self.dropout if self.training else 0.0
        q, k, v = (self.qkv(self.attn_norm(x))
                   .view(batch, time, 3, self.num_heads, dim // self.num_heads)
                   .permute(2, 0, 3, 1, 4))
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, dropout_p=p)
        attn = attn.transpose(1, 2).reshape(batch, time, dim)
        x = x + F.dropout(self.attn_out(attn), p, self.training)
        hidden = F.dropout(F.gelu(self.ffn_in(self.ffn_norm(x))), p, self.training)
        return x + F.dropout(self.ffn_out(hidden), p, self.training)


class BestRqModel(nn.Module):
    """The encoder: log-mel front end, projection, positions, transformer layers."""

    def __init__(self, config: BestRqConfig) -> None:
        super().__init__()
        self.config = config
        self.frontend = LogMelFrontend(config)
        self.input_proj = nn.Linear(config.feature_dim, config.dim)
        self.pos_conv = ConvPositionalEmbedding(config)
        self.layers = nn.ModuleList(TransformerLayer(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # BERT-style initialisation (normal, std 0.02; zero biases), as in wav2vec 2.0/HuBERT.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=self.config.init_std)
            nn.init.zeros_(module.bias)

    def forward_features(self, features: torch.Tensor, frames: torch.Tensor, *,
                         max_layer: int | None = None) -> list[torch.Tensor]:
        """Stacked features ``[B, T, F]`` with ``frames`` valid each -> hidden states
        ``[layer 0, ..., layer max_layer]`` (all ``L + 1`` by default), each ``[B, T, D]``."""
        last = self.config.num_layers if max_layer is None else max_layer
        time = features.shape[1]
        valid = torch.arange(time, device=features.device)[None, :] < frames[:, None]
        x = self.input_proj(features) * valid.unsqueeze(-1)
        if time == 0:
            return [x] * (last + 1)
        x = x + self.pos_conv(x)
        hidden = [x]
        # A row with no valid frame would make softmax over nothing (NaN): let it attend to
        # its first (padded) frame instead; its frames are padding and are never reported.
        attend = valid.clone()
        attend[:, 0] |= frames == 0
        attend = attend[:, None, None, :]
        for index, layer in enumerate(self.layers[:last], start=1):
            x = layer(x, attend)
            if index == self.config.num_layers:
                x = self.final_norm(x)
            hidden.append(x)
        return hidden

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor, *,
                max_layer: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Waveforms ``[B, S]`` and sample ``lengths`` -> (hidden states, valid frames)."""
        features, frames = self.frontend(waveforms, lengths)
        return self.forward_features(features, frames, max_layer=max_layer), frames


def init_bestrq_model(config: BestRqConfig, seed: int) -> BestRqModel:
    """A freshly initialised :class:`BestRqModel`, the same for the same ``config`` and
    ``seed`` whatever the state of torch's global random generator (which is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BestRqModel(config)


def _tensor_digest(hasher: Any, tensors: Mapping[str, torch.Tensor]) -> None:
    for key in sorted(tensors):
        tensor = tensors[key].detach().to("cpu").contiguous()
        hasher.update(key.encode())
        hasher.update(str(tensor.dtype).encode())
        hasher.update(str(tuple(tensor.shape)).encode())
        hasher.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


class BestRqEncoder(SpeechEncoder):
    """:class:`SpeechEncoder` adapter of a :class:`BestRqModel` (layers ``"0"`` .. ``"L"``)."""

    def __init__(self, model: BestRqModel, *, name: str, step: int | None = None,
                 info: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.config = model.config
        self.name = name
        self.step = step
        self.info = dict(info or {})
        self.sample_rate = self.config.sample_rate
        self.frame_rate = self.config.frame_rate
        self.dim = self.config.dim
        self.layer_names = [str(i) for i in range(self.config.num_layers + 1)]

    def frame_lengths(self, num_samples: torch.Tensor) -> torch.Tensor:
        return self.config.num_frames(num_samples)

    def _layer_indices(self, layers: list[str] | None) -> list[str]:
        if layers is None:
            return list(self.layer_names)
        unknown = [name for name in layers if name not in self.layer_names]
        if unknown:
            raise SpeechrankError(f"{self.name}: no layer {', '.join(map(repr, unknown))}; "
                                  f"layers are {', '.join(self.layer_names)}")
        return list(layers)

    def encode(self, waveforms: torch.Tensor, lengths: torch.Tensor,
               layers: list[str] | None = None) -> EncoderOutput:
        wanted = self._layer_indices(layers)
        device = self.device
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                waves = waveforms.to(device=device, dtype=torch.float32)
                lens = torch.as_tensor(lengths, dtype=torch.int64)
                hidden, frames = self.model(waves, lens.to(device),
                                            max_layer=max((int(n) for n in wanted), default=0))
                time = hidden[0].shape[1]
                padding = (torch.arange(time, device=device)[None, :]
                           >= frames[:, None]).unsqueeze(-1)
                out = {name: hidden[int(name)].masked_fill(padding, 0.0) for name in wanted}
        finally:
            self.model.train(was_training)
        return EncoderOutput(layers=out, lengths=frames.to("cpu", torch.int64))

    def to(self, device: str | torch.device) -> BestRqEncoder:
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def fingerprint(self) -> str:
        hasher = hashlib.sha256()
        hasher.update(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        _tensor_digest(hasher, self.model.state_dict())
        return hasher.hexdigest()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update({
            "family": MODEL_TYPE,
            "step": self.step,
            "num_parameters": self.num_parameters(),
            "frontend": (f"{self.config.n_mels} log-mel bins, {self.config.n_fft} / "
                         f"{self.config.hop_length} sample window / hop, stacked x"
                         f"{self.config.stack}, {self.config.feature_norm} mean/variance "
                         "normalisation"),
            "frame_formula": "T = ((S - n_fft) // hop + 1) // stack, 0 when S < n_fft",
            "padding": "attention key-padding mask: padded batches equal one at a time",
            "layer_numbering": "0 = input of transformer layer 1; i = output of layer i; "
                               "the last layer after the final layer norm",
            "config": self.config.to_dict(),
        })
        info.update(self.info)
        return info


def build_bestrq_encoder(size: str | BestRqConfig = "tiny", *, seed: int = 0,
                         name: str | None = None) -> BestRqEncoder:
    """A randomly initialised BEST-RQ encoder. Its ``global`` normalisation statistics are the
    identity (mean 0, std 1) until :meth:`LogMelFrontend.set_statistics` is called; the step-0
    checkpoint of a ``speechrank pretrain`` run is the random encoder with the data's
    statistics."""
    config = size if isinstance(size, BestRqConfig) else config_for_size(size)
    label = name or (f"random:{size}" if isinstance(size, str) else "random:bestrq")
    return BestRqEncoder(init_bestrq_model(config, seed), name=label, step=0,
                         info={"init_seed": seed})


# --- checkpoint loading (the format: speechrank.encoders.bestrq_format) -----------------------

def load_bestrq_checkpoint(path: str | os.PathLike[str], *,
                           device: str | torch.device = "cpu") -> BestRqEncoder:
    """Load a checkpoint directory written by ``speechrank pretrain`` as a
    :class:`BestRqEncoder` (eval mode, on ``device``).

    Raises:
        SpeechrankError: not a BEST-RQ checkpoint, unreadable files, or weights that do not
            match the configuration.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(path)
    payload = read_checkpoint_config(directory)
    try:
        config = BestRqConfig.from_dict(payload.get("model", {}))
    except TypeError as err:
        raise SpeechrankError(f"{directory}: bad model configuration ({err})") from err
    try:
        tensors = load_file(str(directory / MODEL_FILE))
    except (OSError, SafetensorError) as err:
        raise SpeechrankError(f"{directory / MODEL_FILE}: unreadable ({err})") from err
    state = {k[len(ENCODER_PREFIX):]: v for k, v in tensors.items()
             if k.startswith(ENCODER_PREFIX)}
    model = BestRqModel(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SpeechrankError(f"{directory}: weights do not match {CONFIG_FILE} "
                              f"({first})") from err
    model.to(device).eval()
    trainer = read_trainer(directory)
    step = trainer.get("step")
    info = {k: trainer[k] for k in ("loss", "accuracy", "elapsed_seconds", "seed",
                                    "data_fingerprint") if k in trainer}
    return BestRqEncoder(model, name=str(path), step=step if isinstance(step, int) else None,
                         info={"checkpoint": str(directory), **info})
