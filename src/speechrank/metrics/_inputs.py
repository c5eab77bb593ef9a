"""Turning user rows (numpy or torch, 2-D or masked 3-D) into float64 chunks.

The accumulators never materialise all rows in float64: they walk the input in chunks of about
``chunk_rows`` valid rows, convert each chunk to float64 on the accumulation device and drop it.
On the CPU a chunk is a C-contiguous ``numpy.float64`` array (fed to BLAS ``dsyrk``); on a CUDA
device it is a ``torch.float64`` tensor.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from speechrank.metrics.errors import MetricInputError

Rows = np.ndarray | torch.Tensor
Block = np.ndarray | torch.Tensor

#: Bytes of float64 data per chunk when ``chunk_rows`` is not given (8 MiB).
DEFAULT_CHUNK_BYTES = 8 * 2**20


def default_chunk_rows(dim: int) -> int:
    """Rows per chunk so that one float64 chunk is about 8 MiB (at least 256 rows)."""
    return max(256, DEFAULT_CHUNK_BYTES // (8 * max(dim, 1)))


def as_array(rows: Any, what: str = "rows") -> Rows:
    """Return ``rows`` as a detached torch tensor or a numpy array of a real numeric dtype."""
    if isinstance(rows, torch.Tensor):
        rows = rows.detach()
        if rows.is_complex():
            raise MetricInputError(f"{what} must be real, got a complex tensor ({rows.dtype})")
        return rows
    try:
        array = np.asarray(rows)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"{what} must be a numpy array or torch tensor ({exc})") from exc
    if array.dtype.kind not in "fiub":
        raise MetricInputError(
            f"{what} must hold real numbers, got numpy dtype {array.dtype}"
        )
    return array


def _valid_mask(rows: Rows, mask: Any, lengths: Any) -> Rows | None:
    """The (B, T) boolean mask of valid frames for 3-D rows, or None when all are valid."""
    if mask is not None and lengths is not None:
        raise MetricInputError("give either mask= or lengths=, not both")
    batch, frames = rows.shape[0], rows.shape[1]
    is_torch = isinstance(rows, torch.Tensor)
    if lengths is not None:
        lens = lengths.detach().cpu().numpy() if isinstance(lengths, torch.Tensor) else lengths
        lens = np.asarray(lens)
        if lens.shape != (batch,) or lens.dtype.kind not in "iu":
            raise MetricInputError(
                f"lengths must be {batch} integers (one per utterance), got shape "
                f"{lens.shape} of {lens.dtype}"
            )
        if batch and (lens.min() < 0 or lens.max() > frames):
            raise MetricInputError(
                f"lengths must lie in [0, {frames}] (the padded length), got "
                f"{int(lens.min())}..{int(lens.max())}"
            )
        valid = np.arange(frames)[None, :] < lens[:, None]
        return torch.from_numpy(valid).to(rows.device) if is_torch else valid
    if mask is None:
        return None
    if isinstance(mask, torch.Tensor):
        shape, dtype_ok = tuple(mask.shape), mask.dtype == torch.bool
    else:
        mask = np.asarray(mask)
        shape, dtype_ok = mask.shape, mask.dtype == np.bool_
    if shape != (batch, frames) or not dtype_ok:
        raise MetricInputError(
            f"mask must be a boolean ({batch}, {frames}) array of valid frames, got shape "
            f"{shape}"
        )
    if is_torch:
        mask_t = mask if isinstance(mask, torch.Tensor) else torch.from_numpy(mask)
        return mask_t.to(rows.device)
    return mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else mask


def check_rows(rows: Rows, dim: int, mask: Any = None, lengths: Any = None) -> Rows | None:
    """Validate shapes against ``dim``; return the 3-D validity mask (None if not needed)."""
    if rows.ndim == 2:
        if mask is not None or lengths is not None:
            raise MetricInputError(
                "mask= and lengths= apply to (B, T, D) rows; these rows are 2-D (N, D)"
            )
        valid = None
    elif rows.ndim == 3:
        valid = _valid_mask(rows, mask, lengths)
    else:
        raise MetricInputError(
            f"rows must be (N, D) or (B, T, D), got {rows.ndim} dimension(s) {tuple(rows.shape)}"
        )
    if rows.shape[-1] != dim:
        raise MetricInputError(
            f"rows have {rows.shape[-1]} columns but the accumulator has dim={dim}"
        )
    return valid


def _to_block(chunk: Rows, device: torch.device) -> Block:
    """One chunk as float64 on ``device``: numpy (C-contiguous) on CPU, torch on CUDA."""
    if device.type == "cpu":
        if isinstance(chunk, torch.Tensor):
            chunk = chunk.cpu()
            # numpy converts straight from a zero-copy view (torch's own float64 copy makes
            # glibc keep several chunk-sized blocks resident); bfloat16 has no numpy dtype.
            chunk = (chunk.float() if chunk.dtype == torch.bfloat16 else chunk).numpy()
        return np.ascontiguousarray(chunk, dtype=np.float64)
    if isinstance(chunk, np.ndarray):
        chunk = torch.from_numpy(np.require(chunk, dtype=np.float64, requirements=["C", "W"]))
    return chunk.to(device=device, dtype=torch.float64)


def iter_blocks(
    rows: Rows, valid: Rows | None, chunk_rows: int, device: torch.device
) -> Iterator[Block]:
    """Yield the valid rows of ``rows`` as float64 blocks of about ``chunk_rows`` rows.

    ``rows`` is (N, D), or (B, T, D) with ``valid`` a (B, T) mask (None: every frame is valid).
    Only one chunk is converted at a time, so the extra memory is O(chunk_rows * D).
    """
    if rows.ndim == 2:
        for start in range(0, rows.shape[0], chunk_rows):
            yield _to_block(rows[start : start + chunk_rows], device)
        return
    batch, frames, dim = rows.shape
    per_chunk = max(1, chunk_rows // max(frames, 1))
    for start in range(0, batch, per_chunk):
        part = rows[start : start + per_chunk]
        chunk = part.reshape(-1, dim) if valid is None else part[valid[start : start + per_chunk]]
        if chunk.shape[0]:
            yield _to_block(chunk, device)


def count_rows(rows: Rows, valid: Rows | None) -> int:
    """Number of valid rows."""
    if rows.ndim == 2:
        return int(rows.shape[0])
    if valid is None:
        return int(rows.shape[0] * rows.shape[1])
    return int(valid.sum())


def first_nonfinite_row(rows: Rows) -> int | None:
    """Index of the first (N, D) row holding NaN or Inf, or None (used on error paths only)."""
    if isinstance(rows, torch.Tensor):
        bad = torch.nonzero(~torch.isfinite(rows).all(dim=1)).flatten()
        return int(bad[0]) if bad.numel() else None
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    return int(bad[0]) if bad.size else None
