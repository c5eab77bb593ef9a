"""The one progress contract between the library and whatever shows progress.

Long library calls (``run_rank``, ``run_probe``, ``pretrain``, ``sweep``, ``make_corpus``,
``run_demo``) report through a :class:`Progress`: a stage starts with a total (or ``None``
when unknown) and a unit, advances, ends, and the call may log one-line messages. The library
never draws anything itself and never imports rich; the command line implements the protocol
with rich bars (``speechrank.cli``), a test can record the calls, and ``None`` means silence.

Stages in use: ``encode`` (seconds of audio), ``probe`` (layers), ``load`` (files),
``train`` (steps, or seconds for a time budget), ``corpus`` (clips), ``sweep`` (units).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from speechrank.errors import SpeechrankError

__all__ = ["NULL_PROGRESS", "NullProgress", "Progress", "ProgressArg", "RecordingProgress",
           "as_progress"]


@runtime_checkable
class Progress(Protocol):
    """Receives progress from the library (see the module docstring)."""

    def start(self, stage: str, total: float | None, unit: str) -> None:
        """A stage begins; ``total`` in ``unit`` (``None``: not known yet)."""

    def advance(self, stage: str, amount: float, note: str = "") -> None:
        """``amount`` more of ``stage`` is done; ``note`` is a short status (``loss 3.1``)."""

    def end(self, stage: str) -> None:
        """The stage is over (its bar may go)."""

    def log(self, message: str) -> None:
        """A one-line message for the user (plain text, never markup)."""


class NullProgress:
    """Shows nothing."""

    def start(self, stage: str, total: float | None, unit: str) -> None:
        return None

    def advance(self, stage: str, amount: float, note: str = "") -> None:
        return None

    def end(self, stage: str) -> None:
        return None

    def log(self, message: str) -> None:
        return None


NULL_PROGRESS = NullProgress()


class RecordingProgress:
    """Keeps every call as a tuple (for tests and for callers that want a log)."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def start(self, stage: str, total: float | None, unit: str) -> None:
        self.events.append(("start", stage, total, unit))

    def advance(self, stage: str, amount: float, note: str = "") -> None:
        self.events.append(("advance", stage, amount))

    def end(self, stage: str) -> None:
        self.events.append(("end", stage))

    def log(self, message: str) -> None:
        self.events.append(("log", message))

    def total(self, stage: str) -> float:
        """Sum of the advances of ``stage``."""
        return sum(e[2] for e in self.events if e[0] == "advance" and e[1] == stage)


#: What a library call accepts: a :class:`Progress`, or ``None``/``False`` for silence.
#: ``True`` is accepted for compatibility and also means silence: the library does not draw.
ProgressArg = Progress | bool | None


def as_progress(progress: ProgressArg) -> Progress:
    """The :class:`Progress` to report to (``None``, ``False`` and ``True``: silence)."""
    if progress is None or isinstance(progress, bool):
        return NULL_PROGRESS
    if isinstance(progress, Progress):
        return progress
    raise SpeechrankError(
        f"progress must be a speechrank.progress.Progress or None, got {progress!r}")
