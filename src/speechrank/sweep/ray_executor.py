"""``speechrank sweep --ray``: a sweep's units as Ray tasks, the store written by the driver.

A sweep is a list of independent units (checkpoint x rank data, checkpoint x probe task; see
:func:`speechrank.sweep.units.plan_units`). Here the units still to do of each checkpoint run as one
Ray remote task, in the serial sweep's order and sharing one
:class:`~speechrank.extract.FrameMemo` (each audio file encoded once per checkpoint, as in the
serial sweep), with declared resources (``num_cpus``, ``num_gpus``) on a cluster the user
already runs (``ray start``; ``address="auto"`` or ``"HOST:PORT"``) or on a local one started
for the sweep (``"local"``: ``ray.init`` with one CPU per core this process may use).

Workers only compute: each task runs
:func:`~speechrank.sweep.checkpoint_task.run_checkpoint_task` (the serial sweep's computation of
one checkpoint's units, shared with the process executor) and returns plain data (per unit the
rows as dicts and the skipped-file counts), never an open handle. The
:class:`RayExecutor` yields each unit as its task's result comes back (``ray.wait``), and the
driver's :func:`~speechrank.sweep.run.run_units` alone writes the SQLite store, committing
each unit in one transaction, so the store's guarantees hold unchanged:

- a driver killed and started again resumes from the store: only units without a done-mark
  are submitted;
- a worker killed mid-task returned nothing, so nothing of that checkpoint's units is in the
  store; Ray runs the task again (``max_retries``) and the driver commits the one result it
  gets back;
- a unit is committed once: one result comes back per submitted task, and a commit of a key
  replaces that key's rows in the store, never adds to them.

Ray is an optional dependency (``pip install 'speechrank[ray]'``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from speechrank.errors import SpeechrankError
from speechrank.progress import Progress, ProgressArg
from speechrank.sweep.checkpoint_task import (
    PausePoint,
    UnitOutcome,
    outcomes_from_payloads,
    run_checkpoint_task,
)
from speechrank.sweep.config import SweepConfig
from speechrank.sweep.run import SweepSummary, find_all, run_units
from speechrank.sweep.units import SweepUnit

__all__ = ["PausePoint", "RayExecutor", "available_cpus", "connect", "run_checkpoint_task",
           "sweep_on_ray"]

#: The one line shown when ``--ray`` is asked for without Ray installed.
INSTALL_HINT = ("--ray needs Ray, which is not installed: pip install 'speechrank[ray]' "
                "(or pip install 'ray>=2.40')")
#: Attempts Ray makes after a worker process dies mid-unit (then the sweep stops).
DEFAULT_MAX_RETRIES = 3


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise SpeechrankError(INSTALL_HINT) from err
    return ray


def available_cpus() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def connect(address: str, *, num_cpus: int | None = None) -> bool:
    """Join a Ray cluster or start a local one; returns whether this call started Ray.

    Args:
        address: ``"local"`` starts a cluster inside this machine with ``num_cpus`` CPUs
            (default: :func:`available_cpus`); ``"auto"`` joins the cluster that ``ray start``
            runs on this node; anything else is a cluster address (``HOST:PORT`` or
            ``ray://HOST:PORT``). When Ray is already initialised in this process, that
            session is used as it is.
        num_cpus: CPUs of a local cluster (ignored when joining one).

    The workers of a local cluster import the same ``speechrank`` as this process (its source
    directory goes first on their ``PYTHONPATH``); on a cluster of your own, install speechrank
    on every node.
    """
    ray = _import_ray()
    if ray.is_initialized():
        return False
    if address == "local":
        source = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
        ray.init(num_cpus=num_cpus or available_cpus(), include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path}})
        return True
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise SpeechrankError(f"could not join the Ray cluster at '{address}': "
                              f"{' '.join(str(err).split())[:200]}") from err
    return True


def _failure(ray: Any, group: list[SweepUnit], err: Exception) -> SpeechrankError:
    where = f"sweep task of {group[0].checkpoint.name} ({len(group)} units)"
    cause = getattr(err, "cause", None)
    if isinstance(cause, SpeechrankError):
        return SpeechrankError(f"{where}: {cause}")
    if isinstance(err, ray.exceptions.WorkerCrashedError):
        return SpeechrankError(f"{where}: its worker died on every attempt "
                               f"(max_retries exhausted)")
    detail = " ".join(str(cause or err).split())
    return SpeechrankError(f"{where} failed on Ray: {detail[:300]}")


@dataclasses.dataclass(frozen=True)
class RayExecutor:
    """Each checkpoint's units as one Ray task (see the module docstring); the cluster is
    joined (or started) only when there is something to run, and shut down afterwards when
    this executor started it.

    Attributes:
        address: ``local``, ``auto`` or a cluster address (see :func:`connect`).
        device: the device each task runs its encoder on; with ``gpus_per_unit > 0`` and
            ``cpu`` given, ``cuda`` is used (Ray sets each task's visible GPUs).
        cpus_per_unit, gpus_per_unit: the resources each task (one checkpoint's units)
            declares; torch in a task uses ``max(1, floor(cpus_per_unit))`` threads.
        num_cpus: CPUs of a local cluster (default: the cores this process may use).
        max_retries: how often Ray reruns a task whose worker process died.
        pause: a testing hook (see :class:`PausePoint`).
    """

    address: str = "local"
    device: str = "cpu"
    cpus_per_unit: float = 1.0
    gpus_per_unit: float = 0.0
    num_cpus: int | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    pause: PausePoint | None = None

    def __post_init__(self) -> None:
        if self.cpus_per_unit <= 0:
            raise SpeechrankError("--cpus-per-unit must be positive")
        if self.gpus_per_unit < 0:
            raise SpeechrankError("--gpus-per-unit must not be negative")
        if self.gpus_per_unit > 0 and self.device == "cpu":
            # Ray sets each task's visible GPUs, so the task's device is plain ``cuda``.
            object.__setattr__(self, "device", "cuda")

    def run(self, groups: Sequence[list[SweepUnit]], cfg: SweepConfig, *, run: str,
            progress: Progress) -> Iterator[UnitOutcome]:
        if not groups:
            return
        ray = _import_ray()
        started_ray = connect(self.address, num_cpus=self.num_cpus)
        try:
            task = ray.remote(run_checkpoint_task).options(
                num_cpus=self.cpus_per_unit, num_gpus=self.gpus_per_unit,
                max_retries=self.max_retries, retry_exceptions=False)
            threads = max(1, int(self.cpus_per_unit))
            pending = {task.remote(group, cfg, run=run, device=self.device, threads=threads,
                                   pause=self.pause): group for group in groups}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                group = pending.pop(ready[0])
                try:
                    payloads = ray.get(ready[0])
                except Exception as err:  # a task error or a worker dead on every attempt
                    for ref in pending:
                        ray.cancel(ref, force=True)
                    raise _failure(ray, group, err) from err
                yield from outcomes_from_payloads(group, payloads, " on Ray")
        finally:
            if started_ray:
                ray.shutdown()


def sweep_on_ray(checkpoints_spec: str | Path | Sequence[str | Path],
                 config: SweepConfig | str | Path, store_path: str | Path,
                 executor: RayExecutor | None = None, *, progress: ProgressArg = None,
                 log: Callable[[str], Any] | None = None) -> SweepSummary:
    """:func:`speechrank.sweep.sweep` with the units run as Ray tasks (same store, same rows).

    Args:
        checkpoints_spec, config, store_path: as for :func:`speechrank.sweep.sweep`.
        executor: where and with what resources the tasks run (:class:`RayExecutor`: the
            cluster address, the device, each task's CPUs and GPUs, a local cluster's CPUs,
            the retries of a task whose worker died, a testing pause); default: a local
            cluster, one CPU per task.
        progress: a :class:`~speechrank.progress.Progress`; its ``log`` receives one line
            per committed unit unless ``log`` is given (the units' passes run in the workers
            and report nothing).
        log: called with one line per committed unit.
    """
    _import_ray()
    cfg = config if isinstance(config, SweepConfig) else SweepConfig.from_toml(config)
    return run_units(find_all(checkpoints_spec), cfg, store_path, executor or RayExecutor(),
                     progress=progress, log=log)
