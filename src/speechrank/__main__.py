"""``python -m speechrank``: the same as the ``speechrank`` command."""

from speechrank.cli import entry

entry()
