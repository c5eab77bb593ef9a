"""fairseq HuBERT and wav2vec 2.0 runs: the ``.pt`` files of fairseq's ``save_checkpoint``
(``fairseq/checkpoint_utils.py``), mapped onto Hugging Face models by
:mod:`speechrank.encoders.fairseq` without fairseq.

- a checkpoint: a ``.pt`` file, or a directory without ``config.json`` whose only ``.pt`` it
  is;
- complete: a zip-format file whose central directory reads (fairseq copies
  ``checkpoint_last.pt`` and ``checkpoint_best.pt`` from the numbered file without a rename,
  so a copy in progress has none yet); a legacy (pre-zip) pickle is taken as it is;
- run: the ``checkpoint*.pt`` files of the save directory: ``checkpoint<E>.pt`` (end of epoch
  E), ``checkpoint_<E>_<U>.pt`` (update U), ``checkpoint_last.pt``, ``checkpoint_best.pt``,
  ``checkpoint.best_<metric>_<value>.pt``. fairseq writes the first of these names and
  copies the file to the others, so a file with the step or the content of a numbered one
  is the same checkpoint and is listed once, under the numbered name;
- step: ``optimizer_history[-1]["num_updates"]`` (read with ``weights_only=True``, tensors
  memory-mapped, not read), else U of ``checkpoint_<E>_<U>.pt``, else unknown;
- training record (``extra_state["metrics"]``, fairseq's meters, aggregate ``train``: the
  epoch so far, else ``train_inner``: since the last log line): ``loss`` (fairseq logs it in
  bits: base 2), ``accuracy`` (HuBERT: ``correct_m_0``; wav2vec 2.0: ``_correct / _total``),
  ``learning_rate`` (``lr``), and ``val_loss`` (``extra_state["val_loss"]``);
- digest: the whole file.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from speechrank.encoders.formats.base import CheckpointFormat, finite
from speechrank.errors import SpeechrankError

SUFFIX = ".pt"
_NUMBERED = re.compile(r"^checkpoint_(\d+)_(\d+)\.pt$")
_EPOCH = re.compile(r"^checkpoint(\d+)\.pt$")
#: Preference among names of one checkpoint: numbered, then last, then best, then the rest.
_ALIAS_RANK = (("checkpoint_last", 1), ("checkpoint_best", 2))

_META: dict[tuple[str, int, int, int], dict[str, Any]] = {}


def _numbered(name: str) -> bool:
    return bool(_NUMBERED.match(name) or _EPOCH.match(name))


def _rank(name: str) -> int:
    if _numbered(name):
        return 0
    for prefix, rank in _ALIAS_RANK:
        if name.startswith(prefix):
            return rank
    return 3


def _meter(meters: Any, key: str, part: str = "avg") -> float | None:
    """One meter of a fairseq ``MetersDict.state_dict()`` (``[(priority, key, class,
    state), ...]``): its average (``sum / count``, else ``val``), its ``sum`` or ``val``."""
    if not isinstance(meters, (list, tuple)):
        return None
    for item in meters:
        if not (isinstance(item, (list, tuple)) and len(item) == 4 and item[1] == key
                and isinstance(item[3], Mapping)):
            continue
        state = item[3]
        if part == "avg":
            total, count = finite(state.get("sum")), finite(state.get("count"))
            if total is not None and count:
                return total / count
            return finite(state.get("val"))
        return finite(state.get(part))
    return None


def metadata(path: Path) -> dict[str, Any]:
    """``{"num_updates": int | None, "training": {...}}`` of a fairseq file, read once per
    file state (path, size, mtime, inode) in this process; empty when the file is unreadable
    (loading it then says why)."""
    from speechrank.encoders.fairseq import read_checkpoint

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key in _META:
        return _META[key]
    try:
        state = read_checkpoint(path, mmap=True)
    except SpeechrankError:
        _META[key] = {}
        return _META[key]
    history = state.get("optimizer_history")
    updates = None
    if isinstance(history, list) and history and isinstance(history[-1], Mapping):
        value = history[-1].get("num_updates")
        if isinstance(value, int) and not isinstance(value, bool):
            updates = value
    extra = state.get("extra_state") if isinstance(state.get("extra_state"), Mapping) else {}
    training: dict[str, float] = {}
    metrics = extra.get("metrics") if isinstance(extra.get("metrics"), Mapping) else {}
    for aggregate in ("train", "train_inner"):
        meters = metrics.get(aggregate)
        loss = _meter(meters, "loss")
        if loss is None:
            continue
        training["loss"] = loss
        correct, total = _meter(meters, "_correct", "sum"), _meter(meters, "_total", "sum")
        accuracy = (correct / total if correct is not None and total else
                    _meter(meters, "correct_m_0"))
        if accuracy is not None:
            training["accuracy"] = accuracy
        lr = _meter(meters, "lr", "val")
        if lr is not None:
            training["learning_rate"] = lr
        break
    val_loss = finite(extra.get("val_loss"))
    if val_loss is not None:
        training["val_loss"] = val_loss
    _META[key] = {"num_updates": updates, "training": training}
    del state
    return _META[key]


def checkpoint_file(path: Path) -> Path | None:
    """The ``.pt`` file a MODEL path names: the file itself, or the only ``.pt`` of a
    directory without ``config.json``; None when ``path`` is neither."""
    from speechrank.encoders.formats.huggingface import has_model_config

    if path.is_file():
        return path if path.suffix == SUFFIX else None
    if path.is_dir() and not has_model_config(path):
        found = sorted(p for p in path.glob(f"*{SUFFIX}") if p.is_file())
        return found[0] if len(found) == 1 else None
    return None


class FairseqFormat(CheckpointFormat):
    name = "fairseq"
    description = "a fairseq HuBERT or wav2vec 2.0 checkpoint (.pt)"

    def claims(self, path: Path) -> bool:
        return checkpoint_file(path) is not None

    def complete(self, path: Path) -> bool:
        file = checkpoint_file(path)
        if file is None:
            return False
        with file.open("rb") as handle:
            head = handle.read(4)
        if head != b"PK\x03\x04":  # not a zip: a legacy pickle is taken as it is
            return head[:1] == b"\x80"
        try:
            with zipfile.ZipFile(file) as archive:
                return bool(archive.namelist())
        except (OSError, zipfile.BadZipFile):
            return False

    def run_checkpoints(self, directory: Path) -> list[Path]:
        files = [p for p in super().run_checkpoints(directory)
                 if p.is_file() and p.name.startswith("checkpoint")]
        kept: list[Path] = []
        for file in sorted(files, key=lambda p: (_rank(p.name), p.name)):
            if not any(self._same(file, other) for other in kept):
                kept.append(file)
        return kept

    def _same(self, file: Path, kept: Path) -> bool:
        """Whether ``file`` (a name ranked after ``kept``) is a copy of ``kept``: the same
        step from the files' own metadata, else the same content."""
        if _rank(file.name) == 0 and _rank(kept.name) == 0:
            return False  # two numbered names are two saves
        step, other = self.step(file), self.step(kept)
        if step is not None and other is not None:
            return step == other
        return (file.stat().st_size == kept.stat().st_size
                and self.digest(file) == self.digest(kept))

    def step(self, path: Path) -> int | None:
        file = checkpoint_file(path) or path
        updates = metadata(file).get("num_updates")
        if updates is not None:
            return int(updates)
        match = _NUMBERED.match(file.name)
        return int(match.group(2)) if match else None

    def training(self, path: Path) -> dict[str, float]:
        file = checkpoint_file(path) or path
        return dict(metadata(file).get("training", {}))

    def locate(self, path: Path) -> Path:
        return checkpoint_file(path) or path

    def content_files(self, path: Path) -> list[Path]:
        file = checkpoint_file(path)
        return [file] if file is not None else []

    def digest(self, path: Path) -> str | None:
        file = checkpoint_file(path)
        return None if file is None else super().digest(file)

    def load(self, path: Path, *, device: Any, dtype: Any, normalize: bool | None,
             name: str) -> Any:
        from speechrank.encoders.fairseq import load_fairseq_encoder

        file = checkpoint_file(path)
        if file is None:
            raise SpeechrankError(f"{path}: not a fairseq checkpoint")
        return load_fairseq_encoder(file, device=device, dtype=dtype, normalize=normalize,
                                    name=name)


FORMAT = FairseqFormat()
