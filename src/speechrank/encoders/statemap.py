"""Renaming another toolkit's encoder weights into a Hugging Face model's, checked whole.

fairseq and torchaudio checkpoints hold the same wav2vec 2.0 / HuBERT encoder under other
names; each loader declares its renaming as a table of regular expressions and hands the
result to :func:`check_complete`, so that a file is either mapped onto every weight of the
model or refused with one line (a partly random model would be measured silently).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

from speechrank.errors import SpeechrankError

__all__ = ["Rules", "check_complete", "compile_rules", "load_mapped", "pos_conv_targets",
           "rename"]

Rules = tuple[tuple[re.Pattern[str], str], ...]


def compile_rules(table: Iterable[tuple[str, str]]) -> Rules:
    """``(pattern, replacement)`` pairs of :func:`re.sub`, compiled once."""
    return tuple((re.compile(pattern), replacement) for pattern, replacement in table)


def rename(key: str, rules: Rules) -> str | None:
    """``key`` renamed by the first rule that matches it (``None``: no rule does)."""
    for pattern, replacement in rules:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return None


def pos_conv_targets(target_keys: Iterable[str]) -> tuple[str | None, str | None]:
    """The Hugging Face model's names of the positional convolution's weight-norm factors
    ``(g, v)`` (old ``weight_g``/``weight_v`` or new ``parametrizations`` names; ``None``
    where this transformers build has neither)."""
    keys = [k for k in target_keys if k.startswith("encoder.pos_conv_embed.conv.")]
    g = next((k for k in keys if k.endswith(("weight_g", "original0"))), None)
    v = next((k for k in keys if k.endswith(("weight_v", "original1"))), None)
    return g, v


def check_complete(mapped: Mapping[str, torch.Tensor], target_keys: set[str], *,
                   toolkit: str, holder: str) -> None:
    """Refuse a mapping with a weight the model lacks or a model weight it lacks (the mask
    embedding may be missing: it is not used to encode).

    ``toolkit`` names the weights ("fairseq"), ``holder`` what held them ("the fairseq
    checkpoint").
    """
    unknown = sorted(set(mapped) - target_keys)
    if unknown:
        raise SpeechrankError(
            f"{toolkit} weight maps to '{unknown[0]}', which the Hugging Face model lacks "
            "(does the configuration match the weights?)")
    missing = sorted(k for k in target_keys - set(mapped) if k != "masked_spec_embed")
    if missing:
        raise SpeechrankError(
            f"{len(missing)} encoder weight(s) missing from {holder} "
            f"(e.g. {missing[0]}); refusing to measure a partly random model")


def load_mapped(model: torch.nn.Module, mapped: Mapping[str, torch.Tensor], *,
                where: str = "") -> None:
    """Load checked weights into ``model`` and put it in eval mode; a shape that does not fit
    the configuration is one error line (prefixed by ``where``, the file, when given)."""
    try:
        model.load_state_dict(dict(mapped), strict=False)
    except RuntimeError as err:
        lines = str(err).strip().splitlines()
        detail = lines[1].strip() if len(lines) > 1 else lines[0]
        prefix = f"{where}: " if where else ""
        raise SpeechrankError(f"{prefix}weights do not fit the configuration ({detail})"
                              ) from None
    model.eval()
