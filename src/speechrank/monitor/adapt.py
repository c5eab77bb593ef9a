"""Turn the object a training loop holds into a :class:`SpeechEncoder` the monitor can run.

Accepted, in this order:

- a :class:`~speechrank.encoders.base.SpeechEncoder` (used as is);
- a wrapper around the model being trained: ``DistributedDataParallel``/``DataParallel``
  (``.module``) and ``torch.compile`` (``._orig_mod``) are unwrapped first;
- speechrank's BEST-RQ encoder (:class:`~speechrank.encoders.bestrq.BestRqModel`) or its
  pretraining wrapper (anything whose ``.encoder`` is one, such as
  :class:`~speechrank.pretrain.objective.BestRqPretrainer`);
- a Hugging Face waveform model (``Wav2Vec2Model``, ``HubertModel``, ``WavLMModel`` ...); a
  model with a head (``Wav2Vec2ForPreTraining``, ``HubertForCTC`` ...) is measured through its
  ``base_model``, so the head costs nothing. The adapter is built on the model's current
  device and leaves its ``requires_grad`` flags as they were.

Anything else must be wrapped by the caller with :func:`speechrank.encoders.wrapped.wrap_module`.
"""

from __future__ import annotations

from typing import Any

import torch

from speechrank.encoders.base import SpeechEncoder
from speechrank.errors import SpeechrankError

__all__ = ["as_encoder", "modules_of", "unwrap"]


def unwrap(model: Any) -> Any:
    """Strip ``DistributedDataParallel``/``DataParallel`` and ``torch.compile`` wrappers."""
    for _ in range(8):
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel,
                              torch.nn.DataParallel)):
            model = model.module
        elif isinstance(model, torch.nn.Module) and hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            break
    return model


def _module_device(module: torch.nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def _is_hf_model(model: Any) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    return isinstance(model, PreTrainedModel)


def _hf_encoder(model: Any, name: str, options: dict[str, Any]) -> SpeechEncoder:
    from speechrank.encoders.huggingface import HuggingFaceEncoder

    base = model.base_model
    # The adapter freezes its model (requires_grad_(False)) and moves it to ``device``: keep a
    # model that is being trained exactly as it was.
    flags = [(p, p.requires_grad) for p in base.parameters()]
    options = {"device": _module_device(base), **options}
    try:
        return HuggingFaceEncoder(base, name=name, **options)
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def as_encoder(model: Any, *, name: str = "model",
               options: dict[str, Any] | None = None) -> SpeechEncoder:
    """A :class:`SpeechEncoder` over ``model`` (see the module docstring).

    Args:
        model: the object to measure.
        name: the encoder's name when one has to be built.
        options: keyword arguments for the adapter that is built (for a Hugging Face model,
            those of :class:`~speechrank.encoders.huggingface.HuggingFaceEncoder`, such as
            ``do_normalize`` or ``sample_rate``).
    """
    if isinstance(model, SpeechEncoder):
        return model
    model = unwrap(model)
    from speechrank.encoders.bestrq import BestRqEncoder, BestRqModel

    if isinstance(model, BestRqModel):
        return BestRqEncoder(model, name=name, **(options or {}))
    inner = getattr(model, "encoder", None)
    if isinstance(model, torch.nn.Module) and isinstance(inner, BestRqModel):
        return BestRqEncoder(inner, name=name, **(options or {}))
    if _is_hf_model(model):
        return _hf_encoder(model, name, dict(options or {}))
    raise SpeechrankError(
        f"cannot monitor a {type(model).__name__}: pass a SpeechEncoder, a Hugging Face "
        "waveform model, a speechrank BEST-RQ model, or wrap the module with "
        "speechrank.encoders.wrapped.wrap_module(module, sample_rate=..., frame_lengths=...)")


def modules_of(model: Any, encoder: SpeechEncoder) -> list[torch.nn.Module]:
    """The torch modules whose train/eval flags a measurement must put back: ``model`` itself
    (when it is a module) and every module the encoder holds as an attribute."""
    found: list[torch.nn.Module] = []
    candidates = [model] if isinstance(model, torch.nn.Module) else []
    candidates += [value for value in vars(encoder).values()
                   if isinstance(value, torch.nn.Module)]
    for candidate in candidates:
        if all(candidate is not seen for seen in found):
            found.append(candidate)
    return found
