"""``RankMonitor``: the rank of every layer, measured during self-supervised training.

Aldeneh et al. ("Towards Automatic Assessment of Self-Supervised Speech Models using Rank",
ICASSP 2025, arXiv 2409.10787) find that RankMe-t, the RankMe (Garrido et al., ICML 2023,
arXiv 2210.02885) of per-utterance time-summed frames, tracks downstream quality within a layer
during training, so it can watch a run without labels. A :class:`RankMonitor` is that watch:
built once from the model and a fixed held-out set, then called at any step::

    monitor = RankMonitor(model, "fsdd:data/fsdd#split=test",
                          MeasureSpec.for_monitor(num_utterances=500))
    for step in range(steps):
        train_step()
        if step % 1000 == 0:
            logger.log(monitor(model, step))   # {"rankme_t/layer_0": 41.2, ...}

Each call runs one eval-mode forward pass per held-out batch under ``torch.inference_mode``,
feeds one float64 Gram accumulator per (layer, pooling) (:mod:`speechrank.rank`), and computes
the metrics. It leaves the run as it found it: every submodule's train/eval flag, the Python,
NumPy and torch random streams, the gradients and the optimiser are untouched. The audio is
read, resampled and batched once, at the first call (or :meth:`RankMonitor.prepare`), never
when the monitor is built (:mod:`.heldout`). What it measures is a
:class:`~speechrank.spec.MeasureSpec`, measured by the pipeline ``rank`` uses
(:mod:`speechrank.pipeline`).

Result names (the keys of the returned dict):

- ``rankme_t/layer_<i>``: metric ``rankme`` with pooling ``sum``, the paper's RankMe-t;
- ``<metric>_<pooling>/layer_<i>`` for every other pair, e.g. ``rankme_mean/layer_3`` or
  ``erank_cov_sum/layer_3``;
- ``kmeans_inertia_frames/layer_<i>``, ``davies_bouldin_frames/layer_<i>``: the opt-in
  cluster metrics (:mod:`speechrank.metrics.cluster`) of the ``frames`` pooling's rows;
- ``collapse/layer_<i>``: 1.0 when the collapse alarm fired for that layer at this call, else
  0.0 (see :mod:`.collapse`; the alarm watches the first spectral metric/pooling pair unless
  ``AlarmRule.on`` names another).

The rows (:attr:`MonitorResult.rows`, and the store) carry what ``speechrank rank`` records:
with ``convergence`` each spectral row its values at nested seeded prefixes N/8 .. N
(:mod:`speechrank.metrics.convergence`), and each RankMe row whether one direction dominates
it (:mod:`speechrank.metrics.dominance`). A named ``protocol`` (``aldeneh2025``,
``whetten2025``; :mod:`speechrank.protocols`) fills the options left at their defaults, as
``rank --protocol`` does.

``<i>`` is the layer name: ``0`` .. ``L`` by Hugging Face numbering, or ``cnn``.

Under ``torch.distributed`` every process must call the monitor at the same steps: each one
encodes its share of the held-out batches and the accumulators are summed across processes
(:meth:`SpectralAccumulator.all_reduce`) before the metrics, so every process returns the value
a single process would. Only the Gram states are summed, as under ``torchrun`` in ``rank``: a
distributed monitor measures no convergence and refuses the cluster metrics (their row stores
are not merged across processes yet); ``MonitorSetup(distributed=False)`` measures them on the
whole held-out set in every process.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from speechrank.accumulate import LayerAccumulators, RowLabels
from speechrank.encoders.base import EncoderOutput, SpeechEncoder
from speechrank.encoders.formats.base import step_from_name
from speechrank.errors import SpeechrankError
from speechrank.extract import EncodedBatch, encode_padded
from speechrank.monitor._state import preserved_modes, preserved_rng
from speechrank.monitor.adapt import as_encoder, modules_of, unwrap
from speechrank.monitor.collapse import AlarmRule, CollapseAlarm, RankCollapseWarning
from speechrank.monitor.heldout import CachedBatch, HeldOutSet
from speechrank.options import DEFAULT_MONITOR_UTTERANCES
from speechrank.pipeline import (
    FrameBudget,
    MeasurePlan,
    frame_budget,
    measure_rows,
    new_accumulators,
    plan_measure,
)
from speechrank.results import ResultRow
from speechrank.spec import MONITOR_SPEC, MeasureSpec

__all__ = [
    "DEFAULT_MAX_UTTERANCES",
    "MonitorResult",
    "MonitorSetup",
    "RankMonitor",
    "metric_key",
]

#: Held-out utterances used when no budget is given: enough rows for RankMe-t of a 768-wide
#: layer to be meaningful (rank <= min(N, D)), a few minutes of audio.
DEFAULT_MAX_UTTERANCES = DEFAULT_MONITOR_UTTERANCES

_KEPT_ADAPTERS = 4


def metric_key(metric: str, pooling: str, layer: str) -> str:
    """The result name of one value: ``rankme_t/layer_3``, ``erank_cov_mean/layer_0`` ..."""
    prefix = "rankme_t" if (metric, pooling) == ("rankme", "sum") else f"{metric}_{pooling}"
    return f"{prefix}/layer_{layer}"


@dataclasses.dataclass
class MonitorResult:
    """Everything one call measured: the logged values, the tidy rows and the alarms."""

    step: int | None
    values: dict[str, float]
    rows: list[ResultRow]
    alarms: list[CollapseAlarm]
    seconds: float

    @property
    def should_stop(self) -> bool:
        """Whether the collapse alarm fired at this call: a loop that acts on collapse stops
        here (``if monitor.measure(model, step).should_stop: break``). To wait until a layer
        has stayed collapsed for several checks, ask a
        :class:`~speechrank.monitor.collapse.CollapseStop` instead."""
        return bool(self.alarms)


def _run_name_of(encoder: SpeechEncoder) -> str:
    """The encoder's name; for a checkpoint directory such as ``runs/a/checkpoint-000100``
    (``speechrank pretrain``, Hugging Face ``Trainer``), the run directory's name (``a``)."""
    path = Path(encoder.name)
    if step_from_name(path.name) is not None and path.parent.name:
        return path.parent.name
    return encoder.name


