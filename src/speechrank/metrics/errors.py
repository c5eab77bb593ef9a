"""Errors raised by the metrics engine.

All of them are :class:`~speechrank.errors.SpeechrankError` (one line, shown to the user as
is) and also :class:`ValueError`, so library callers can catch either.
"""

from __future__ import annotations

from speechrank.errors import SpeechrankError


class MetricInputError(SpeechrankError, ValueError):
    """Rows, masks, groups or options that a metric or accumulator cannot use."""


class NonFiniteError(MetricInputError):
    """Rows holding NaN or Inf (or values so large that their float64 squares overflow).

    Raised by ``update`` before any state changes: the accumulator stays as it was.
    """


class AccumulatorFileError(MetricInputError):
    """A saved accumulator file that cannot be read back (missing, corrupt, other format)."""
