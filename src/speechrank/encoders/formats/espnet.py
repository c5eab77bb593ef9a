"""ESPnet HuBERT pretraining runs (the ``hubert`` task of ``espnet2``), mapped onto Hugging Face
models by :mod:`speechrank.encoders.espnet` without ESPnet.

- a checkpoint: a ``.pth`` file beside an ESPnet ``config.yaml`` whose ``encoder`` is
  ``torchaudio_hubert`` or ``hubert_pretrain`` (ESPnet's trainer saves ``model.state_dict()``
  as ``<N>epoch.pth`` and links ``valid.<metric>.best.pth`` and ``latest.pth`` to one);
  a configuration speechrank cannot follow (a feature frontend) is still claimed, so loading
  says why;
- complete: a zip-format file whose central directory reads;
- run: the ``<N>epoch.pth`` files of the directory (the ``*.best.pth`` and ``latest.pth``
  links name one of them; ``checkpoint.pth`` is the resume state of the latest);
- step: ESPnet saves once per epoch and keeps no step count in the file, so the step is the
  epoch N of ``<N>epoch.pth`` (of the file a link points to); it orders the run but is not
  comparable with other frameworks' optimizer steps;
- training record: none (ESPnet keeps its per-epoch statistics in ``checkpoint.pth`` and
  ``train.log``, which are not read);
- digest: the whole file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from speechrank.encoders.formats.base import CheckpointFormat
from speechrank.encoders.formats.torchaudio import zip_complete
from speechrank.errors import SpeechrankError

SUFFIX = ".pth"
_EPOCH = re.compile(r"^(\d+)epoch\.pth$")


def _espnet_run(directory: Path) -> bool:
    from speechrank.encoders.espnet import read_config

    try:
        return read_config(directory) is not None
    except SpeechrankError:  # an ESPnet HuBERT run speechrank cannot follow: still ESPnet's
        return True


class EspnetFormat(CheckpointFormat):
    name = "espnet"
    description = "an ESPnet HuBERT pretraining checkpoint (.pth beside the run's config.yaml)"

    def claims(self, path: Path) -> bool:
        return path.is_file() and path.suffix == SUFFIX and _espnet_run(path.parent)

    def complete(self, path: Path) -> bool:
        return path.is_file() and zip_complete(path)

    def run_checkpoints(self, directory: Path) -> list[Path]:
        return [p for p in super().run_checkpoints(directory)
                if _EPOCH.match(p.name) and not p.is_symlink()]

    def step(self, path: Path) -> int | None:
        match = _EPOCH.match(path.resolve().name if path.is_symlink() else path.name)
        return int(match.group(1)) if match else None

    def load(self, path: Path, *, device: Any, dtype: Any, normalize: bool | None,
             name: str) -> Any:
        from speechrank.encoders.espnet import load_espnet_encoder

        return load_espnet_encoder(path, device=device, dtype=dtype, normalize=normalize,
                                   name=name)


FORMAT = EspnetFormat()
