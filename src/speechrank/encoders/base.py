"""The encoder contract: waveforms and lengths in, per-layer frames and valid lengths out.

Every model speechrank measures (Hugging Face checkpoints, ``random:`` architectures, our own
pretrained encoder, any ``torch.nn.Module``) is wrapped in a :class:`SpeechEncoder`. The
contract follows s3prl's ``S3PRLUpstream`` (waveforms and lengths in, a list of per-layer
``[B, T, D]`` tensors and lengths out), with the layer numbering of docs/design.md, "Rows and
layer names": ``"0"`` is the input of the first transformer layer (Hugging Face
``hidden_states[0]``), ``"i"`` the output of transformer layer i, and ``"cnn"`` the
convolutional feature extractor's output where an encoder offers it.
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
from typing import Any

import torch


@dataclasses.dataclass
class EncoderOutput:
    """Per-layer frames of one batch.

    ``layers`` maps a layer name to a ``[B, T, D]`` tensor; frames at or beyond
    ``lengths[b]`` are padding and must never reach a metric.
    """

    layers: dict[str, torch.Tensor]
    lengths: torch.Tensor  # [B] int64, valid frames per utterance


class SpeechEncoder(abc.ABC):
    """A speech encoder seen as "waveforms -> per-layer frames + valid lengths".

    Subclasses set the attributes below in ``__init__`` and implement :meth:`frame_lengths`
    and :meth:`encode`.

    Attributes:
        name: what the user called the model (``random:tiny``, a directory, a hub id).
        sample_rate: the waveform rate the encoder expects, in Hz.
        frame_rate: output frames per second.
        dim: width of the frame vectors (the transformer width; see :attr:`layer_dims` for
            layers such as ``"cnn"`` that may differ).
        layer_names: all layers the encoder offers, in order (``"cnn"`` first if offered).
        equal_length_batches: True when padding changes the valid frames' values (models with
            group norm over time trained without an attention mask): such an encoder must only
            get batches of equal-length waveforms (or batch size 1).
    """

    name: str
    sample_rate: int
    frame_rate: float
    dim: int
    layer_names: list[str]
    equal_length_batches: bool = False

    @property
    def layer_dims(self) -> dict[str, int]:
        """Width of each layer's frame vectors; ``dim`` for every layer unless a subclass sets
        its own mapping (the ``"cnn"`` layer of a wav2vec 2.0-style model is usually 512 wide
        while the transformer layers are 768)."""
        dims = self.__dict__.get("_layer_dims")
        if dims is not None:
            return dict(dims)
        return {name: self.dim for name in self.layer_names}

    @layer_dims.setter
    def layer_dims(self, value: dict[str, int]) -> None:
        self.__dict__["_layer_dims"] = {str(k): int(v) for k, v in value.items()}

    @property
    def num_layers(self) -> int:
        """Number of numbered layers (``L + 1`` for ``L`` transformer layers)."""
        return sum(1 for n in self.layer_names if n != "cnn")

    @abc.abstractmethod
    def frame_lengths(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Valid output frames for waveforms of ``num_samples`` samples (the model's own
        convolution length formula)."""

    @abc.abstractmethod
    def encode(self, waveforms: torch.Tensor, lengths: torch.Tensor,
               layers: list[str] | None = None) -> EncoderOutput:
        """Run the encoder in eval mode on ``[B, S]`` float32 waveforms (zero padded beyond
        ``lengths``) and return the requested layers (all when ``None``).

        Implementations must not change the module's train/eval mode as seen by the caller
        after they return, and must not use gradient tracking.
        """

    def to(self, device: str | torch.device) -> SpeechEncoder:
        """Move the encoder to ``device``; returns self."""
        return self

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def fingerprint(self) -> str:
        """A stable hash of the weights and configuration (for feature caches)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The conventions of this encoder for the JSON output: family, normalisation,
        padding rule, parameter count, layer numbering."""
        return {
            "name": self.name,
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "dim": self.dim,
            "num_layers": self.num_layers,
            "layer_names": list(self.layer_names),
            "layer_dims": self.layer_dims,
            "equal_length_batches": self.equal_length_batches,
        }


class ModuleBackedEncoder(SpeechEncoder):
    """A :class:`SpeechEncoder` whose weights are one ``torch.nn.Module``
    (:attr:`torch_module`): it lives, and moves, where that module does."""

    @property
    def torch_module(self) -> torch.nn.Module:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """The module's first parameter's (else buffer's) device; the CPU without tensors."""
        for tensor in itertools.chain(self.torch_module.parameters(),
                                      self.torch_module.buffers()):
            return tensor.device
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> ModuleBackedEncoder:
        self.torch_module.to(torch.device(device))
        return self
