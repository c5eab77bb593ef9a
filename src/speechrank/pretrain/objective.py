"""The BEST-RQ training objective: random-projection targets, span masks, masked prediction.

Chiu et al., "Self-supervised Learning with Random-projection Quantizer for Speech
Recognition" (ICML 2022, arXiv 2202.01855), section 3:

- the **quantiser** is frozen at initialisation: a Xavier-initialised projection ``A``
  (``feature_dim x codebook_dim``) and a codebook of ``codebook_size`` standard-normal vectors,
  both sides l2-normalised; the target of frame ``x`` is ``argmin_i ||c_i - norm(x A)||``, which
  for unit vectors is the code of largest cosine. Targets come from the *unmasked*, normalised,
  stacked features;
- **masking**: every frame starts a masked span with probability ``mask_prob``; spans are
  ``mask_span`` frames (400 ms at 20 ms frames in the paper); masked frames of the encoder input
  are replaced by Gaussian noise with mean 0 and standard deviation 0.1;
- the **loss** is the cross-entropy of a linear head's prediction of the targets, on masked
  frames only.

Random draws (mask positions, noise) come from generators the caller seeds per training step, so
a resumed run draws exactly what an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from speechrank.encoders.bestrq import ENCODER_PREFIX, BestRqConfig, BestRqModel

__all__ = ["BestRqPretrainer", "MaskedPrediction", "RandomProjectionQuantizer", "span_mask"]


class RandomProjectionQuantizer(nn.Module):
    """BEST-RQ's frozen random-projection quantiser (its buffers are never trained)."""

    def __init__(self, feature_dim: int, codebook_dim: int, codebook_size: int,
                 generator: torch.Generator) -> None:
        super().__init__()
        projection = torch.empty(feature_dim, codebook_dim)
        bound = (6.0 / (feature_dim + codebook_dim)) ** 0.5  # Xavier (Glorot) uniform
        projection.uniform_(-bound, bound, generator=generator)
        codebook = torch.randn(codebook_size, codebook_dim, generator=generator)
        self.register_buffer("projection", projection)
        self.register_buffer("codebook", F.normalize(codebook, dim=-1))

    @torch.no_grad()
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[..., feature_dim]`` features -> ``[...]`` int64 code indices."""
        projected = F.normalize(features @ self.projection, dim=-1)
        return (projected @ self.codebook.T).argmax(dim=-1)


def span_mask(frames: np.ndarray, time: int, mask_prob: float, span: int,
              rng: np.random.Generator) -> np.ndarray:
    """Boolean ``[B, time]`` mask of spans within each row's ``frames[b]`` valid frames.

    Each valid frame starts a span of ``span`` frames with probability ``mask_prob`` (spans
    may overlap and are cut at the row's end). A row with valid frames but no drawn start gets
    one span at a uniformly drawn start, so every such row has masked frames to predict.
    """
    mask = np.zeros((len(frames), time), dtype=bool)
    for row, valid in enumerate(np.asarray(frames, dtype=np.int64)):
        if valid <= 0:
            continue
        starts = np.flatnonzero(rng.random(valid) < mask_prob)
        if starts.size == 0:
            starts = rng.integers(0, max(valid - span, 0) + 1, size=1)
        for start in starts:
            mask[row, start:min(start + span, valid)] = True
    return mask


@dataclasses.dataclass
class MaskedPrediction:
    """One batch's loss (a graph-carrying scalar) and counts for logging."""

    loss: torch.Tensor
    correct: int
    masked_frames: int
    valid_frames: int
    target_counts: np.ndarray  # int64 [codebook_size]: how often each code was a target

    @property
    def accuracy(self) -> float:
        return self.correct / self.masked_frames if self.masked_frames else float("nan")


class BestRqPretrainer(nn.Module):
    """Encoder + frozen quantiser + prediction head; :meth:`forward` returns the BEST-RQ loss."""

    def __init__(self, encoder: BestRqModel, quantizer_seed: int) -> None:
        super().__init__()
        config: BestRqConfig = encoder.config
        self.config = config
        self.encoder = encoder
        generator = torch.Generator().manual_seed(quantizer_seed)
        self.quantizer = RandomProjectionQuantizer(config.feature_dim, config.codebook_dim,
                                                   config.codebook_size, generator)
        self.head = nn.Linear(config.dim, config.codebook_size)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=generator)
                                   * config.init_std)
            self.head.bias.zero_()

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor, *, mask_prob: float,
                mask_span: int, noise_std: float, rng: np.random.Generator,
                noise_generator: torch.Generator) -> MaskedPrediction:
        features, frames = self.encoder.frontend(waveforms, lengths)
        targets = self.quantizer(features)
        time = features.shape[1]
        mask = torch.from_numpy(span_mask(frames.cpu().numpy(), time, mask_prob, mask_span,
                                          rng)).to(features.device)
        noise = torch.randn(features.shape, generator=noise_generator).to(features.device)
        inputs = torch.where(mask.unsqueeze(-1), noise * noise_std, features)
        hidden = self.encoder.forward_features(inputs, frames)[-1]
        logits = self.head(hidden[mask])
        masked_targets = targets[mask]
        loss = F.cross_entropy(logits, masked_targets)
        correct = int((logits.detach().argmax(-1) == masked_targets).sum())
        counts = torch.bincount(masked_targets, minlength=self.config.codebook_size)
        return MaskedPrediction(loss=loss, correct=correct, masked_frames=int(mask.sum()),
                                valid_frames=int(frames.sum()),
                                target_counts=counts.cpu().numpy().astype(np.int64))

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """All tensors for ``model.safetensors``: ``encoder.*``, ``quantizer.*``, ``head.*``."""
        tensors = {ENCODER_PREFIX + k: v for k, v in self.encoder.state_dict().items()}
        tensors.update({"quantizer." + k: v for k, v in self.quantizer.state_dict().items()})
        tensors.update({"head." + k: v for k, v in self.head.state_dict().items()})
        return tensors

    def load_checkpoint_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`checkpoint_tensors` (strict)."""
        self.load_state_dict(tensors, strict=True)
