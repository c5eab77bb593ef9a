"""Pretraining speechrank's own small self-supervised encoder on CPU.

``pretrain(DATA, OUT, TrainRun(minutes=..., steps=...))`` is the Python side of
``speechrank pretrain DATA OUT``: it trains :class:`speechrank.encoders.bestrq.BestRqModel` by
masked prediction (by default of HuBERT-style k-means targets under input noise; BEST-RQ's
random-projection targets on request; see :mod:`speechrank.pretrain.recipe`) and writes
checkpoint directories that ``speechrank rank``, ``probe`` and ``sweep`` read as MODEL
(:func:`speechrank.encoders.bestrq.load_bestrq_checkpoint`). :func:`load_recipe` reads a recipe
file (``speechrank pretrain --recipe FILE``).
"""

from speechrank.pretrain.recipe import load_recipe
from speechrank.pretrain.trainer import (
    LOG_FILE,
    Monitor,
    PretrainSummary,
    StopHook,
    TrainConfig,
    TrainRun,
    WarmupInverseSqrt,
    pretrain,
)

__all__ = ["LOG_FILE", "Monitor", "PretrainSummary", "StopHook", "TrainConfig", "TrainRun",
           "WarmupInverseSqrt", "load_recipe", "pretrain"]
