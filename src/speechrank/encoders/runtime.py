"""What every adapter needs around a forward pass: eval mode, devices, dtypes, autocast,
fingerprints and CPU threads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from speechrank.errors import SpeechrankError

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
}


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode for the block, then restore every submodule's own flag.

    Restoring per submodule (not one ``module.train(flag)``) keeps mixed states intact, such
    as a frozen feature encoder left in eval mode inside a model that is training. Eval mode
    is what switches off layerdrop and SpecAugment-style masking in the wav2vec 2.0 family.
    """
    flags = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for sub, flag in flags:
            sub.training = flag


def module_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype of ``module``'s first parameter (float32 for a module with none)."""
    for param in module.parameters():
        return param.dtype
    return torch.float32


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Parse a ``--device`` value; a CUDA or MPS device that is not there is a user error."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise SpeechrankError(f"unknown device {device!r} (use cpu, cuda, cuda:N or mps)") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SpeechrankError(f"device {device!r} requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SpeechrankError(
                f"device {device!r} requested but only {torch.cuda.device_count()} "
                "CUDA device(s) are visible")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise SpeechrankError(f"device {device!r} requested but MPS is not available")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """Parse a weight dtype (``None`` keeps the model's float32 weights)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise SpeechrankError(
            f"unknown dtype {dtype!r} (use float32, bfloat16, float16 or float64)")
    return _DTYPES[key]


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled``; a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def hash_module(payload: dict[str, Any], module: torch.nn.Module) -> str:
    """sha256 over a JSON payload (configuration, conventions) and every tensor of
    ``module.state_dict()`` in name order: name, dtype, shape and raw bytes."""
    digest = hashlib.sha256()
    digest.update(json.dumps(payload, sort_keys=True, default=str).encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"\n{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _physical_cores(cpus: set[int]) -> int:
    """Distinct physical cores among the logical ``cpus`` (hyper-threads counted once)."""
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topo / "physical_package_id").read_text().strip()
            core = (topo / "core_id").read_text().strip()
        except OSError:
            return len(cpus)
        cores.add((package, core))
    return max(1, len(cores))


def available_physical_cores() -> int:
    """Physical cores this process may run on (its CPU affinity, hyper-threads removed)."""
    try:
        cpus = set(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return max(1, (os.cpu_count() or 1))
    return _physical_cores(cpus)


def configure_cpu_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to the physical cores this process may use.

    PyTorch sizes its thread pool from the machine, not from the process's CPU affinity, so a
    container or ``taskset`` limited to 2 of 64 cores oversubscribes badly. With ``n`` given,
    that many threads are used. Without it, nothing changes when the user chose already
    (``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` set, or torch's thread count already at or below
    the available cores, as after an explicit ``torch.set_num_threads``); otherwise the count
    is lowered to the available physical cores. Returns the thread count in effect.
    """
    if n is not None:
        if n < 1:
            raise SpeechrankError(f"the number of CPU threads must be at least 1, got {n}")
        torch.set_num_threads(int(n))
        return torch.get_num_threads()
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return torch.get_num_threads()
    cores = available_physical_cores()
    if torch.get_num_threads() > cores:
        torch.set_num_threads(cores)
    return torch.get_num_threads()