def _distributed(distributed: bool | None, group: Any) -> tuple[int, int]:
    """``(rank, world)`` of this process in ``group``; ``(0, 1)`` when not distributed."""
    import torch.distributed as dist

    active = dist.is_available() and dist.is_initialized()
    if distributed is None:
        distributed = active
    if not distributed:
        return 0, 1
    if not active:
        raise SpeechrankError(
            "distributed=True needs an initialised torch.distributed process group")
    return dist.get_rank(group), dist.get_world_size(group)


def _all_reduce_counts(values: list[int], group: Any) -> list[int]:
    import torch.distributed as dist

    device = torch.device("cpu")
    if dist.get_backend(group) == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    tensor = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return [int(v) for v in tensor.cpu()]


@dataclasses.dataclass(frozen=True)
class MonitorSetup:
    """How a :class:`RankMonitor` runs and names what it records.

    Attributes:
        checkpoint_format: the rows' ``checkpoint`` for a step (``"step-{step}"``); each step
            needs its own, since the store identifies a row without its step.
        data_name: the rows' ``dataset`` (default: the DATA spec, ``files:N`` or
            ``waveforms:N``).
        distributed: ``None`` shares the work whenever ``torch.distributed`` is initialised;
            ``False`` measures the whole set in every process.
        group: the process group for the all-reduce (default: the world).
        inference_mode: ``True`` runs under ``torch.inference_mode``, ``False`` under
            ``torch.no_grad`` (for models that cache tensors across calls and are trained).
        encoder_options: keyword arguments for the adapter built around the model (for a
            Hugging Face model: ``do_normalize``, ``sample_rate`` ...).
    """

    checkpoint_format: str = "step-{step}"
    data_name: str | None = None
    distributed: bool | None = None
    group: Any = None
    inference_mode: bool = True
    encoder_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


