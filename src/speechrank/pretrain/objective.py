"""The masked-prediction objectives: BEST-RQ or HuBERT-style targets, span masks, noise.

Two ways to make the frame targets, both frozen before step 0 and saved with the weights:

- ``bestrq``: a random-projection quantiser (below);
- ``hubert``: the nearest of ``K`` k-means centroids fitted on the pretraining audio's own
  (normalised, stacked log-mel) frames, the first iteration of HuBERT (Hsu et al., "HuBERT:
  Self-Supervised Speech Representation Learning by Masked Prediction of Hidden Units",
  IEEE/ACM TASLP 2021, arXiv 2106.07447), which clusters MFCC frames with ``K = 100``.

Either target can be paired with *additive-noise augmentation* of the encoder's input while the
targets come from the un-augmented audio (the denoising masked prediction of WavLM, Chen et al.,
IEEE JSTSP 2022, arXiv 2110.13900, which mixes noise or a second utterance into the input and
keeps the clean utterance's targets): the encoder must predict what was said under the noise.

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
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from speechrank.encoders.bestrq import ENCODER_PREFIX, BestRqConfig, BestRqModel

__all__ = ["BatchRandom", "BestRqPretrainer", "KMeansQuantizer", "MaskedPrediction", "Masking",
           "RandomProjectionQuantizer", "TargetKind", "add_noise", "span_mask", "with_deltas"]


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


class KMeansQuantizer(nn.Module):
    """HuBERT's first-iteration targets: the index of the nearest of ``num_clusters`` centroids
    (squared Euclidean distance) of the frontend's features. The centroids are a buffer, set
    once by :func:`speechrank.pretrain.targets.fit_kmeans_centroids` before step 0 and saved
    with the weights; they are never trained."""

    def __init__(self, feature_dim: int, num_clusters: int, *, deltas: bool = False) -> None:
        super().__init__()
        self.deltas = deltas
        width = 2 * feature_dim if deltas else feature_dim
        self.register_buffer("centroids", torch.zeros(num_clusters, width))

    def set_centroids(self, centroids: torch.Tensor) -> None:
        self.centroids.copy_(torch.as_tensor(centroids, dtype=torch.float32))

    @torch.no_grad()
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, T, feature_dim]`` features -> ``[B, T]`` int64 cluster indices."""
        if self.deltas:
            features = with_deltas(features)
        # argmin_k ||x - c_k||^2 = argmax_k (x . c_k - ||c_k||^2 / 2)
        half_norms = 0.5 * self.centroids.square().sum(-1)
        return (features @ self.centroids.T - half_norms).argmax(dim=-1)


def with_deltas(features: torch.Tensor) -> torch.Tensor:
    """``[B, T, F]`` -> ``[B, T, 2F]``: the features and their time derivative, the central
    difference ``(x[t+1] - x[t-1]) / 2`` (one-sided at the ends), as the delta features that
    HuBERT's MFCC targets include."""
    if features.shape[1] < 2:
        return torch.cat([features, torch.zeros_like(features)], dim=-1)
    padded = torch.cat([features[:, :1], features, features[:, -1:]], dim=1)
    delta = (padded[:, 2:] - padded[:, :-2]) / 2
    return torch.cat([features, delta], dim=-1)


def add_noise(waveforms: torch.Tensor, lengths: torch.Tensor, snr_db: torch.Tensor,
              generator: torch.Generator) -> torch.Tensor:
    """White Gaussian noise added to each row's valid samples at the row's ``snr_db`` (the
    noise power is the row's mean valid-sample power divided by ``10 ** (snr_db / 10)``);
    padding stays zero. A silent row stays silent."""
    samples = waveforms.shape[1]
    valid = (torch.arange(samples)[None, :] < lengths[:, None]).to(waveforms.dtype)
    power = (waveforms.square() * valid).sum(1) / lengths.clamp(min=1).to(waveforms.dtype)
    scale = torch.sqrt(power / torch.pow(10.0, snr_db.to(waveforms.dtype) / 10.0))
    noise = torch.randn(waveforms.shape, generator=generator)
    return waveforms + noise * scale[:, None] * valid


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


TargetKind = Literal["bestrq", "hubert"]


@dataclasses.dataclass(frozen=True)
class Masking:
    """How a batch's input is masked and what the loss counts (the recipe's part of it).

    ``mask_prob``: each frame starts a span of ``mask_span`` masked frames with this
    probability; masked frames are replaced by Gaussian noise of ``noise_std``. The loss is
    the cross-entropy on masked frames plus ``unmasked_weight`` times the cross-entropy on
    the valid unmasked frames (HuBERT's ``alpha``/``1 - alpha`` weighting; 0 = masked
    frames only).
    """

    mask_prob: float
    mask_span: int
    noise_std: float
    unmasked_weight: float = 0.0


