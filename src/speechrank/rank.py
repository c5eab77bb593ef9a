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
import math
import platform
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from speechrank import __version__, distributed
from speechrank.accumulate import (
    LayerAccumulators,
    attach_convergence,
    attach_dominance,
    cluster_metric_rows,
    frame_quotas,
    metric_rows,
)
from speechrank.audio.datasets import load_dataset
from speechrank.audio.io import AUDIO_CONVENTIONS
from speechrank.audio.splits import subset
from speechrank.audio.utterance import Dataset
from speechrank.encoders import load_encoder
from speechrank.encoders.base import SpeechEncoder
from speechrank.errors import SpeechrankError
from speechrank.extract import FrameMemo, PlannedUtterance, SkipLog, iter_encoded, plan_utterances
from speechrank.metrics import LAYER_METRIC_NAMES, METRICS, SPECTRAL_METRIC_NAMES
from speechrank.metrics.cluster import DEFAULT_N_CLUSTERS
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
             n_clusters: int = DEFAULT_N_CLUSTERS, convergence: bool = True,
             cluster_max_rows: int | None = None, total_seconds: float | None = None,
             uncapped_frames: bool = False, protocol: str | None = None,
             memo: FrameMemo | None = None,
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
        metrics: spectral metric names (default: all of them), and opt-in the cluster
            metrics ``kmeans_inertia`` and ``davies_bouldin`` (of the ``frames`` rows).
        device: ``cpu`` or ``cuda`` (bf16 autocast on CUDA).
        strict: fail on the first unusable file instead of skipping it.
        checkpoint, step: recorded in every row (defaults: the model spec, no step).
        n_clusters: k of the cluster metrics (lowered, and recorded, when rows are few).
        convergence: give every spectral row its values at nested seeded prefixes N/8, N/4,
            N/2 (``conventions["convergence"]``; marked not converged past 2 %).
        cluster_max_rows: most frames the cluster metrics see per layer (default: the
            ``frames`` row cap); past it, a seeded uniform sample.
        total_seconds: keep a seeded random draw of whole utterances until this much audio
            (after crops) is reached ("one hour of audio").
        uncapped_frames: the ``frames`` pooling keeps every valid frame (``max_frames`` is
            then not applied; the whetten2025 protocol sets it).
        protocol: a preset of :mod:`speechrank.protocols` (``aldeneh2025``,
            ``whetten2025``); it fills every option left at its default here, explicit ones
            win, and both are recorded (``info["protocol"]``, ``conventions["protocol"]``).
        memo: a :class:`~speechrank.extract.FrameMemo` of this encoder, shared with other
            passes over the same audio (a sweep's probes).
        progress: a :class:`~speechrank.progress.Progress`; stage ``encode`` in seconds of
            audio.
    """
    started = time.perf_counter()
    opts = resolve_options(options, **option_fields)
    protocol_record = None
    if protocol is not None:  # a named protocol fills the options left at their defaults
        from speechrank.protocols import resolve

        base = RunOptions()
        given = {"layers": layers, "poolings": poolings, "metrics": metrics,
                 "num_utterances": opts.num_utterances,
                 "max_frames": None if uncapped_frames else opts.max_frames,
                 "n_clusters": n_clusters, "cluster_max_rows": cluster_max_rows,
                 "total_seconds": total_seconds}
        defaults = {"layers": None, "poolings": None, "metrics": None,
                    "num_utterances": base.num_utterances, "max_frames": base.max_frames,
                    "n_clusters": DEFAULT_N_CLUSTERS, "cluster_max_rows": None,
                    "total_seconds": None}
        chosen, protocol_record = resolve(
            protocol, {k: v for k, v in given.items() if v != defaults[k]})
        layers, poolings = chosen.get("layers", layers), chosen.get("poolings", poolings)
        metrics = chosen.get("metrics", metrics)
        n_clusters = chosen.get("n_clusters", n_clusters)
        cluster_max_rows = chosen.get("cluster_max_rows", cluster_max_rows)
        total_seconds = chosen.get("total_seconds", total_seconds)
        if "num_utterances" in chosen:
            opts = opts.replace(num_utterances=chosen["num_utterances"])
        if "max_frames" in chosen:
            uncapped_frames = chosen["max_frames"] is None
            if not uncapped_frames:
                opts = opts.replace(max_frames=chosen["max_frames"])
    if total_seconds is not None and not (math.isfinite(total_seconds) and total_seconds > 0):
        raise SpeechrankError(f"--total-seconds must be a positive number, got {total_seconds}")
    num_utterances = opts.num_utterances
    max_frames: int | None = None if uncapped_frames else opts.max_frames
    max_seconds, seed = opts.crop_seconds, opts.seed
    report = as_progress(progress)
    encoder = load_encoder(model, device=device) if isinstance(model, str) else model
    dataset = load_dataset(data) if isinstance(data, str) else data
    chosen_layers = parse_layers(layers, encoder.layer_names)
    chosen_poolings = parse_choices(poolings, POOLINGS, "pooling", DEFAULT_POOLINGS)
    chosen_metrics = parse_choices(metrics, LAYER_METRIC_NAMES, "metric", SPECTRAL_METRIC_NAMES)
    # metrics of stored rows (the cluster ones) run on the frames pooling's rows, not on a Gram
    # accumulator (each metric declares its input)
    chosen_cluster = [m for m in chosen_metrics if METRICS[m].input == "rows"]
    chosen_spectral = [m for m in chosen_metrics if METRICS[m].input == "gram"]
    if distributed.current() is not None:
        # under torchrun only states that merge by addition are merged across processes (each
        # metric declares how its state merges); the prefix bins and the stored rows are not
        # (yet), so they are left out rather than computed from one process's share
        unmerged = [m for m in chosen_metrics if METRICS[m].merge != "sum"]
        if unmerged:
            raise SpeechrankError(f"{', '.join(unmerged)} cannot run under torchrun yet; "
                                  "run them in one process")
        convergence = False
    if chosen_cluster and "frames" not in chosen_poolings:
        raise SpeechrankError(f"{', '.join(chosen_cluster)} cluster(s) the frames pooling's "
                              "rows; add frames to --pooling")
    if n_clusters < 2:
        raise SpeechrankError("--n-clusters must be at least 2")
    total_files = len(dataset)
    if num_utterances is not None and num_utterances < total_files:
        dataset = subset(dataset, num_utterances, seed=seed)

    skips = SkipLog()
    planned: list[PlannedUtterance] = plan_utterances(
        encoder, dataset.utterances, max_seconds=max_seconds, strict=strict, skips=skips)
    if not planned:
        raise SpeechrankError(f"no usable audio in {dataset.spec} ({skips.summary()})")
    if total_seconds is not None:  # a seeded draw of whole utterances
        order = np.random.default_rng(seed).permutation(len(planned))
        budget, kept = total_seconds * encoder.sample_rate, []
        for i in order:
            if budget <= 0:
                break
            kept.append(int(i))
            budget -= planned[i].num_samples
        planned = [planned[i] for i in sorted(kept)]
    frame_cap = sum(p.num_frames for p in planned) if max_frames is None else max_frames
    quotas = frame_quotas([p.num_frames for p in planned], frame_cap)
    frame_quota = {p.utterance.uid: q for p, q in zip(planned, quotas, strict=True)}
    layer_dims = {name: encoder.layer_dims[name] if hasattr(encoder, "layer_dims")
                  else encoder.dim for name in chosen_layers}
    accumulators = LayerAccumulators(layer_dims, chosen_poolings, frame_quota=frame_quota,
                                     seed=seed,
                                     cluster_rows=(cluster_max_rows or frame_cap)
                                     if chosen_cluster else None,
                                     convergence=convergence)
    mine = distributed.shard(planned)  # under torchrun, this process's share
    report.start("encode", sum(p.num_samples for p in mine) / encoder.sample_rate,
                 "s audio")

    audio_seconds = 0.0
    encode_started = time.perf_counter()
    job = distributed.current()
    planned_skips = len(skips)
    for batch in iter_encoded(encoder, dataset.utterances, layers=chosen_layers,
                              batch_seconds=opts.batch_seconds, max_seconds=max_seconds,
                              strict=strict, skips=skips, planned=mine,
                              to_cpu=encoder.device.type == "cpu", memo=memo,
                              progress=lambda seconds: report.advance("encode", seconds)):
        accumulators.update(batch)
        audio_seconds += batch.audio_seconds / encoder.sample_rate
    encode_seconds = time.perf_counter() - encode_started
    report.end("encode")
    if job is not None:  # under torchrun: sum the Gram states, counts and decode-time skips
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
    if total_seconds is not None:
        conventions["total_seconds"] = total_seconds
    if protocol_record is not None:
        conventions["protocol"] = protocol_record["name"]
    rows = metric_rows(accumulators, chosen_spectral, model=model_name,
                       checkpoint=checkpoint or model_name, step=step, dataset=dataset.spec,
                       extra_conventions=conventions) if chosen_spectral else []
    rows = attach_convergence(rows, accumulators, chosen_spectral)
    rows, dominance = attach_dominance(rows, accumulators)
    cluster_started = time.perf_counter()
    rows += cluster_metric_rows(accumulators, chosen_cluster, n_clusters=n_clusters, seed=seed,
                                model=model_name, checkpoint=checkpoint or model_name,
                                step=step, dataset=dataset.spec, extra_conventions=conventions)
    cluster_seconds = time.perf_counter() - cluster_started
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
                        "convergence": "values at nested prefixes of keys < 1/8, 1/4, 1/2; "
                                       "not converged when the last doubling moved the value "
                                       "by more than 2 %" if convergence else None,
                        "layer_numbering": "0 = input of the first transformer layer "
                                           "(Hugging Face hidden_states[0])"},
        "versions": _versions(),
        "device": str(encoder.device),
        "distributed": job.describe() if job is not None else dict(distributed.SINGLE_PROCESS),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "encode_seconds": round(encode_seconds, 3),
        "cluster_seconds": round(cluster_seconds, 3),
        "dominance": dominance,  # per layer, per pooling
        "protocol": protocol_record,
    }
    return RankResult(rows=rows, info=info, accumulators=accumulators)
