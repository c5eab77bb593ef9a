"""Fitting HuBERT-style frame targets: k-means on the pretraining audio's own frames.

HuBERT's first iteration (Hsu et al., IEEE/ACM TASLP 2021, arXiv 2106.07447, section III-B)
clusters MFCC frames of the training audio with k-means (``K = 100``) and trains the encoder to
predict each masked frame's cluster. We cluster the encoder front end's own features (the
globally normalised, stacked log-mels that enter the encoder), which carry the same spectral
envelope information as MFCCs without a second front end. scikit-learn's ``KMeans`` does the
clustering; what is ours is only the seeded choice of frames and the bookkeeping.

Determinism: the frames are a seeded subset (a generator seeded by ``seed``), and the k-means
runs with one ``random_state`` on one BLAS/OpenMP thread, so the same audio and seed give the
same centroids on one machine.
"""

from __future__ import annotations

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from speechrank.encoders.bestrq import LogMelFrontend
from speechrank.errors import SpeechrankError
from speechrank.pretrain.data import AudioBank
from speechrank.pretrain.objective import with_deltas

__all__ = ["fit_kmeans_centroids", "frontend_frames"]


@torch.no_grad()
def frontend_frames(bank: AudioBank, frontend: LogMelFrontend, *, max_frames: int,
                    seed: int, deltas: bool = False, chunk_seconds: float = 30.0) -> np.ndarray:
    """Up to ``max_frames`` front-end feature frames ``[N, feature_dim]`` (float32) of the
    bank's audio, a uniformly drawn seeded subset when there are more."""
    config = frontend.config
    chunk = max(int(chunk_seconds * bank.sample_rate), config.n_fft)
    pieces: list[np.ndarray] = []
    for index in range(len(bank)):
        start, end = int(bank.offsets[index]), int(bank.offsets[index + 1])
        for begin in range(start, end, chunk):
            wave = torch.from_numpy(bank.samples[begin:min(begin + chunk, end)])
            features, frames = frontend(wave[None], torch.tensor([wave.numel()]))
            features = features[:, :int(frames[0])]
            if deltas:
                features = with_deltas(features)
            pieces.append(features[0].numpy())
    width = config.feature_dim * (2 if deltas else 1)
    frames_all = np.concatenate(pieces) if pieces else np.zeros((0, width), np.float32)
    if len(frames_all) > max_frames:
        rng = np.random.default_rng([seed, 1])
        keep = np.sort(rng.choice(len(frames_all), size=max_frames, replace=False))
        frames_all = frames_all[keep]
    return np.ascontiguousarray(frames_all, dtype=np.float32)


def fit_kmeans_centroids(frames: np.ndarray, num_clusters: int, *, seed: int,
                         max_iter: int = 100) -> tuple[np.ndarray, dict[str, float]]:
    """Centroids ``[num_clusters, F]`` of k-means (k-means++ initialisation, Lloyd
    iterations; scikit-learn) on ``frames``, and a summary (inertia per frame, iterations,
    frames used, cluster-size perplexity)."""
    from sklearn.cluster import KMeans

    if len(frames) < num_clusters:
        raise SpeechrankError(f"k-means targets need at least {num_clusters} frames of "
                              f"pretraining audio, got {len(frames)}")
    with threadpool_limits(limits=1):
        kmeans = KMeans(n_clusters=num_clusters, n_init=1, max_iter=max_iter,
                        random_state=seed).fit(frames)
    sizes = np.bincount(kmeans.labels_, minlength=num_clusters).astype(np.float64)
    p = sizes[sizes > 0] / sizes.sum()
    summary = {"frames": len(frames), "iterations": int(kmeans.n_iter_),
               "inertia_per_frame": float(kmeans.inertia_) / len(frames),
               "cluster_perplexity": float(np.exp(-(p * np.log(p)).sum()))}
    return kmeans.cluster_centers_.astype(np.float32), summary
