"""Audio input: reading and resampling files, datasets from directories, manifests and corpora.

Import-light on purpose (numpy, soundfile and soxr; no torch, no scikit-learn): the seeded
splits live in :mod:`speechrank.audio.splits`.
"""

from speechrank.audio.datasets import load_dataset
from speechrank.audio.io import AUDIO_CONVENTIONS, AudioInfo, load_audio, probe_duration
from speechrank.audio.utterance import Dataset, Utterance

__all__ = [
    "AUDIO_CONVENTIONS",
    "AudioInfo",
    "Dataset",
    "Utterance",
    "load_audio",
    "load_dataset",
    "probe_duration",
]
