"""Known corpus layouts for ``FORMAT:PATH`` data specs, one module per corpus."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from speechrank.audio.layouts import (
    fsdd,
    iemocap,
    librispeech,
    speechcommands,
    synthetic,
    voxceleb1,
)
from speechrank.audio.utterance import Dataset


@dataclasses.dataclass(frozen=True)
class Layout:
    """A corpus layout: its loader, the ``#key=value`` options it takes, a one-line summary."""

    name: str
    load: Callable[..., Dataset]
    options: Mapping[str, Callable[[str], Any]]
    summary: str


LAYOUTS: dict[str, Layout] = {
    layout.name: layout for layout in (
        Layout("librispeech", librispeech.load, {},
               "PATH/<subset>/<speaker>/<chapter>/*.flac + *.trans.txt"),
        Layout("speechcommands", speechcommands.load,
               {"silence_fraction": float, "seed": int},
               "PATH/<word>/<hash>_nohash_<n>.wav + validation/testing lists (v0.01, v0.02)"),
        Layout("voxceleb1", voxceleb1.load, {},
               "PATH/wav/idXXXXX/<video>/<n>.wav + iden_split.txt"),
        Layout("iemocap", iemocap.load, {"fold": int, "seed": int},
               "PATH/SessionN/sentences/wav + dialog/EmoEvaluation, 4 classes"),
        Layout("fsdd", fsdd.load, {},
               "PATH/recordings/{digit}_{speaker}_{index}.wav"),
        Layout("synthetic", synthetic.load, {"manifest": str},
               "OUT/*.jsonl manifests written by `speechrank corpus OUT`"),
    )
}

__all__ = ["LAYOUTS", "Layout"]
