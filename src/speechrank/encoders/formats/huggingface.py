"""Hugging Face model directories (``save_pretrained``): ``config.json`` and the weights.

- claimed: a directory with ``config.json`` (after the formats that also keep one);
- complete: ``config.json`` and weights: ``model.safetensors`` or ``pytorch_model.bin``, or a
  sharded index (``*.index.json``) whose every shard is there;
- step: the name (``checkpoint-500``, ``step_1000``), else unknown; no training record;
- digest: ``config.json`` and the weight files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechrank.encoders.formats.base import CheckpointFormat, read_json

CONFIG_FILE = "config.json"
#: Single-file weights, in the order ``from_pretrained`` prefers them.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: Indexes of sharded weights (their ``weight_map`` names the shards).
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def weight_files(path: Path) -> list[Path]:
    """The files holding a model directory's weights (empty when they are incomplete)."""
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return [path / name]
    for name in INDEX_FILES:
        index = read_json(path / name)
        if index is None:
            continue
        shards = sorted({str(v) for v in (index.get("weight_map") or {}).values()})
        files = [path / shard for shard in shards]
        if shards and all(file.is_file() for file in files):
            return [path / name, *files]
    return []


def has_model_config(path: Path) -> bool:
    """Whether ``path`` is a directory with a Hugging Face ``config.json``."""
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def load_model_directory(path: Path, *, device: Any, dtype: Any, normalize: bool | None,
                         name: str) -> Any:
    """A Hugging Face model directory as a :class:`~speechrank.encoders.huggingface.
    HuggingFaceEncoder` named ``name`` (the MODEL string when it names ``path``)."""
    from speechrank.encoders.huggingface import load_pretrained

    spec = name if Path(name).expanduser() == path else str(path)
    return load_pretrained(spec, device=device, dtype=dtype, normalize=normalize)


class HuggingFaceFormat(CheckpointFormat):
    name = "huggingface"
    description = "a Hugging Face model directory (save_pretrained)"

    def claims(self, path: Path) -> bool:
        return has_model_config(path)

    def complete(self, path: Path) -> bool:
        return bool(weight_files(path))

    def content_files(self, path: Path) -> list[Path]:
        return [path / CONFIG_FILE, *weight_files(path)]

    def load(self, path: Path, *, device: Any, dtype: Any, normalize: bool | None,
             name: str) -> Any:
        return load_model_directory(path, device=device, dtype=dtype, normalize=normalize,
                                    name=name)


FORMAT = HuggingFaceFormat()