@dataclasses.dataclass(frozen=True)
class BatchRandom:
    """The random streams of one batch: the mask positions (``rng``), the noise on masked
    frames and on the input (``noise``), and, as a control, the permutation of the targets
    (``shuffle``; ``None``: targets stay where they are)."""

    rng: np.random.Generator
    noise: torch.Generator
    shuffle: np.random.Generator | None = None


class BestRqPretrainer(nn.Module):
    """Encoder + frozen target maker + prediction head; :meth:`forward` returns the loss.

    ``targets="bestrq"`` (the default) makes targets with a :class:`RandomProjectionQuantizer`
    of ``config.codebook_size`` codes; ``targets="hubert"`` with a :class:`KMeansQuantizer` of
    ``num_clusters`` centroids, which the trainer fits before step 0.
    """

    def __init__(self, encoder: BestRqModel, quantizer_seed: int, *,
                 targets: TargetKind = "bestrq", num_clusters: int = 100,
                 kmeans_deltas: bool = False) -> None:
        super().__init__()
        config: BestRqConfig = encoder.config
        self.config = config
        self.encoder = encoder
        self.targets = targets
        generator = torch.Generator().manual_seed(quantizer_seed)
        self.quantizer: RandomProjectionQuantizer | KMeansQuantizer
        if targets == "bestrq":
            self.quantizer = RandomProjectionQuantizer(config.feature_dim, config.codebook_dim,
                                                       config.codebook_size, generator)
            self.num_targets = config.codebook_size
        elif targets == "hubert":
            self.quantizer = KMeansQuantizer(config.feature_dim, num_clusters,
                                             deltas=kmeans_deltas)
            self.num_targets = num_clusters
        else:
            raise ValueError(f"unknown targets {targets!r}")
        self.head = nn.Linear(config.dim, self.num_targets)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=generator)
                                   * config.init_std)
            self.head.bias.zero_()

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor, masking: Masking,
                random: BatchRandom, snr_db: torch.Tensor | None = None) -> MaskedPrediction:
        """The loss of one batch, masked as ``masking`` says with the streams of ``random``.

        ``snr_db`` (``[B]``, optional) adds white noise to each row's input at that SNR while
        the targets come from the un-augmented waveforms. ``random.shuffle`` (a control, not a
        recipe) permutes the targets across the batch's valid frames with that generator: they
        keep their frequencies but say nothing about the input.
        """
        shuffle, noise_generator = random.shuffle, random.noise
        mask_prob, mask_span = masking.mask_prob, masking.mask_span
        noise_std, unmasked_weight = masking.noise_std, masking.unmasked_weight
        rng = random.rng
        features, frames = self.encoder.frontend(waveforms, lengths)
        targets = self.quantizer(features)
        if shuffle is not None:
            valid = torch.arange(targets.shape[1], device=targets.device)[None, :] < frames[:, None]
            kept = targets[valid]
            order = torch.from_numpy(shuffle.permutation(kept.numel())).to(kept.device)
            targets = targets.clone()
            targets[valid] = kept[order]
        if snr_db is not None:
            noisy = add_noise(waveforms, lengths, snr_db, noise_generator)
            features, _ = self.encoder.frontend(noisy, lengths)
        time = features.shape[1]
        mask = torch.from_numpy(span_mask(frames.cpu().numpy(), time, mask_prob, mask_span,
                                          rng)).to(features.device)
        noise = torch.randn(features.shape, generator=noise_generator).to(features.device)
        inputs = torch.where(mask.unsqueeze(-1), noise * noise_std, features)
        hidden = self.encoder.forward_features(inputs, frames)[-1]
        logits = self.head(hidden[mask])
        masked_targets = targets[mask]
        loss = F.cross_entropy(logits, masked_targets)
        if unmasked_weight > 0:
            valid = torch.arange(time, device=features.device)[None, :] < frames[:, None]
            unmasked = valid & ~mask
            if bool(unmasked.any()):
                loss = loss + unmasked_weight * F.cross_entropy(self.head(hidden[unmasked]),
                                                                targets[unmasked])
        correct = int((logits.detach().argmax(-1) == masked_targets).sum())
        counts = torch.bincount(masked_targets, minlength=self.num_targets)
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
