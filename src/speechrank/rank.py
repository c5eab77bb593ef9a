"""``speechrank rank``: label-free metrics of every layer in one pass over real audio.

RankMe-t (Aldeneh et al., ICASSP 2025, arXiv 2409.10787) is RankMe (Garrido et al., ICML 2023)
of the matrix whose rows are the per-utterance *time sums* of a layer's valid frames. This
module feeds one :class:`~speechrank.metrics.SpectralAccumulator` per (layer, pooling) from a
single pass of the encoder and turns each into the tidy rows (docs/design.md, "Rows and layer
names").

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
from typing import Any

import numpy as np
import torch

from speechrank import __version__, distributed, extract
from speechrank.accumulate import LayerAccumulators, RowLabels, frame_quotas, metric_rows
from speechrank.audio.datasets import load_dataset
from speechrank.audio.io import AUDIO_CONVENTIONS
from speechrank.audio.splits import subset
from speechrank.audio.utterance import Dataset
from speechrank.encoders import load_encoder
from speechrank.encoders.base import SpeechEncoder
from speechrank.errors import SpeechrankError
from speechrank.extract import FrameMemo, PlannedUtterance, Reading, SkipLog, iter_encoded
from speechrank.options import DEFAULT_MAX_FRAMES, DEFAULT_NUM_UTTERANCES, POOLINGS
from speechrank.pipeline import (
    Measured,
    MeasurePlan,
    frame_budget,
    measure_rows,
    new_accumulators,
    plan_measure,
)
from speechrank.progress import Progress, ProgressArg, as_progress
from speechrank.results import ResultRow
from speechrank.selection import parse_choices, parse_layers
from speechrank.spec import DEFAULT_SPEC, MeasureSpec

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
             spec: MeasureSpec | None = None, *, device: str = "cpu",
             checkpoint: str | None = None, step: int | None = None,
             memo: FrameMemo | None = None, progress: ProgressArg = None) -> RankResult:
    """Label-free metrics for every requested layer and pooling in one encoder pass.

    Args:
        model: an encoder, or a MODEL spec for :func:`speechrank.encoders.load_encoder`.
        data: a dataset, or a DATA spec for :func:`speechrank.audio.load_dataset`.
        spec: what to measure (:class:`~speechrank.spec.MeasureSpec`; default
            :data:`~speechrank.spec.DEFAULT_SPEC`). A named ``protocol`` fills every field
            left at its default, explicit ones win, and both are recorded
            (``info["protocol"]``, ``conventions["protocol"]``).
        device: ``cpu`` or ``cuda`` (bf16 autocast on CUDA).
        checkpoint, step: recorded in every row (defaults: the model spec, no step).
        memo: a :class:`~speechrank.extract.FrameMemo` of this encoder, shared with other
            passes over the same audio (a sweep's probes).
        progress: a :class:`~speechrank.progress.Progress`; stage ``encode`` in seconds of
            audio.
    """
    started = time.perf_counter()
    plan = plan_measure(spec or DEFAULT_SPEC)
    plan.check_processes(_processes(), "run them in one process")
    encoder = load_encoder(model, device=device) if isinstance(model, str) else model
    found = load_dataset(data) if isinstance(data, str) else data
    layers = plan.layers_of(encoder.layer_names)
    skips = SkipLog()
    dataset, planned = _choose(encoder, found, plan.spec, skips)
    budget = frame_budget(planned, plan.spec.max_frames)
    layer_dims = {name: encoder.layer_dims[name] if hasattr(encoder, "layer_dims")
                  else encoder.dim for name in layers}
    accumulators = new_accumulators(plan, layer_dims, budget, _processes())
    passed = _encode(encoder, dataset, planned, layers, accumulators, plan.spec, skips,
                     memo, as_progress(progress))
    if accumulators.utterances == 0:
        raise SpeechrankError(f"no usable audio in {dataset.spec} ({skips.summary()})")
    conventions: dict[str, Any] = {"seed": plan.spec.seed, "max_frames": plan.spec.max_frames,
                                   "max_seconds": plan.spec.crop_seconds,
                                   "num_utterances": accumulators.utterances}
    if plan.spec.total_seconds is not None:
        conventions["total_seconds"] = plan.spec.total_seconds
    if plan.protocol is not None:
        conventions["protocol"] = plan.protocol["name"]
    labels = RowLabels(model=encoder.name, checkpoint=checkpoint or encoder.name, step=step,
                       dataset=dataset.spec, conventions=conventions)
    measured = measure_rows(accumulators, plan, labels)
    info = _info(encoder, found, dataset, plan, layers, skips, accumulators, measured, passed)
    info["wall_seconds"] = round(time.perf_counter() - started, 3)
    return RankResult(rows=measured.rows, info=info, accumulators=accumulators)


def _processes() -> int:
    """How many processes share this pass (torchrun's world size, else 1)."""
    job = distributed.current()
    return job.world_size if job is not None else 1


def _choose(encoder: SpeechEncoder, dataset: Dataset, spec: MeasureSpec, skips: SkipLog
            ) -> tuple[Dataset, list[PlannedUtterance]]:
    """The seeded subset, each file's plan (crop, frames, skips) and the seconds budget."""
    if spec.num_utterances is not None and spec.num_utterances < len(dataset):
        dataset = subset(dataset, spec.num_utterances, seed=spec.seed)
    planned: list[PlannedUtterance] = extract.plan_utterances(
        encoder, dataset.utterances, max_seconds=spec.crop_seconds, strict=spec.strict,
        skips=skips)
    if not planned:
        raise SpeechrankError(f"no usable audio in {dataset.spec} ({skips.summary()})")
    if spec.total_seconds is not None:  # a seeded draw of whole utterances
        order = np.random.default_rng(spec.seed).permutation(len(planned))
        budget, kept = spec.total_seconds * encoder.sample_rate, []
        for i in order:
            if budget <= 0:
                break
            kept.append(int(i))
            budget -= planned[i].num_samples
        planned = [planned[i] for i in sorted(kept)]
    return dataset, planned


@dataclasses.dataclass(frozen=True)
class _Pass:
    audio_seconds: float
    encode_seconds: float


def _encode(encoder: SpeechEncoder, dataset: Dataset, planned: list[PlannedUtterance],
            layers: list[str], accumulators: LayerAccumulators, spec: MeasureSpec,
            skips: SkipLog, memo: FrameMemo | None, report: Progress) -> _Pass:
    """One pass of the encoder over this process's share of ``planned`` into
    ``accumulators``; under torchrun the Gram states, counts and skips are then summed."""
    mine = distributed.shard(planned)  # under torchrun, this process's share
    report.start("encode", sum(p.num_samples for p in mine) / encoder.sample_rate, "s audio")
    audio_seconds = 0.0
    started = time.perf_counter()
    planned_skips = len(skips)
    reading = Reading(spec.batch_seconds, spec.crop_seconds, spec.strict,
                      to_cpu=encoder.device.type == "cpu")
    for batch in iter_encoded(encoder, dataset.utterances, layers=layers, reading=reading,
                              skips=skips, planned=mine, memo=memo,
                              progress=lambda seconds: report.advance("encode", seconds)):
        accumulators.update(batch)
        audio_seconds += batch.audio_seconds / encoder.sample_rate
    encode_seconds = time.perf_counter() - started
    report.end("encode")
    if distributed.current() is not None:  # sum the Gram states, counts and decode skips
        distributed.reduce_accumulators(accumulators.accumulators)
        accumulators.utterances, audio_seconds = distributed.sum_values(
            [accumulators.utterances, audio_seconds])
        accumulators.utterances = int(accumulators.utterances)
        decoded_skips = [item for share in distributed.gather(skips.items[planned_skips:])
                         for item in share]
        skips.items[planned_skips:] = sorted(decoded_skips, key=lambda item: item["path"])
    return _Pass(audio_seconds, encode_seconds)


def _info(encoder: SpeechEncoder, found: Dataset, dataset: Dataset, plan: MeasurePlan,
          layers: list[str], skips: SkipLog, accumulators: LayerAccumulators,
          measured: Measured, passed: _Pass) -> dict[str, Any]:
    """What the JSON output records besides the rows."""
    spec, job = plan.spec, distributed.current()
    return {
        "command": "rank",
        "model": encoder.name,
        "encoder": encoder.describe(),
        "data": {"spec": dataset.spec, "format": dataset.format, "root": dataset.root,
                 "files_found": len(found), "files_selected": len(dataset),
                 "info": dataset.info},
        "counts": {"utterances_used": accumulators.utterances, "skipped": len(skips),
                   "skipped_by_reason": skips.counts,
                   "audio_seconds": round(passed.audio_seconds, 3)},
        "skipped": skips.items,
        "layers": layers,
        "poolings": list(plan.poolings),
        "metrics": list(plan.metrics),
        "conventions": {"audio": AUDIO_CONVENTIONS, "seed": spec.seed,
                        "max_frames": spec.max_frames,
                        "frame_sampling": "water-filling quota per utterance, frames chosen "
                                          "by a generator seeded with (seed, sha256(uid))",
                        "max_seconds": spec.crop_seconds, "batch_seconds": spec.batch_seconds,
                        "num_utterances": spec.num_utterances,
                        "convergence": "values at nested prefixes of keys < 1/8, 1/4, 1/2; "
                                       "not converged when the last doubling moved the value "
                                       "by more than 2 %"
                        if plan.convergence_in(_processes()) else None,
                        "layer_numbering": "0 = input of the first transformer layer "
                                           "(Hugging Face hidden_states[0])"},
        "versions": _versions(),
        "device": str(encoder.device),
        "distributed": job.describe() if job is not None else dict(distributed.SINGLE_PROCESS),
        "encode_seconds": round(passed.encode_seconds, 3),
        "cluster_seconds": round(measured.cluster_seconds, 3),
        "dominance": measured.dominance,  # per layer, per pooling
        "protocol": plan.protocol,
    }
