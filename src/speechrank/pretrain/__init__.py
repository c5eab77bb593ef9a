"""Pretraining speechrank's own small self-supervised encoder (BEST-RQ) on CPU.

``pretrain(DATA, OUT, minutes=..., steps=...)`` is the Python side of
``speechrank pretrain DATA OUT``: it trains :class:`speechrank.encoders.bestrq.BestRqModel` with
the BEST-RQ objective and writes checkpoint directories that ``speechrank rank``, ``probe`` and
``sweep`` read as MODEL (:func:`speechrank.encoders.bestrq.load_bestrq_checkpoint`).
"""

from speechrank.pretrain.trainer import (
    LOG_FILE,
    Monitor,
    PretrainSummary,
    TrainConfig,
    WarmupInverseSqrt,
    pretrain,
)

__all__ = ["LOG_FILE", "Monitor", "PretrainSummary", "TrainConfig", "WarmupInverseSqrt",
           "pretrain"]