#: What a distributed monitor that cannot merge a metric's state suggests instead.
_ONE_PROCESS_HINT = ("build the monitor with MonitorSetup(distributed=False) to measure the "
                     "whole held-out set in every process")


def _conventions(plan: MeasurePlan) -> dict[str, Any]:
    """What every row of the monitor records besides its metric's own conventions (the
    monitor's names for the held-out budget: ``max_utterances``, ``max_audio_seconds``)."""
    spec = plan.spec
    conventions: dict[str, Any] = {
        "source": "monitor", "seed": spec.seed, "max_seconds": spec.crop_seconds,
        "max_utterances": spec.num_utterances, "max_audio_seconds": spec.total_seconds}
    if "frames" in plan.poolings:
        conventions["max_frames"] = spec.max_frames
    if plan.protocol is not None:
        conventions["protocol"] = plan.protocol["name"]
        if plan.protocol["overridden"]:
            conventions["protocol_overridden"] = ",".join(sorted(plan.protocol["overridden"]))
    return conventions


class RankMonitor:
    """Label-free rank of chosen layers on a fixed held-out set, for use during training.

    Building a monitor stores and checks its choices; the model is adapted and the held-out
    audio read, resampled and batched at the first call (or at :meth:`prepare`).

    Args:
        model: what is being trained (anything :func:`speechrank.monitor.adapt.as_encoder`
            takes: a :class:`SpeechEncoder`, a Hugging Face waveform model, speechrank's BEST-RQ
            model). It fixes the sample rate, frame formula and layers; each call may pass the
            same object or a later copy of it. ``None``: every call passes it (for loops that
            build their model themselves, :func:`speechrank.pretrain.pretrain`).
        data: the held-out set: a DATA spec, a :class:`~speechrank.audio.utterance.Dataset`, a
            list of audio paths, or a list of 1-D waveforms at the encoder's sample rate.
        spec: what to measure, a :class:`~speechrank.spec.MeasureSpec` built by
            :meth:`MeasureSpec.for_monitor` (default :data:`~speechrank.spec.MONITOR_SPEC`:
            RankMe-t alone, 1,000 utterances, no convergence record). ``num_utterances`` is a
            seeded subset of the held-out set; ``total_seconds`` keeps a seeded choice of
            whole utterances of *at most* that much audio (:mod:`.heldout`). The cluster
            metrics fit a mini-batch k-means per layer at every call, so they are far slower
            than the Gram metrics. A ``protocol`` fills the fields left at the monitor's
            defaults (:func:`speechrank.protocols.apply_protocol`); every row records
            ``conventions["protocol"]`` (and ``protocol_overridden``, the fields that departed
            from it); :meth:`describe` and the store's unit metadata hold the full record.
        alarm: the collapse alarm (:class:`~speechrank.monitor.collapse.AlarmRule`; every
            collapsed check is flagged in the values and listed in ``alarms``).
        store: a :class:`~speechrank.store.ResultStore` or its path (opened at the first
            write): every call's rows are written there (rank 0 only) as one unit of work.
        run_name: the run, recorded as ``model`` in the rows (default: the encoder's name, or
            for a checkpoint directory ``RUN/checkpoint-N`` the run directory's name, as
            ``speechrank sweep`` names runs).
        setup: how it runs and names its rows (:class:`MonitorSetup`).
    """

    def __init__(self, model: Any, data: Any, spec: MeasureSpec | None = None, *,
                 alarm: AlarmRule | None = None, store: Any = None,
                 run_name: str | None = None, setup: MonitorSetup | None = None) -> None:
        self.setup = setup or MonitorSetup()
        self.plan = plan_measure(spec or MONITOR_SPEC, MONITOR_SPEC)
        self.spec = self.plan.spec
        self.protocol = self.plan.protocol
        self.poolings = list(self.plan.poolings)
        self.metrics = list(self.plan.metrics)
        self.spectral_metrics = list(self.plan.spectral)
        self.cluster_metrics = list(self.plan.cluster)
        self.rank, self.world = _distributed(self.setup.distributed, self.setup.group)
        self.plan.check_processes(self.world, _ONE_PROCESS_HINT)
        self.conventions = _conventions(self.plan)
        self.checkpoint_format = self.setup.checkpoint_format
        self.checkpoint_format.format(step=0)  # fail now on a bad format, not mid-training
        self.alarm = alarm or AlarmRule()
        # The collapse alarm watches a spectral value (a rank), never a cluster metric.
        prefixes = [metric_key(m, p, "").rsplit("/", 1)[0] for m in self.spectral_metrics
                    for p in self.poolings]
        on = self.alarm.on
        self.alarm_on = (prefixes[0] if prefixes else "") if on is None else on
        if self.alarm_on and self.alarm_on not in prefixes:
            raise SpeechrankError(
                f"alarm_on={self.alarm_on!r} is not measured; choose from {', '.join(prefixes)}")
        self.detector = self.alarm.detector()
        self.alarms: list[CollapseAlarm] = []
        self.history: list[tuple[int | None, dict[str, float]]] = []
        self.last: MonitorResult | None = None
        if store is not None and not isinstance(store, (str, os.PathLike)) and not (
                hasattr(store, "unit") and hasattr(store, "add_rows")):
            raise SpeechrankError(
                f"store must be a ResultStore or a path, not {type(store).__name__}")
        self._store_arg = store
        self._store: Any = None
        self._owns_store = False
        self._calls = 0
        self._run_name_arg = run_name
        self._data = data
        self.run_name: str = run_name or ""
        self.layers: list[str] = []
        self.layer_dims: dict[str, int] = {}
        self.heldout: HeldOutSet | None = None
        self._budget: FrameBudget | None = None
        self._model_ref: Any = model
        # Adapters built so far, newest first: a module given again reuses its adapter.
        self._adapters: list[tuple[Any, SpeechEncoder]] = []

    def prepare(self, model: Any = None) -> RankMonitor:
        """Adapt ``model`` (default: the one the monitor was built with), fix the layers and
        read, resample and batch the held-out set now rather than at the first call."""
        target = self._model_ref if model is None else model
        if target is None:
            raise SpeechrankError("this monitor was built without a model: pass one")
        if self.heldout is None:
            self._prepare(target)
        return self

    def _prepare(self, model: Any) -> SpeechEncoder:
        """Fix the layers and read, resample and batch the held-out set for ``model``."""
        encoder = as_encoder(model, name=self._run_name_arg or "model",
                             options=dict(self.setup.encoder_options))
        self.run_name = self._run_name_arg or _run_name_of(encoder)
        self.layers = self.plan.layers_of(encoder.layer_names)
        self.layer_dims = {name: int(encoder.layer_dims[name]) for name in self.layers}
        self.heldout = HeldOutSet(self._data, encoder, self.spec, rank=self.rank,
                                  world=self.world, name=self.setup.data_name)
        self._budget = frame_budget(self.heldout.planned, self.spec.max_frames)
        self._model_ref = model
        self._adapters = [(model, encoder)]
        return encoder

    # ------------------------------------------------------------------ public

    @property
    def has_model(self) -> bool:
        """Whether the monitor was built with (or has since been given) a model."""
        return self._model_ref is not None

    def __call__(self, model: Any = None, step: int | None = None) -> dict[str, float]:
        """Measure ``model`` (default: the model the monitor was built with) at ``step``
        (default: the number of earlier calls) and return ``{name: value}``."""
        return self.measure(model, step).values

    def measure(self, model: Any = None, step: int | None = None) -> MonitorResult:
        """Like calling the monitor, but returns the rows and alarms as well."""
        started = time.perf_counter()
        step = self._calls if step is None else int(step)
        self._calls += 1
        target = self._model_ref if model is None else model
        if target is None:
            raise SpeechrankError("this monitor was built without a model: pass one when "
                                  "calling it")
        # Looked up at every call: a monitor built before the process group shares from then on.
        self.rank, self.world = _distributed(self.setup.distributed, self.setup.group)
        if self.heldout is None:  # the model given when built fixes the layers, if any
            self._prepare(target if self._model_ref is None else self._model_ref)
        encoder = self._encoder_for(target)
        self.plan.check_processes(self.world, _ONE_PROCESS_HINT)
        accumulators, bad_layers = self._accumulate(target, encoder)
        checkpoint = self.checkpoint_format.format(step=step)
        labels = RowLabels(model=self.run_name, checkpoint=checkpoint, step=step,
                           dataset=self.heldout.spec,
                           conventions={**self.conventions,
                                        "num_utterances": accumulators.utterances})
        for layer in bad_layers if accumulators.cluster is not None else ():
            accumulators.cluster.pop(layer, None)  # zeroed frames: nothing to cluster
        rows = measure_rows(accumulators, self.plan, labels).rows
        rows += [labels.row(layer=layer, pooling="frames", metric=name, value=math.nan,
                            n_rows=0, dim=self.layer_dims[layer])
                 for layer in self.layers if layer in bad_layers
                 for name in self.cluster_metrics]
        rows = [dataclasses.replace(row, value=math.nan, conventions={
                    **{k: v for k, v in row.conventions.items()
                       if k not in ("convergence", "dominance")},
                    "non_finite_features": True})
                if row.layer in bad_layers else row for row in rows]
        values = {metric_key(r.metric, r.pooling, r.layer): float(r.value) for r in rows}
        alarms = self._check(step, values)
        flagged = {alarm.layer for alarm in alarms}
        if self.alarm_on:
            for layer in self.layers:
                values[f"collapse/layer_{layer}"] = 1.0 if layer in flagged else 0.0
        if self.rank == 0 and self._store_arg is not None:
            self._write(rows, step)
        result = MonitorResult(step, values, rows, alarms, time.perf_counter() - started)
        self.history.append((step, dict(values)))
        self.last = result
        return result

    def describe(self) -> dict[str, Any]:
        """What the monitor measures, for logs and JSON."""
        return {"run": self.run_name, "layers": list(self.layers),
                "poolings": list(self.poolings), "metrics": list(self.metrics),
                "heldout": self.heldout.describe() if self.heldout else None,
                "conventions": dict(self.conventions),
                "convergence": self.plan.convergence_in(self.world),
                "clusters": {"n_clusters": self.spec.n_clusters,
                             "max_rows": self.spec.cluster_max_rows} if self.cluster_metrics
                else None,
                "protocol": self.protocol,
                "alarm": {"on": self.alarm_on, "min_rank": self.detector.min_rank,
                          "max_drop": self.detector.max_drop},
                "distributed": {"rank": self.rank, "world": self.world}}

    def close(self) -> None:
        """Close the results store if the monitor opened it."""
        if self._owns_store and self._store is not None:
            self._store.close()
            self._store = None

    # ------------------------------------------------------------------ internals

    def _encoder_for(self, model: Any) -> SpeechEncoder:
        inner = unwrap(model)
        for given, adapter in self._adapters:
            # The same object, or the module inside an adapter (``wrap_module(m)``, ``m``).
            if (model is given or model is adapter
                    or any(inner is held for held in vars(adapter).values())):
                self._model_ref = model
                return adapter
        encoder = as_encoder(model, name=self.run_name,
                             options=dict(self.setup.encoder_options))
        if encoder.sample_rate != self.heldout.sample_rate:
            raise SpeechrankError(
                f"the model expects {encoder.sample_rate} Hz audio; the monitor's held-out set "
                f"was prepared at {self.heldout.sample_rate} Hz")
        missing = [n for n in self.layers if n not in encoder.layer_names]
        if missing:
            raise SpeechrankError(f"the model has no layer {', '.join(missing)}")
        resized = [n for n in self.layers if encoder.layer_dims[n] != self.layer_dims[n]]
        if resized:
            raise SpeechrankError(
                f"layer {resized[0]} of the model is {encoder.layer_dims[resized[0]]} wide; the "
                f"monitor was built for {self.layer_dims[resized[0]]}")
        self._model_ref = model
        self._adapters = [(model, encoder), *self._adapters[:_KEPT_ADAPTERS - 1]]
        return encoder

    def _accumulate(self, model: Any, encoder: SpeechEncoder
                    ) -> tuple[LayerAccumulators, set[str]]:
        # convergence only in one process (the prefix bins are not all-reduced)
        assert self.heldout is not None and self._budget is not None
        accumulators = new_accumulators(self.plan, self.layer_dims, self._budget, self.world)
        bad: set[str] = set()
        grad_mode = (torch.inference_mode() if self.setup.inference_mode
                     and getattr(encoder, "inference_mode", True) else torch.no_grad())
        device = encoder.device
        with preserved_rng(), preserved_modes(modules_of(model, encoder)), grad_mode:
            for batch in self.heldout.batches_on(device, self.rank, self.world):
                accumulators.update(self._encode(encoder, batch, device, bad))
            if self.world > 1:
                for acc in accumulators.accumulators.values():
                    acc.all_reduce(self.setup.group)
                counts = _all_reduce_counts(
                    [accumulators.utterances] + [int(n in bad) for n in self.layers],
                    self.setup.group)
                accumulators.utterances = counts[0]
                bad = {n for n, c in zip(self.layers, counts[1:], strict=True) if c}
        return accumulators, bad

    def _encode(self, encoder: SpeechEncoder, batch: CachedBatch, device: torch.device,
                bad: set[str]) -> EncodedBatch:
        encoded = encode_padded(encoder, batch.utterances, batch.waveforms, batch.lengths,
                                self.layers, to_cpu=device.type == "cpu")
        lengths = encoded.output.lengths
        target = lengths.device
        layers = {}
        for name in self.layers:
            frames = encoded.output.layers[name]
            steps = torch.arange(frames.shape[1], device=target)
            valid = steps[None, :] < lengths[:, None]
            if not bool(torch.isfinite(frames[valid]).all()):
                # A diverged layer must not stop training: report NaN for it instead.
                bad.add(name)
                frames = torch.zeros_like(frames)
            layers[name] = frames
        return EncodedBatch(utterances=batch.utterances,
                            output=EncoderOutput(layers=layers, lengths=lengths),
                            num_samples=batch.num_samples)

    def _check(self, step: int, values: dict[str, float]) -> list[CollapseAlarm]:
        if not self.alarm_on:
            return []
        watched = {key: (key.rsplit("/layer_", 1)[1], value) for key, value in values.items()
                   if key.rsplit("/", 1)[0] == self.alarm_on}
        alarms = self.detector.check(step, watched)
        self.alarms.extend(alarms)
        if self.alarm.warn and self.rank == 0:
            for alarm in (a for a in alarms if a.new):
                warnings.warn(alarm.message(), RankCollapseWarning, stacklevel=4)
        return alarms

    def _write(self, rows: list[ResultRow], step: int) -> None:
        if self._store is None:
            if isinstance(self._store_arg, (str, os.PathLike)):
                from speechrank.store import ResultStore

                self._store, self._owns_store = ResultStore(Path(self._store_arg)), True
            else:
                self._store = self._store_arg
        checkpoint = self.checkpoint_format.format(step=step)
        key = f"{self.run_name}|{checkpoint}|monitor|{self.heldout.spec}"
        meta = {"source": "monitor", "step": step, "heldout": self.heldout.describe()}
        if self.protocol is not None:
            meta["protocol"] = self.protocol
        with self._store.unit(key, meta=meta) as unit:
            unit.add_rows(rows)

    def __repr__(self) -> str:
        return (f"RankMonitor(run={self.run_name!r}, layers={len(self.layers)}, "
                f"poolings={self.poolings}, metrics={self.metrics}, "
                f"utterances={self.heldout.num_utterances if self.heldout else 'pending'})")
