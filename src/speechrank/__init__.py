"""speechrank: label-free assessment of self-supervised speech encoders by embedding rank.

Implements RankMe-t (Aldeneh et al., "Towards Automatic Assessment of Self-Supervised Speech
Models using Rank", ICASSP 2025, arXiv 2409.10787) and related spectral metrics for every layer
of a speech encoder, the downstream probes that validate them, checkpoint sweeps, a results
store, the rank-vs-probe analysis, an HTML report and a training monitor.
"""

__version__ = "0.1.0"
