"""Encoder adapters: any speech model as "waveforms -> per-layer frames + valid lengths".

- :func:`load_encoder` turns a MODEL string (``random:NAME``, a Hugging Face directory or cached
  hub id, a ``speechrank pretrain`` checkpoint) into a :class:`SpeechEncoder`;
- :func:`wrap_module` adapts any ``torch.nn.Module`` that returns per-layer hidden states;
- :class:`~speechrank.encoders.huggingface.HuggingFaceEncoder` wraps a Hugging Face model
  object directly (the training monitor's route);
- :func:`configure_cpu_threads` sizes torch's CPU thread pool to the cores this process may use.

Layer names follow docs/design.md, "Rows and layer names": ``"0"`` is the input of the first
transformer layer, ``"i"`` the output of layer i, ``"cnn"`` the convolutional front end.
"""

from speechrank.encoders.architectures import RANDOM_ARCHITECTURES, RandomArchitecture
from speechrank.encoders.base import EncoderOutput, SpeechEncoder
from speechrank.encoders.huggingface import HuggingFaceEncoder
from speechrank.encoders.loader import is_speechrank_checkpoint, load_encoder
from speechrank.encoders.runtime import configure_cpu_threads
from speechrank.encoders.wrapped import WrapOptions, wrap_module

__all__ = [
    "RANDOM_ARCHITECTURES",
    "EncoderOutput",
    "HuggingFaceEncoder",
    "RandomArchitecture",
    "SpeechEncoder",
    "WrapOptions",
    "configure_cpu_threads",
    "is_speechrank_checkpoint",
    "load_encoder",
    "wrap_module",
]
