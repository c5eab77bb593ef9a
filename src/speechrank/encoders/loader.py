"""``load_encoder(MODEL)``: the one entry point from a MODEL string to a :class:`SpeechEncoder`.

MODEL (DESIGN.md section 3) is one of

- ``random:NAME`` or ``random:NAME@SEED``: a randomly initialised architecture
  (:data:`~speechrank.encoders.architectures.RANDOM_ARCHITECTURES`), seeded, no download;
- a checkpoint directory written by ``speechrank pretrain`` (it holds
  ``speechrank_checkpoint.json``, or a ``config.json`` whose ``model_type`` is
  ``speechrank-bestrq``), read by :mod:`speechrank.encoders.bestrq`;
- a Hugging Face model directory (``config.json`` and weights);
- a Hugging Face hub id such as ``facebook/hubert-base-ls960``, read from the local cache only.

Nothing is ever downloaded.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import torch

from speechrank.encoders.base import SpeechEncoder
from speechrank.encoders.bestrq_format import declares_bestrq
from speechrank.errors import SpeechrankError


def is_speechrank_checkpoint(path: Path) -> bool:
    """True for a directory written by ``speechrank pretrain`` (its ``config.json`` names the
    BEST-RQ model type; see :mod:`speechrank.encoders.bestrq_format`)."""
    return declares_bestrq(path)


#: What a Hugging Face hub id looks like: ``name`` or ``owner/name``.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


def _looks_like_path(spec: str) -> bool:
    """A spec that cannot be a hub id, so the user meant a path."""
    return _HUB_ID.match(spec) is None or ".." in spec


def _load_speechrank_checkpoint(path: Path, device: torch.device,
                                dtype: torch.dtype | None) -> SpeechEncoder:
    try:
        from speechrank.encoders import bestrq
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("speechrank.encoders.bestrq"):
            raise SpeechrankError(
                f"{path}: a speechrank checkpoint, but this install lacks the built-in encoder "
                "(speechrank.encoders.bestrq)") from None
        raise
    loader = bestrq.load_bestrq_checkpoint
    params = inspect.signature(loader).parameters
    kwargs: dict[str, Any] = {}
    if "device" in params:
        kwargs["device"] = device
    if "dtype" in params:
        kwargs["dtype"] = dtype
    elif dtype not in (None, torch.float32):
        raise SpeechrankError(f"{path}: speechrank checkpoints load in float32 only")
    encoder = loader(path, **kwargs)
    if "device" not in params:
        encoder = encoder.to(device)
    return encoder


def load_encoder(spec: str, *, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype | None = None,
                 normalize: bool | None = None) -> SpeechEncoder:
    """Turn a MODEL string into a ready :class:`SpeechEncoder` (eval-mode forward passes).

    Args:
        spec: ``random:NAME[@SEED]``, a ``speechrank pretrain`` checkpoint directory, a Hugging
            Face model directory, or a hub id present in the local Hugging Face cache.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``. On CUDA, float32 weights run under
            bf16 autocast and the frames come back as float32.
        dtype: cast the weights (``float32``, ``bfloat16``, ``float16``); default float32.
        normalize: force the zero-mean unit-variance input normalisation on or off (default:
            the model's ``preprocessor_config.json``, else ``Wav2Vec2FeatureExtractor``'s
            default, on).

    Raises:
        SpeechrankError: one line saying what is wrong (unknown architecture, missing
            directory, model not in the offline cache, unreadable weights ...).
    """
    from speechrank.encoders.runtime import resolve_device, resolve_dtype

    if not isinstance(spec, str) or not spec.strip():
        raise SpeechrankError("MODEL is empty: give random:NAME, a model directory or a hub id")
    spec = spec.strip()
    dev = resolve_device(device)
    weight_dtype = resolve_dtype(dtype)

    if spec.startswith("random:"):
        return _load_random(spec, dev, weight_dtype, normalize)

    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SpeechrankError(
                f"{spec}: is a file; MODEL must be a model directory (config.json and weights), "
                "a speechrank checkpoint directory, a hub id or random:NAME")
        if is_speechrank_checkpoint(path):
            return _load_speechrank_checkpoint(path, dev, weight_dtype)
        if not (path / "config.json").is_file():
            raise SpeechrankError(
                f"{spec}: not a model directory (no config.json)")
    elif _looks_like_path(spec):
        raise SpeechrankError(f"model directory {spec!r} does not exist")

    from speechrank.encoders.huggingface import load_pretrained

    return load_pretrained(spec, device=dev, dtype=weight_dtype, normalize=normalize)


def _load_random(spec: str, device: torch.device, dtype: torch.dtype | None,
                 normalize: bool | None) -> SpeechEncoder:
    from speechrank.encoders.architectures import build_random_model, parse_random_spec
    from speechrank.encoders.huggingface import DEFAULT_SAMPLE_RATE, HuggingFaceEncoder

    arch, seed = parse_random_spec(spec)
    model = build_random_model(arch, seed)
    if normalize is None:
        do_normalize = arch.do_normalize
        norm_source = "Wav2Vec2FeatureExtractor default for the family (random: architecture)"
    else:
        do_normalize, norm_source = bool(normalize), "user (normalize argument)"
    source = {"kind": "random", "architecture": arch.name, "seed": seed,
              "description": arch.description}
    return HuggingFaceEncoder(model, name=spec, sample_rate=DEFAULT_SAMPLE_RATE,
                              do_normalize=do_normalize, normalize_source=norm_source,
                              source=source, device=device, dtype=dtype)
