"""``random:NAME[@SEED]``: a randomly initialised architecture, no file at all.

No run layout, no step of its own (a run list may give one), no training record; the digest
is that of the canonical spec ``random:NAME@SEED`` (the architecture and seed decide every
weight, see :func:`~speechrank.encoders.architectures.build_random_model`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from speechrank.encoders.formats.base import CheckpointFormat

PREFIX = "random:"


def canonical_spec(spec: str) -> str:
    """``random:NAME@SEED`` with the default seed written out."""
    from speechrank.encoders.architectures import parse_random_spec

    arch, seed = parse_random_spec(spec)
    return f"{PREFIX}{arch.name}@{seed}"


class RandomFormat(CheckpointFormat):
    name = "random"
    description = "a random initialisation of a named architecture"

    def claims_spec(self, spec: str) -> bool:
        return spec.startswith(PREFIX)

    def step(self, path: Path) -> int | None:
        return None

    def checkpoint_name(self, path: Path) -> str:
        return str(path)

    def content_files(self, path: Path) -> list[Path]:
        return []

    def digest(self, path: Path) -> str | None:
        return "sha256:" + hashlib.sha256(canonical_spec(str(path)).encode()).hexdigest()

    def load(self, path: Path, *, device: Any, dtype: Any, normalize: bool | None,
             name: str) -> Any:
        from speechrank.encoders.architectures import build_random_model, parse_random_spec
        from speechrank.encoders.huggingface import DEFAULT_SAMPLE_RATE, HuggingFaceEncoder

        arch, seed = parse_random_spec(name)
        model = build_random_model(arch, seed)
        if normalize is None:
            do_normalize = arch.do_normalize
            norm_source = "Wav2Vec2FeatureExtractor default for the family (random: architecture)"
        else:
            do_normalize, norm_source = bool(normalize), "user (normalize argument)"
        source = {"kind": "random", "architecture": arch.name, "seed": seed,
                  "description": arch.description}
        return HuggingFaceEncoder(model, name=name, sample_rate=DEFAULT_SAMPLE_RATE,
                                  do_normalize=do_normalize, normalize_source=norm_source,
                                  source=source, device=device, dtype=dtype)


FORMAT = RandomFormat()
