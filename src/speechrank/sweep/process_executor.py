"""Checkpoints side by side in worker processes on this machine, the store written by the driver.

A small encoder does not keep two cores busy: one checkpoint at two torch threads is slower
than two checkpoints at one thread each (the demo's sweep: see the README's benchmarks). The
:class:`ProcessExecutor` runs each checkpoint's units still to do as one task in a pool of
worker processes (:class:`concurrent.futures.ProcessPoolExecutor`), each with its own torch
thread pool and its own :class:`~speechrank.extract.FrameMemo`; a task runs
:func:`~speechrank.sweep.checkpoint_task.run_checkpoint_task`, the serial sweep's computation
of one checkpoint (shared with the Ray executor), and returns plain data (rows as dicts).
The driver's :func:`~speechrank.sweep.run.run_units` alone writes the store, one transaction
per unit as each task's results come back, so the store's guarantees hold as in the serial
sweep: a driver killed and started again resumes from the store, and a unit is committed once.

The pool is loky's :class:`ProcessPoolExecutor` (shipped with joblib, which the probes already
use for their fits), a :class:`concurrent.futures.Executor` like the standard library's. Its
workers start by fork and exec, as with ``spawn``: a fresh interpreter that inherits nothing
from the driver (not torch's OpenMP thread pool, which a plainly forked child can deadlock on,
nor an open SQLite connection), the same on Linux, macOS and Windows, and what CUDA needs in a
child. Unlike the standard library's ``spawn`` and ``forkserver`` it does not import the
caller's ``__main__`` module again in every worker, so a script that calls
:func:`~speechrank.sweep.sweep` without an ``if __name__ == "__main__"`` guard (and ``python -m
speechrank``) works instead of starting its sweep again in each worker; and it can stop its
workers when the driver gives up (``shutdown(kill_workers=True)``). The price of a fresh
interpreter is one import of torch per worker, paid once: the workers are reused for every
checkpoint. The thread settings reach the workers as environment variables, so BLAS and
OpenMP read them before they start.

``checkpoint_workers = "auto"`` (the default) runs one worker per physical core this process
may use, at most one per checkpoint to do and as many as memory allows (a worker holds one
checkpoint, its frame memo and its probe arrays), each with ``cores // workers`` torch threads;
when that comes to one worker, or the encoder runs on a GPU, the checkpoints run in this
process (:class:`~speechrank.sweep.checkpoint_task.SerialExecutor`).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Literal

from speechrank.errors import SpeechrankError
from speechrank.progress import Progress
from speechrank.sweep.checkpoint_task import (
    PausePoint,
    SerialExecutor,
    UnitOutcome,
    outcomes_from_payloads,
    run_checkpoint_task,
)
from speechrank.sweep.config import SweepConfig
from speechrank.sweep.units import SweepUnit

#: What one worker is assumed to hold besides its frame memo: the encoder, its activations and
#: a probe's arrays (a bound for sizing ``auto``, not a measurement of any one model).
WORKER_BASE_BYTES = 1024**3

Workers = int | Literal["auto"]


def available_cores() -> int:
    """Physical cores this process may run on (its CPU affinity, hyper-threads counted once)."""
    from speechrank.encoders.runtime import available_physical_cores

    return available_physical_cores()


def _available_memory() -> int | None:
    """Bytes the OS says new processes can still use (``MemAvailable``), or ``None``."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def plan_workers(workers: Workers, *, checkpoints: int, device: str = "cpu",
                 memo_gb: float = 0.0, cores: int | None = None,
                 memory: int | None = None) -> tuple[int, int]:
    """``(worker processes, torch threads each)`` for ``checkpoints`` checkpoints to do.

    ``workers`` is a number, or ``"auto"``: one per core (``cores``, default
    :func:`available_cores`), no more than ``checkpoints``, and no more than ``memory`` bytes
    (default: what the OS has available) hold at :data:`WORKER_BASE_BYTES` plus ``memo_gb``
    each; on a GPU one (the device is what the checkpoints share). Each worker gets an equal
    share of the cores as torch threads (at least one). One worker means: run in this process.
    """
    cores = max(1, cores if cores is not None else available_cores())
    if workers == "auto":
        n = cores if device == "cpu" else 1
        memory = memory if memory is not None else _available_memory()
        if memory is not None:
            n = min(n, max(1, int(memory // (WORKER_BASE_BYTES + memo_gb * 1024**3))))
    elif isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1:
        n = workers
    else:
        raise SpeechrankError(f"checkpoint workers must be 'auto' or an integer >= 1, "
                              f"got {workers!r}")
    n = max(1, min(n, checkpoints))
    return n, max(1, cores // n)


#: Environment variables that size thread pools (OpenMP, OpenBLAS, MKL), set in every worker.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _init_worker(driver: int, threads: int) -> None:
    """Runs first in every worker: torch's threads, and leave when the driver is gone."""
    import torch

    torch.set_num_threads(threads)

    def watch() -> None:
        # A killed driver cannot stop its workers; without this they would finish their
        # checkpoint for nobody (the results have nowhere to go).
        while os.getppid() == driver:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="speechrank-driver-watch", daemon=True).start()


@dataclasses.dataclass(frozen=True)
class ProcessExecutor:
    """Each checkpoint's units as one task in a pool of worker processes (see the module
    docstring); ``workers`` and ``threads`` as :func:`plan_workers` decides unless
    ``threads`` is given. ``fit_workers`` sets the probes' fit processes in each worker
    (default: the sweep's ``fit_workers``, at most the worker's threads, so that workers times
    fit processes stay within the cores)."""

    workers: Workers = "auto"
    device: str = "cpu"
    threads: int | None = None
    fit_workers: int | None = None
    pause: PausePoint | None = None

    def run(self, groups: Sequence[list[SweepUnit]], cfg: SweepConfig, *, run: str,
            progress: Progress) -> Iterator[UnitOutcome]:
        if not groups:
            return
        n, threads = plan_workers(self.workers, checkpoints=len(groups), device=self.device,
                                  memo_gb=cfg.memo_gb)
        if n <= 1:
            yield from SerialExecutor(device=self.device).run(groups, cfg, run=run,
                                                              progress=progress)
            return
        threads = self.threads or threads
        fit = self.fit_workers or max(1, min(cfg.fit_workers, threads))
        worker_cfg = dataclasses.replace(cfg, fit_workers=fit)
        progress.log(f"sweeping {len(groups)} checkpoints in {n} worker processes "
                     f"({threads} torch thread{'s' if threads > 1 else ''} and {fit} fit "
                     f"process{'es' if fit > 1 else ''} each)")
        from joblib.externals.loky import ProcessPoolExecutor

        pool = ProcessPoolExecutor(max_workers=n, initializer=_init_worker,
                                   initargs=(os.getpid(), threads),
                                   env={name: str(threads) for name in THREAD_VARIABLES})
        finished = False
        try:
            pending: dict[Future, tuple[int, list[SweepUnit]]] = {
                pool.submit(run_checkpoint_task, group, worker_cfg, run=run, device=self.device,
                            threads=threads, pause=self.pause): (i, group)
                for i, group in enumerate(groups)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: pending[f][0]):
                    _, group = pending.pop(future)
                    payloads = _result(future, group)
                    where = f" in worker {payloads[0]['pid']}" if payloads else ""
                    yield from outcomes_from_payloads(group, payloads, where)
            finished = True
        finally:
            # Done: the workers exit on their own (a second or two of interpreter teardown
            # nobody needs to wait for). After an error, or when the driver stopped reading:
            # kill the tasks still running.
            pool.shutdown(wait=not finished, kill_workers=not finished)


def _result(future: Future, group: list[SweepUnit]) -> list[dict]:
    where = f"sweep worker of {group[0].checkpoint.name} ({len(group)} units)"
    try:
        return future.result()
    except BrokenProcessPool as err:
        raise SpeechrankError(f"{where}: a worker process died (killed, or out of memory); "
                              "the units committed so far are kept: run the sweep again to "
                              "finish the rest") from err
    except SpeechrankError as err:
        raise SpeechrankError(f"{where}: {err}") from err
