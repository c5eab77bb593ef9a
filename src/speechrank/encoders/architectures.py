"""Randomly initialised architectures for ``random:NAME`` (no download, seeded).

A random encoder is the baseline every trained checkpoint should beat, and a cheap stand-in
for tests and demos. Each entry builds a Hugging Face model from a configuration alone:

- ``tiny``: a 4-layer, 128-wide HuBERT with the standard 7-layer convolution stack
  (strides 5,2,2,2,2,2,2, kernels 10,3,3,3,3,2,2: 20 ms frames at 16 kHz, like every base
  model) at 128 channels, and layer-norm convolutions with pre-LN transformer layers as in
  HuBERT-large, so padded batches are exact. About 1.1 M parameters; it encodes the 300-file
  FSDD test split (130 s of audio) in about a second on 2 CPU cores.
- ``hubert-base``, ``wav2vec2-base``, ``wavlm-base``, ``data2vec-audio-base``: the library's
  default configurations, which are the base models' shapes (12 transformer layers, 768
  wide, 13 hidden states, 512-channel convolutions). The first three use group norm in the
  first convolution, so they take equal-length batches only.

Every family's processor is ``Wav2Vec2FeatureExtractor``, whose default is
``do_normalize=True``; random encoders normalise their input the same way and record it.
Initialisation is the library's own ``_init_weights``, run under a forked RNG seeded with
the spec's seed (``random:NAME@SEED``, default 0), so the caller's global RNG is untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch

from speechrank.errors import SpeechrankError

#: Seed of ``random:NAME`` when the spec names none.
DEFAULT_SEED = 0


@dataclasses.dataclass(frozen=True)
class RandomArchitecture:
    """A named configuration that ``random:NAME`` builds with fresh weights."""

    name: str
    model_type: str  # Hugging Face ``model_type``: hubert, wav2vec2, wavlm, data2vec-audio
    description: str
    config_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    do_normalize: bool = True  # Wav2Vec2FeatureExtractor's default

    def make_config(self) -> Any:
        """The Hugging Face configuration (library defaults plus this entry's overrides)."""
        from transformers import AutoConfig

        return AutoConfig.for_model(self.model_type, **dict(self.config_overrides))


_TINY = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "conv_dim": (128,) * 7,
    "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "num_conv_pos_embeddings": 32,
    "num_conv_pos_embedding_groups": 8,
}

RANDOM_ARCHITECTURES: Mapping[str, RandomArchitecture] = MappingProxyType({
    arch.name: arch for arch in (
        RandomArchitecture(
            "tiny", "hubert",
            "4-layer 128-wide HuBERT, layer-norm convolutions, 20 ms frames (fast on CPU)",
            _TINY),
        RandomArchitecture(
            "hubert-base", "hubert",
            "HuBERT base shape (HubertConfig defaults): 12 layers, 768 wide"),
        RandomArchitecture(
            "wav2vec2-base", "wav2vec2",
            "wav2vec 2.0 base shape (Wav2Vec2Config defaults): 12 layers, 768 wide"),
        RandomArchitecture(
            "wavlm-base", "wavlm", "WavLM base shape (WavLMConfig defaults): 12 layers, 768 wide"),
        RandomArchitecture(
            "data2vec-audio-base", "data2vec-audio",
            "data2vec-audio base shape (Data2VecAudioConfig defaults): 12 layers, 768 wide"),
    )
})


def parse_random_spec(spec: str) -> tuple[RandomArchitecture, int]:
    """``random:NAME`` or ``random:NAME@SEED`` -> (architecture, seed)."""
    body = spec.removeprefix("random:")
    name, _, seed_text = body.partition("@")
    if name not in RANDOM_ARCHITECTURES:
        known = ", ".join(f"random:{n}" for n in RANDOM_ARCHITECTURES)
        raise SpeechrankError(f"unknown random architecture {spec!r} (known: {known})")
    if not seed_text:
        return RANDOM_ARCHITECTURES[name], DEFAULT_SEED
    try:
        seed = int(seed_text)
    except ValueError:
        raise SpeechrankError(
            f"bad seed in {spec!r}: expected random:{name}@INTEGER") from None
    if seed < 0:
        raise SpeechrankError(f"bad seed in {spec!r}: the seed must be non-negative")
    return RANDOM_ARCHITECTURES[name], seed


def build_random_model(arch: RandomArchitecture, seed: int) -> torch.nn.Module:
    """Build ``arch`` with weights drawn from a forked RNG seeded with ``seed``.

    ``torch.random.fork_rng`` saves and restores the CPU generator (CUDA generators are not
    touched: the model is built on the CPU), so the caller's random stream is unchanged.
    """
    from transformers import AutoModel

    config = arch.make_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    return model.eval()
