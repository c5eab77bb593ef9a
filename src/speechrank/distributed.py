"""Data-parallel ``rank`` and ``probe`` under ``torchrun``: the process group and its plumbing.

``torchrun --nproc-per-node N -m speechrank rank MODEL DATA ...`` starts N processes with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment. :func:`setup` sees them and
joins the process group: NCCL on ``cuda:LOCAL_RANK`` when the command asks for CUDA and CUDA is
there, gloo on the CPU otherwise, with a timeout on every collective (``SPEECHRANK_DIST_TIMEOUT``
seconds, default 600) so a process that dies takes the job down instead of leaving the others
waiting forever.

What the commands do with it (hooks in :mod:`speechrank.rank` and
:mod:`speechrank.probes.features`):

- every process plans the whole utterance list (the seeded subset, the frame quotas and the
  per-utterance frame choice depend only on the seed and the uids), then encodes its share
  :func:`shard`: round-robin by position in that list, so the set of utterances and frames is
  the same whatever N is;
- ``rank``'s Gram states are summed across processes (:func:`reduce_accumulators`,
  accumulators merge by addition: Aldeneh et al. 2025 compute RankMe-t from X^T X, which is a
  sum over rows);
- ``probe``'s per-utterance features are gathered (:func:`gather`) and put back in the
  single-process order (by position in the planned list), so every fit sees the same matrix;
- only the main process (rank 0) prints, writes JSON and writes a store.

Values then equal one process's up to the float32 forward of differently composed batches
(~1e-7 relative on frames); with batches of one utterance and one thread per process the float64
sums agree to ~1e-12.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any, TypeVar

import torch

from speechrank.errors import SpeechrankError

T = TypeVar("T")

#: Environment variable: seconds a collective may wait for the other processes.
TIMEOUT_ENV = "SPEECHRANK_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


@dataclasses.dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: str
    timeout_s: float

    @property
    def is_main(self) -> bool:
        """Whether this process prints and writes the outputs (rank 0)."""
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """What the JSON output records about the job."""
        return {"world_size": self.world_size, "backend": self.backend,
                "sharding": "round-robin by position in the planned utterance list",
                "timeout_s": self.timeout_s}


#: What the JSON output records when the command ran in one process.
SINGLE_PROCESS = {"world_size": 1, "backend": None, "sharding": None}

_current: Distributed | None = None


def env_world() -> tuple[int, int, int] | None:
    """``(RANK, WORLD_SIZE, LOCAL_RANK)`` from the environment ``torchrun`` sets, else ``None``."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    try:
        rank = int(os.environ["RANK"])
        world = int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError as err:
        raise SpeechrankError(f"torch.distributed environment is not numeric ({err})") from err
    if world < 1 or not 0 <= rank < world:
        raise SpeechrankError(f"torch.distributed environment: RANK={rank} outside "
                              f"WORLD_SIZE={world}")
    return rank, world, local


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError as err:
        raise SpeechrankError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from err
    if value <= 0:
        raise SpeechrankError(f"{TIMEOUT_ENV} must be positive, got {raw!r}")
    return value


def setup(device: str = "cpu") -> Distributed | None:
    """Join the ``torchrun`` process group when the environment names one of 2+ processes.

    Returns ``None`` (one process, nothing to do) without that environment or with
    ``WORLD_SIZE=1``. ``device`` is the command's ``--device``: ``cuda`` (any ``cuda:N``) puts
    this process on ``cuda:LOCAL_RANK`` with NCCL; anything else runs on the CPU with gloo.
    """
    global _current
    world = env_world()
    if world is None or world[1] == 1:
        return None
    import torch.distributed as dist

    rank, size, local = world
    timeout = _timeout()
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SpeechrankError("--device cuda under torchrun, but CUDA is not available")
        torch.cuda.set_device(local)
        backend, where = "nccl", f"cuda:{local}"
    else:
        backend, where = "gloo", "cpu"
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend=backend, rank=rank, world_size=size,
                                    timeout=datetime.timedelta(seconds=timeout))
        except Exception as err:  # the store or a peer could not be reached
            raise SpeechrankError(f"torch.distributed: could not join the process group "
                                  f"({_brief(err)})") from err
    _current = Distributed(rank=rank, world_size=size, local_rank=local, backend=backend,
                           device=where, timeout_s=timeout)
    return _current


def current() -> Distributed | None:
    """The job this process joined with :func:`setup`, or ``None`` in a single process."""
    return _current


def teardown() -> None:
    """Leave the process group (called once the command is done)."""
    global _current
    if _current is None:
        return
    import torch.distributed as dist

    _current = None
    if dist.is_initialized():
        dist.destroy_process_group()


def _brief(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:240]}"


def _collective(what: str, fn: Callable[[], T]) -> T:
    """Run a collective; a dead or stuck peer becomes one :class:`SpeechrankError` line."""
    try:
        return fn()
    except SpeechrankError:
        raise
    except Exception as err:
        ctx = _current
        timeout = ctx.timeout_s if ctx else DEFAULT_TIMEOUT_S
        raise SpeechrankError(f"torch.distributed {what} failed: another process died or did "
                              f"not answer within {timeout:.0f} s ({_brief(err)})") from err


def shard(items: Sequence[T], ctx: Distributed | None = None) -> list[T]:
    """This process's share of ``items``: every ``world_size``-th item from position ``rank``.

    The shares of all processes partition ``items`` whatever the world size, so the same items
    are processed in total (a process may get none when there are fewer items than processes).
    """
    ctx = ctx or _current
    if ctx is None:
        return list(items)
    return list(items[ctx.rank::ctx.world_size])


def gather(obj: Any, ctx: Distributed | None = None) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process (``all_gather_object``)."""
    ctx = ctx or _current
    if ctx is None:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    _collective("all_gather_object", lambda: dist.all_gather_object(out, obj))
    return out


def sum_values(values: Sequence[float], ctx: Distributed | None = None) -> list[float]:
    """Element-wise sums of ``values`` over all processes (float64 on the CPU or the GPU)."""
    ctx = ctx or _current
    if ctx is None:
        return [float(v) for v in values]
    import torch.distributed as dist

    tensor = torch.tensor(list(values), dtype=torch.float64, device=ctx.device)
    _collective("all_reduce", lambda: dist.all_reduce(tensor, op=dist.ReduceOp.SUM))
    return [float(v) for v in tensor.cpu().tolist()]


def reduce_accumulators(accumulators: MutableMapping[Any, Any],
                        ctx: Distributed | None = None) -> None:
    """Sum every process's :class:`~speechrank.metrics.SpectralAccumulator` in place.

    CPU accumulators are gathered whole and merged in rank order (so a few rows, kept while
    N <= D/2, stay rows and the spectrum takes the same N x N route as in one process); others
    are summed with :meth:`SpectralAccumulator.all_reduce` (the Gram route, as on one GPU).
    Every process must call this with the same keys in the same order.
    """
    ctx = ctx or _current
    if ctx is None:
        return
    for key in list(accumulators):
        acc = accumulators[key]
        if acc.device.type == "cpu":
            states = gather(acc, ctx)
            merged = states[0]
            for other in states[1:]:
                merged.merge(other)
            accumulators[key] = merged
        else:
            _collective("all_reduce", acc.all_reduce)
