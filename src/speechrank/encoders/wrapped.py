"""Any ``torch.nn.Module`` that returns per-layer frames, as a :class:`SpeechEncoder`.

The contract mirrors s3prl's upstream interface (waveforms and lengths in, a list of per-layer
``[B, T, D]`` tensors out). The module's output may be

- a list or tuple of ``[B, T, D]`` tensors (named ``"0"``, ``"1"`` ... unless ``layer_names``
  says otherwise),
- an object with a ``hidden_states`` attribute or key holding such a sequence (a Hugging Face
  ``ModelOutput`` called with ``output_hidden_states=True``),
- a mapping from layer name to ``[B, T, D]`` tensor, or
- a single ``[B, T, D]`` tensor (one layer, ``"0"``).

Layer widths may differ. The layer names and widths are read from one forward pass on a
second of seeded noise when the encoder is built, which also checks ``frame_lengths``
against the module's actual output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from speechrank.encoders.base import EncoderOutput, ModuleBackedEncoder, SpeechEncoder
from speechrank.encoders.normalization import NORMALIZE_EPS, normalize_waveforms
from speechrank.encoders.runtime import eval_mode, hash_module
from speechrank.errors import SpeechrankError

ForwardFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], Any]


@dataclasses.dataclass(frozen=True)
class WrapOptions:
    """How :func:`wrap_module` calls a module and names what it returns.

    Attributes:
        name: what results call it (default: the module's class name).
        layer_names: names for a sequence output, in order (default ``"0"``, ``"1"``, ...;
            by docs/design.md, "Rows and layer names", ``"0"`` should be the input of the
            first transformer layer and a convolutional front end ``"cnn"``).
        forward: ``forward(module, waveforms [B, S], lengths [B])`` returning the output; the
            default calls ``module(waveforms)``. Use it to pass masks or
            ``output_hidden_states=True``.
        normalize: zero-mean unit-variance input per utterance over its valid samples.
        equal_length_batches: declare that padding changes the module's valid frames.
        inference_mode: run under ``torch.inference_mode`` (the default) or ``no_grad``;
            choose ``False`` for a module that caches tensors across calls and is also
            being trained, since inference tensors cannot enter autograd later.
        frame_rate: output frames per second (default: read off ``frame_lengths``).
    """

    name: str | None = None
    layer_names: Sequence[str] | None = None
    forward: ForwardFn | None = None
    normalize: bool = False
    equal_length_batches: bool = False
    inference_mode: bool = True
    frame_rate: float | None = None


def _default_forward(module: torch.nn.Module, waveforms: torch.Tensor,
                     lengths: torch.Tensor) -> Any:
    return module(waveforms)


def _as_layers(output: Any, layer_names: Sequence[str] | None) -> dict[str, torch.Tensor]:
    """Normalise a module's output to ``{name: [B, T, D]}``."""
    if isinstance(output, torch.Tensor):
        seq: Any = [output]
    elif isinstance(output, Mapping) and "hidden_states" not in output:
        return {str(k): v for k, v in output.items()}
    elif isinstance(output, Mapping):
        seq = output["hidden_states"]
    elif hasattr(output, "hidden_states"):
        seq = output.hidden_states
    else:
        seq = output
    if not isinstance(seq, (list, tuple)):
        raise SpeechrankError(
            f"the wrapped module returned {type(output).__name__}; expected a list/tuple of "
            "[B, T, D] tensors, a mapping, or an output with hidden_states")
    names = list(layer_names) if layer_names is not None else [str(i) for i in range(len(seq))]
    if len(names) != len(seq):
        raise SpeechrankError(
            f"the wrapped module returned {len(seq)} layers but {len(names)} layer names")
    return {name: t for name, t in zip(names, seq, strict=True) if t is not None}


class ModuleEncoder(ModuleBackedEncoder):
    """A :class:`SpeechEncoder` over a user module; build it with :func:`wrap_module`."""

    def __init__(self, module: torch.nn.Module, *, sample_rate: int,
                 frame_lengths: Callable[[torch.Tensor], torch.Tensor],
                 options: WrapOptions | None = None, probe_seconds: float = 1.0) -> None:
        options = options or WrapOptions()
        self.module = module
        self.name = name = options.name or type(module).__name__
        self.sample_rate = int(sample_rate)
        self._frame_fn = frame_lengths
        layer_names = options.layer_names
        self._names_arg = list(layer_names) if layer_names is not None else None
        self._forward_fn = options.forward or _default_forward
        self.do_normalize = bool(options.normalize)
        self.equal_length_batches = bool(options.equal_length_batches)
        self.inference_mode = bool(options.inference_mode)
        frame_rate = options.frame_rate
        if frame_rate is None:
            far = self.frame_lengths(torch.tensor([10 * self.sample_rate, 20 * self.sample_rate]))
            frame_rate = float(far[1] - far[0]) / 10.0
        self.frame_rate = float(frame_rate)
        # One forward pass on seeded noise to learn the layers and check the frame formula.
        num = max(1, round(probe_seconds * self.sample_rate))
        noise = torch.randn(1, num, generator=torch.Generator().manual_seed(0))
        probe = self._run(noise.to(self.device), torch.tensor([num]), None)
        if not probe:
            raise SpeechrankError(f"{name}: the wrapped module returned no layers")
        self._check_frames(probe, int(self.frame_lengths(torch.tensor([num]))[0]))
        self.layer_names = list(probe)
        self.layer_dims = {n: int(t.shape[-1]) for n, t in probe.items()}
        self.dim = self.layer_dims[self.layer_names[-1]]

    def frame_lengths(self, num_samples: torch.Tensor) -> torch.Tensor:
        samples = torch.as_tensor(num_samples, dtype=torch.long).cpu()
        frames = torch.as_tensor(self._frame_fn(samples)).cpu()
        if frames.is_floating_point():
            frames = frames.floor()
        return frames.long().clamp_min(0)

    @property
    def torch_module(self) -> torch.nn.Module:
        return self.module

    def _run(self, waveforms: torch.Tensor, lengths: torch.Tensor,
             names: list[str] | None) -> dict[str, torch.Tensor]:
        x = waveforms.to(self.device, torch.float32)
        lengths_d = lengths.to(self.device)
        if self.do_normalize:
            x = normalize_waveforms(x, lengths_d)
        grad_off = torch.inference_mode() if self.inference_mode else torch.no_grad()
        with eval_mode(self.module), grad_off:
            output = self._forward_fn(self.module, x, lengths_d)
        layers = _as_layers(output, self._names_arg)
        for n, t in layers.items():
            if not isinstance(t, torch.Tensor) or t.dim() != 3 or t.shape[0] != x.shape[0]:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise SpeechrankError(
                    f"{self.name}: layer {n} is {shape}, expected [B={x.shape[0]}, T, D]")
        if names is not None:
            layers = {n: layers[n] for n in names}
        return {n: t.float() for n, t in layers.items()}

    def encode(self, waveforms: torch.Tensor, lengths: torch.Tensor,
               layers: list[str] | None = None) -> EncoderOutput:
        if waveforms.dim() != 2:
            raise ValueError(f"waveforms must be [B, S], got shape {tuple(waveforms.shape)}")
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        if lengths.shape != (waveforms.shape[0],):
            raise ValueError(f"lengths must be [{waveforms.shape[0]}], got {tuple(lengths.shape)}")
        names = None
        if layers is not None:
            names = [str(n) for n in layers]
            unknown = sorted(set(names).difference(self.layer_names))
            if unknown:
                raise SpeechrankError(f"{self.name}: unknown layer(s) {', '.join(unknown)} "
                                      f"(available: {', '.join(self.layer_names)})")
            names = [n for n in self.layer_names if n in set(names)]
        width = int(lengths.max()) if lengths.numel() else 0
        frames = self.frame_lengths(lengths)
        out = self._run(waveforms[:, :width], lengths, names)
        self._check_frames(out, int(frames.max()) if frames.numel() else 0)
        return EncoderOutput(out, frames.to(self.device))

    def _check_frames(self, layers: dict[str, torch.Tensor], need: int) -> None:
        """Every layer must hold at least the frames ``frame_lengths`` promises."""
        for n, t in layers.items():
            if t.shape[1] < need:
                raise SpeechrankError(
                    f"{self.name}: layer {n} has {t.shape[1]} frames but frame_lengths promises "
                    f"{need}; check the frame_lengths function")

    def fingerprint(self) -> str:
        """sha256 of the wrapper's settings and the module's current weights (recomputed on
        every call: a wrapped module may be training)."""
        payload = {"adapter": "module", "module_class": type(self.module).__qualname__,
                   "sample_rate": self.sample_rate, "layers": self.layer_dims,
                   "do_normalize": self.do_normalize}
        return hash_module(payload, self.module)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update({
            "adapter": "module",
            "module_class": type(self.module).__qualname__,
            "num_parameters": sum(p.numel() for p in self.module.parameters()),
            "input_normalization": {"do_normalize": self.do_normalize, "eps": NORMALIZE_EPS,
                                    "source": "wrap_module(normalize=...)"},
            "grad_mode": "inference_mode" if self.inference_mode else "no_grad",
            "eval_mode": True,
        })
        return info


def wrap_module(module: torch.nn.Module, *, sample_rate: int,
                frame_lengths: Callable[[torch.Tensor], torch.Tensor],
                options: WrapOptions | None = None) -> SpeechEncoder:
    """Wrap a module returning per-layer hidden states as a :class:`SpeechEncoder`.

    Args:
        module: the model; it runs in eval mode (each submodule's mode restored afterwards).
        sample_rate: the waveform rate it expects, in Hz.
        frame_lengths: ``[B]`` sample counts -> ``[B]`` valid frame counts (its convolution
            length formula).
        options: its name, layer names, forward call, input normalisation, grad mode and
            frame rate (:class:`WrapOptions`; default: its defaults).

    Example:
        >>> enc = wrap_module(model, sample_rate=16000,
        ...                   frame_lengths=lambda n: (n - 400) // 320 + 1)
    """
    return ModuleEncoder(module, sample_rate=sample_rate, frame_lengths=frame_lengths,
                         options=options)


__all__ = ["ModuleEncoder", "WrapOptions", "wrap_module"]
