"""Waveform input normalisation, as the wav2vec 2.0 family's feature extractor does it.

``Wav2Vec2FeatureExtractor(do_normalize=True)`` (Hugging Face transformers, the processor
shared by wav2vec 2.0, HuBERT, WavLM and data2vec-audio) scales each waveform to zero mean and
unit variance over its *valid* samples, ``(x - mean) / sqrt(var + 1e-7)`` with the population
variance, and leaves the padding at zero. Whether a checkpoint expects this is stored in its
``preprocessor_config.json``; the encoder adapters record the choice in ``describe()``.
"""

from __future__ import annotations

import torch

#: The epsilon added to the variance (Hugging Face ``Wav2Vec2FeatureExtractor``).
NORMALIZE_EPS = 1e-7


def valid_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """``[B, width]`` boolean mask, True where the position is below ``lengths[b]``."""
    positions = torch.arange(width, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def normalize_waveforms(waveforms: torch.Tensor, lengths: torch.Tensor,
                        eps: float = NORMALIZE_EPS) -> torch.Tensor:
    """Zero-mean, unit-variance waveforms over each row's valid samples; padding stays 0.

    The statistics are accumulated in float64 (float32 on MPS, which has no float64) so long,
    quiet recordings lose no precision; the result has the input's dtype.

    Args:
        waveforms: ``[B, S]`` samples, padded beyond ``lengths``.
        lengths: ``[B]`` valid samples per row (each at least 1).
        eps: added to the variance before the square root.
    """
    wide = torch.float32 if waveforms.device.type == "mps" else torch.float64
    mask = valid_mask(lengths.to(waveforms.device), waveforms.shape[1])
    x = waveforms.to(wide) * mask
    count = mask.sum(dim=1, keepdim=True).clamp_min(1).to(wide)
    mean = x.sum(dim=1, keepdim=True) / count
    centred = (x - mean) * mask
    var = (centred * centred).sum(dim=1, keepdim=True) / count
    return (centred / torch.sqrt(var + eps)).to(waveforms.dtype)
