"""torchaudio wav2vec 2.0 / HuBERT state dicts and the Lightning runs of torchaudio's HuBERT
pretraining recipe (``examples/hubert`` of pytorch/audio), mapped onto Hugging Face models by
:mod:`speechrank.encoders.torchaudio` without torchaudio or Lightning.

- a checkpoint: a ``.ckpt``, ``.pth`` or ``.pt`` file whose state dict (the file itself,
  Lightning's ``state_dict``, or a ``model`` entry with no fairseq ``cfg``/``args`` beside it)
  holds a torchaudio ``Wav2Vec2Model``: ``feature_extractor.conv_layers.0.conv.weight`` beside
  ``encoder.feature_projection.projection.weight`` under one prefix. The file is opened with
  ``weights_only=True`` and its tensors memory-mapped, so a claim costs the pickle, not the
  weights. fairseq names the same weights ``feature_extractor.conv_layers.0.0.weight`` and
  ``encoder.layers.*``, so a fairseq ``.pt`` is never claimed here, and this format is asked
  before fairseq's, which takes any ``.pt``. A ``.ckpt`` that cannot be read (a class
  ``weights_only`` refuses) is still claimed, so loading it says why;
- complete: a zip-format file whose central directory reads (``torch.save``'s format);
- run: the ``.ckpt`` files of the directory, of its ``checkpoints*`` directories (the recipe
  saves to ``checkpoints_<dataset>_<model>/``) and of ``[*/]version_*/checkpoints/`` (Lightning's
  default), and the ``.pt``/``.pth`` files of the directory itself. Files with the step of
  another (Lightning's ``last.ckpt``; the ``-v1`` copy a second ``ModelCheckpoint``, as the
  recipe has, writes at the same step) are listed once, under the plainest name;
- step: Lightning's ``global_step``; else a ``step=N`` / ``step_N`` / ``step-N`` in the file
  name; else unknown;
- training record: ``loss`` (the recipe's ``train_loss``), ``accuracy`` (its
  ``train_masked_accuracy``) and ``learning_rate`` (a ``LearningRateMonitor``'s ``lr-*``) logged
  at the greatest step at or before the checkpoint's, from the CSVLogger ``metrics.csv`` of the
  run (:mod:`speechrank.encoders.lightning_log`); none when the run kept no such file (the
  TensorBoard logger's event files are not read);
- digest: the whole file.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from speechrank.encoders.formats.base import CheckpointFormat
from speechrank.errors import SpeechrankError

LIGHTNING_SUFFIX = ".ckpt"
STATE_SUFFIXES = (".pth", ".pt")
_STEP = re.compile(r"(?:^|[-_.=])step[-_=]?(\d+)(?:$|[-_.])")
_COPY = re.compile(r"-v\d+$")

_META: dict[tuple[str, int, int, int], dict[str, Any]] = {}


def metadata(path: Path) -> dict[str, Any]:
    """``{"torchaudio": bool, "readable": bool, "lightning": bool, "global_step": int | None}``
    of a file, read once per file state (path, size, mtime, inode) in this process."""
    from speechrank.encoders.fairseq import load_weights_only
    from speechrank.encoders.torchaudio import state_dict_of

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key in _META:
        return _META[key]
    info: dict[str, Any] = {"torchaudio": False, "readable": False, "lightning": False,
                            "global_step": None}
    try:
        obj = load_weights_only(path, allowed=(), mmap=True)
    except SpeechrankError:
        _META[key] = info
        return info
    info["readable"] = True
    try:
        state = state_dict_of(obj)
    except SpeechrankError:  # two encoders in one file: ours, and loading says so
        state = {}
    if state is not None:
        info["torchaudio"] = True
        info["lightning"] = isinstance(obj, Mapping) and state is obj.get("state_dict")
        step = obj.get("global_step") if info["lightning"] else None
        if isinstance(step, int) and not isinstance(step, bool):
            info["global_step"] = step
    del obj
    _META[key] = info
    return info


def zip_complete(path: Path) -> bool:
    """Whether a ``torch.save`` file is whole: a zip (what ``torch.save`` writes, local headers
    first) whose central directory, written last, reads; a legacy (pickle) file: not empty."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    if head != b"PK\x03\x04":
        return bool(head)
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _name_rank(path: Path) -> tuple[int, str]:
    """Preference among files of one step: a step in the name, then a ``-vN`` copy, then
    ``last``, then the rest."""
    stem = path.stem
    if stem.startswith("last"):
        return 2, path.name
    if _COPY.search(stem):
        return 1, path.name
    return (0 if _STEP.search(stem) else 3), path.name


class TorchaudioFormat(CheckpointFormat):
    name = "torchaudio"
    description = ("a torchaudio wav2vec 2.0 / HuBERT state dict (.pt, .pth) or a Lightning "
                   ".ckpt of torchaudio's HuBERT recipe")

    def claims(self, path: Path) -> bool:
        if not path.is_file() or path.suffix not in (LIGHTNING_SUFFIX, *STATE_SUFFIXES):
            return False
        info = metadata(path)
        return info["torchaudio"] or (path.suffix == LIGHTNING_SUFFIX and not info["readable"])

    def complete(self, path: Path) -> bool:
        return path.is_file() and zip_complete(path)

    def run_checkpoints(self, directory: Path) -> list[Path]:
        candidates = [p for p in super().run_checkpoints(directory) if p.is_file()]
        for pattern in ("checkpoints*", "version_*/checkpoints", "*/version_*/checkpoints"):
            for sub in sorted(directory.glob(pattern)):
                if sub.is_dir():
                    candidates += [p for p in super().run_checkpoints(sub)
                                   if p.suffix == LIGHTNING_SUFFIX]
        kept: list[Path] = []
        steps: set[int] = set()
        for path in sorted(candidates, key=_name_rank):
            step = self.step(path)
            if step is not None and step in steps:
                continue  # last.ckpt, or a second callback's -v1 copy of this step
            if step is not None:
                steps.add(step)
            kept.append(path)
        return kept

    def step(self, path: Path) -> int | None:
        if path.is_file():
            step = metadata(path)["global_step"]
            if step is not None:
                return int(step)
        match = _STEP.search(path.stem)
        return int(match.group(1)) if match else None

    def training(self, path: Path) -> dict[str, float]:
        from speechrank.encoders.lightning_log import find_metrics, read_metrics, record_at

        step = self.step(path)
        if step is None:
            return {}
        return record_at(read_metrics(find_metrics(path)), step)

    def load(self, path: Path, *, device: Any, dtype: Any, normalize: bool | None,
             name: str) -> Any:
        from speechrank.encoders.torchaudio import load_torchaudio_encoder

        return load_torchaudio_encoder(path, device=device, dtype=dtype, normalize=normalize,
                                       name=name)


FORMAT = TorchaudioFormat()
