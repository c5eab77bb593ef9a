"""``speechrank rank``: label-free metrics of every layer in one pass over real audio.

RankMe-t (Aldeneh et al., ICASSP 2025, arXiv 2409.10787) is RankMe (Garrido et al., ICML 2023)
of the matrix whose rows are the per-utterance *time sums* of a layer's valid frames. This
module feeds one :class:`~speechrank.metrics.SpectralAccumulator` per (layer, pooling) from a
single pass of the encoder and turns each into the tidy rows of DESIGN.md section 2.

Poolings (each a named option, never silently mixed):

- ``sum``: one row per utterance, the sum over its valid frames (the paper's RankMe-t);
- ``mean``: one row per utterance, the mean over its valid frames (equal to ``sum`` up to a
  per-row scale, so the value differs from ``sum`` unless every utterance has the same length);
- ``frames``: frame vectors as rows, at most ``max_frames`` of them, spread evenly across
  utterances (water-filling: every utterance gives the same number of frames unless it has
  fewer) and chosen within an utterance by a generator seeded with ``(seed, uid)``, so the
  choice does not depend on batch order.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from speechrank import __version__, distributed
from speechrank.accumulate import LayerAccumulators, frame_quotas, metric_rows
from speechrank.audio.datasets import load_dataset
from speechrank.audio.io import AUDIO_CONVENTIONS
from speechrank.audio.splits import subset
from speechrank.audio.utterance import Dataset
from speechrank.encoders import load_encoder
from speechrank.encoders.base import SpeechEncoder
from speechrank.errors import SpeechrankError
from speechrank.extract import PlannedUtterance, SkipLog, iter_encoded, plan_utterances
from speechrank.metrics import SPECTRAL_METRIC_NAMES
from speechrank.options import (
    DEFAULT_MAX_FRAMES,
    DEFAULT_NUM_UTTERANCES,
    POOLINGS,
    RunOptions,
    resolve_options,
)
from speechrank.progress import ProgressArg, as_progress
from speechrank.results import ResultRow
from speechrank.selection import parse_choices, parse_layers

# Re-exported: these lived here before the accumulation and selection modules existed.
__all__ = ["DEFAULT_MAX_FRAMES", "DEFAULT_NUM_UTTERANCES", "DEFAULT_POOLINGS", "POOLINGS",
           "LayerAccumulators", "RankResult", "frame_quotas", "metric_rows", "parse_choices",
           "parse_layers", "run_rank"]

DEFAULT_POOLINGS: tuple[str, ...] = POOLINGS


@dataclasses.dataclass
class RankResult:
    """What ``rank`` measured: tidy rows plus everything the JSON output records."""

    rows: list[ResultRow]
    info: dict[str, Any]
    accumulators: LayerAccumulators

    def to_json(self) -> dict[str, Any]:
        return {**self.info, "results": [row.to_dict() for row in self.rows]}


def _versions() -> dict[str, str]:
    import scipy
    import transformers

    return {"speechrank": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "transformers": transformers.__version__}


def run_rank(model: str | SpeechEncoder, data: str | Dataset,
             options: RunOptions | None = None, *,
             layers: str | Sequence[str] | None = None,
             poolings: str | Sequence[str] | None = None,
             metrics: str | Sequence[str] | None = None,
             device: str = "cpu", strict: bool = False,
             checkpoint: str | None = None, step: int | None = None,
             progress: ProgressArg = None, **option_fields: Any) -> RankResult:
    """Label-free metrics for every requested layer and pooling in one encoder pass.

    Args:
        model: an encoder, or a MODEL spec for :func:`speechrank.encoders.load_encoder`.
        data: a dataset, or a DATA spec for :func:`speechrank.audio.load_dataset`.
        options: subset size, crop, batch seconds, frame cap and seed
            (:class:`~speechrank.options.RunOptions`; its fields may also be given as
            keywords, e.g. ``num_utterances=200``; ``max_seconds`` names ``crop_seconds``).
        layers: layer names or a spec such as ``"0,3-6"`` (default: every numbered layer).
        poolings: any of ``sum``, ``mean``, ``frames`` (default: all three).
        metrics: spectral metric names (default: all of them).
        device: ``cpu`` or ``cuda`` (bf16 autocast on CUDA).
        strict: fail on the first unusable file instead of skipping it.
        checkpoint, step: recorded in every row (defaults: the model spec, no step).
        progress: a :class:`~speechrank.progress.Progress`; stage ``encode`` in seconds of
            audio.
    """
    started = time.perf_counter()
    opts = resolve_options(options, **option_fields)
    num_utterances, max_frames = opts.num_utterances, opts.max_frames
    max_seconds, seed = opts.crop_seconds, opts.seed
    report = as_progress(progress)
    encoder = load_encoder(model, device=device) if isinstance(model, str) else model
    dataset = load_dataset(data) if isinstance(data, str) else data
    chosen_layers = parse_layers(layers, encoder.layer_names)
    chosen_poolings = parse_choices(poolings, POOLINGS, "pooling", DEFAULT_POOLINGS)
    chosen_metrics = parse_choices(metrics, SPECTRAL_METRIC_NAMES, "metric",
                                   SPECTRAL_METRIC_NAMES)
    total_files = len(dataset)
    if num_utterances is not None and num_utterances < total_files:
        dataset = subset(dataset, num_utterances, seed=seed)

    skips = SkipLog()
    planned: list[PlannedUtterance] = plan_utterances(
        encoder, dataset.utterances, max_seconds=max_seconds, strict=strict, skips=skips)
    if not planned:
        raise SpeechrankError(f"no usable audio in {dataset.spec} ({skips.summary()})")
    quotas = frame_quotas([p.num_frames for p in planned], max_frames)
    frame_quota = {p.utterance.uid: q for p, q in zip(planned, quotas, strict=True)}
    layer_dims = {name: encoder.layer_dims[name] if hasattr(encoder, "layer_dims")
                  else encoder.dim for name in chosen_layers}
    accumulators = LayerAccumulators(layer_dims, chosen_poolings, frame_quota=frame_quota,
                                     seed=seed)
    mine = distributed.shard(planned)  # issue 12 hook: under torchrun, this process's share
    report.start("encode", sum(p.num_samples for p in mine) / encoder.sample_rate,
                 "s audio")

    audio_seconds = 0.0
    encode_started = time.perf_counter()
    job = distributed.current()
    planned_skips = len(skips)
    for batch in iter_encoded(encoder, dataset.utterances, layers=chosen_layers,
                              batch_seconds=opts.batch_seconds, max_seconds=max_seconds,
                              strict=strict, skips=skips, planned=mine,
                              to_cpu=encoder.device.type == "cpu",
                              progress=lambda seconds: report.advance("encode", seconds)):
        accumulators.update(batch)
        audio_seconds += batch.audio_seconds / encoder.sample_rate
    encode_seconds = time.perf_counter() - encode_started
    report.end("encode")
    if job is not None:  # issue 12 hook: sum the Gram states, counts and decode-time skips
        distributed.reduce_accumulators(accumulators.accumulators)
        accumulators.utterances, audio_seconds = distributed.sum_values(
            [accumulators.utterances, audio_seconds])
        accumulators.utterances = int(accumulators.utterances)
        decoded_skips = [item for share in distributed.gather(skips.items[planned_skips:])
                         for item in share]
        skips.items[planned_skips:] = sorted(decoded_skips, key=lambda item: item["path"])
    if accumulators.utterances == 0:
        raise SpeechrankError(f"no usable audio in {dataset.spec} ({skips.summary()})")

    model_name = encoder.name
    conventions = {"seed": seed, "max_frames": max_frames, "max_seconds": max_seconds,
                   "num_utterances": accumulators.utterances}
    rows = metric_rows(accumulators, chosen_metrics, model=model_name,
                       checkpoint=checkpoint or model_name, step=step, dataset=dataset.spec,
                       extra_conventions=conventions)
    info = {
        "command": "rank",
        "model": model_name,
        "encoder": encoder.describe(),
        "data": {"spec": dataset.spec, "format": dataset.format, "root": dataset.root,
                 "files_found": total_files, "files_selected": len(dataset),
                 "info": dataset.info},
        "counts": {"utterances_used": accumulators.utterances, "skipped": len(skips),
                   "skipped_by_reason": skips.counts, "audio_seconds": round(audio_seconds, 3)},
        "skipped": skips.items,
        "layers": chosen_layers,
        "poolings": chosen_poolings,
        "metrics": chosen_metrics,
        "conventions": {"audio": AUDIO_CONVENTIONS, "seed": seed, "max_frames": max_frames,
                        "frame_sampling": "water-filling quota per utterance, frames chosen "
                                          "by a generator seeded with (seed, sha256(uid))",
                        "max_seconds": max_seconds, "batch_seconds": opts.batch_seconds,
                        "num_utterances": num_utterances,
                        "layer_numbering": "0 = input of the first transformer layer "
                                           "(Hugging Face hidden_states[0])"},
        "versions": _versions(),
        "device": str(encoder.device),
        "distributed": job.describe() if job is not None else dict(distributed.SINGLE_PROCESS),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "encode_seconds": round(encode_seconds, 3),
    }
    return RankResult(rows=rows, info=info, accumulators=accumulators)
