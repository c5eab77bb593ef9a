"""Levenshtein edit distance and phone error rate (PER).

PER is the metric of the SUPERB phoneme-recognition task (Yang et al., "SUPERB: Speech
processing Universal PERformance Benchmark", Interspeech 2021, arXiv 2105.01051): the total
number of substitutions, deletions and insertions that turn each hypothesis into its reference
(Levenshtein, "Binary codes capable of correcting deletions, insertions and reversals", 1966),
divided by the total number of reference phones, summed over the corpus (not averaged per
utterance).

Written here rather than imported: none of the usual packages (``editdistance``, ``jiwer``,
``rapidfuzz``, ``Levenshtein``) is a dependency of speechrank, the algorithm is a dozen lines,
and this version works on sequences of any hashable tokens (multi-character IPA phones such as
``"aɪ"`` must count as one token, which character-level string routines would not do).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["edit_distance", "phone_error_rate"]


def edit_distance(reference: Sequence[Hashable], hypothesis: Sequence[Hashable]) -> int:
    """The Levenshtein distance between two token sequences (unit costs).

    The dynamic programme runs one row per reference token, each row vectorised with numpy:
    deletions and substitutions come from the previous row; the insertion recurrence
    ``d[j] = min(t[j], d[j-1] + 1)`` is solved in one pass as
    ``d[j] = j + min_{k<=j} (t[k] - k)`` (a running minimum).
    """
    ref, hyp = list(reference), list(hypothesis)
    if not ref:
        return len(hyp)
    if not hyp:
        return len(ref)
    codes: dict[Hashable, int] = {}
    ref_codes = np.array([codes.setdefault(t, len(codes)) for t in ref], dtype=np.int64)
    hyp_codes = np.array([codes.setdefault(t, len(codes)) for t in hyp], dtype=np.int64)
    steps = np.arange(len(hyp) + 1, dtype=np.int64)
    previous = steps.copy()  # distance from the empty reference prefix
    current = np.empty_like(previous)
    for i, token in enumerate(ref_codes, start=1):
        current[0] = i
        np.minimum(previous[1:] + 1, previous[:-1] + (hyp_codes != token), out=current[1:])
        previous = np.minimum.accumulate(current - steps) + steps
    return int(previous[-1])


def phone_error_rate(references: Sequence[Sequence[Hashable]],
                     hypotheses: Sequence[Sequence[Hashable]]) -> float:
    """Corpus PER: total edit distance over total reference length (SUPERB's definition).

    Raises ``ValueError`` when the two lists differ in length or the references hold no
    phone at all (the rate would be undefined).
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    total = sum(len(ref) for ref in references)
    if total == 0:
        raise ValueError("the references contain no phones; PER is undefined")
    errors = sum(edit_distance(ref, hyp) for ref, hyp in zip(references, hypotheses,
                                                              strict=True))
    return errors / total
