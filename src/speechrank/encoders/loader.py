"""``load_encoder(MODEL)``: the one entry point from a MODEL string to a :class:`SpeechEncoder`.

MODEL is a checkpoint of any format of the registry (:mod:`speechrank.encoders.formats`:
``random:NAME[@SEED]``, a ``speechrank pretrain`` checkpoint directory, a Hugging Face model
directory or ``Trainer`` checkpoint, a fairseq HuBERT or wav2vec 2.0 ``.pt`` ...), which says
what it is and loads it, or a Hugging Face hub id such as ``facebook/hubert-base-ls960``, read
from the local cache only. Nothing is ever downloaded.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from speechrank.encoders import formats
from speechrank.encoders.base import SpeechEncoder
from speechrank.encoders.formats.speechrank import FORMAT as SPEECHRANK_FORMAT
from speechrank.errors import SpeechrankError


def is_speechrank_checkpoint(path: Path) -> bool:
    """True for a directory written by ``speechrank pretrain`` (the registry's
    ``speechrank`` format claims it)."""
    return formats.detect(Path(path)) is SPEECHRANK_FORMAT


#: What a Hugging Face hub id looks like: ``name`` or ``owner/name``.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


def _looks_like_path(spec: str) -> bool:
    """A spec that cannot be a hub id, so the user meant a path."""
    return _HUB_ID.match(spec) is None or ".." in spec


def _unclaimed(spec: str, path: Path) -> SpeechrankError:
    """The one line for an existing path that no format claims."""
    if path.is_dir():
        run = formats.run_checkpoints(path)
        if run:
            names = ", ".join(c.name for c in run[:4])
            return SpeechrankError(
                f"{spec}: a run directory with {len(run)} checkpoints ({names}"
                f"{', ...' if len(run) > 4 else ''}); name the one to load")
        return SpeechrankError(f"{spec}: not a model directory (no config.json)")
    return SpeechrankError(
        f"{spec}: is a file; MODEL must be a model directory (config.json and weights), "
        "a fairseq .pt, a speechrank checkpoint directory, a hub id or random:NAME")


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

    fmt = formats.detect(spec)
    path = Path(spec).expanduser()
    if fmt is not None:
        return fmt.load(path, device=dev, dtype=weight_dtype, normalize=normalize, name=spec)
    if path.exists():
        raise _unclaimed(spec, path)
    if _looks_like_path(spec):
        raise SpeechrankError(f"model directory {spec!r} does not exist")

    from speechrank.encoders.huggingface import load_pretrained

    return load_pretrained(spec, device=dev, dtype=weight_dtype, normalize=normalize)
