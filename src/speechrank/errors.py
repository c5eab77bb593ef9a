"""Exceptions that mean "the user asked for something we cannot do".

The command line turns every :class:`SpeechrankError` into one line on stderr and a non-zero
exit code; anything else is a bug and keeps its traceback.
"""


class SpeechrankError(Exception):
    """A user-facing error: bad path, unknown format, bad option, unusable model."""


class AudioError(SpeechrankError):
    """An audio file cannot be used; ``reason`` is a short machine-friendly tag."""

    def __init__(self, path: str, reason: str, detail: str = "") -> None:
        self.path = path
        self.reason = reason
        self.detail = detail
        message = f"{path}: {reason}" + (f" ({detail})" if detail else "")
        super().__init__(message)
