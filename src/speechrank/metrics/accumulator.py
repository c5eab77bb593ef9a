"""Streaming float64 Gram matrix: one pass, O(D^2) memory, exact merges.

Every spectral metric (docs/design.md, "The metrics") needs only the spectrum of the row matrix X
(N x D), raw or column-centred, and those follow exactly from three sums over the rows: the
Gram matrix X^T X, the column sums and the row count (see :mod:`speechrank.metrics.spectrum`).
:class:`SpectralAccumulator` keeps these sums in float64, so any number of rows, batches,
layers, shards, processes and machines fold into one D x D state by plain addition. The API
follows torchmetrics' ``Metric`` (``update`` / ``compute`` / ``reset`` and a sum reduction
across processes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.linalg import blas

from speechrank.metrics import _inputs
from speechrank.metrics.errors import AccumulatorFileError, MetricInputError, NonFiniteError
from speechrank.metrics.spectrum import Spectra

#: Written into saved files; files with a newer version are refused.
FORMAT_NAME = "speechrank.SpectralAccumulator"
FORMAT_VERSION = 1


def _check_dim(dim: Any) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise MetricInputError(f"dim must be a positive integer, got {dim!r}")
    return int(dim)


def _as_device(device: Any) -> torch.device | None:
    return None if device is None else torch.device(device)


def _block_sums(block: Any, offset: int) -> tuple[Any, Any]:
    """Column sums and column sums of squares of one float64 block, after checking it.

    Raises NonFiniteError naming the first row that holds NaN or Inf (a NaN or Inf anywhere
    makes its column sum non-finite), or saying the rows are too large for float64.
    """
    if isinstance(block, np.ndarray):
        sums = block.sum(0)
        squares = np.einsum("ij,ij->j", block, block)
        finite = bool(np.isfinite(sums).all())
    else:
        sums = block.sum(0)
        squares = (block * block).sum(0)
        finite = bool(torch.isfinite(sums).all())
    if not finite:
        if isinstance(block, np.ndarray):
            bad = np.flatnonzero(~np.isfinite(block).all(axis=1))
        else:
            bad = torch.nonzero(~torch.isfinite(block).all(dim=1)).flatten().cpu().numpy()
        if bad.size:
            raise NonFiniteError(
                f"row {offset + int(bad[0])} of this update contains NaN or Inf "
                f"({bad.size} such row(s) in its chunk); nothing from this update was "
                "accumulated"
            )
        raise NonFiniteError(
            "rows too large: their float64 sums overflow; nothing from this update was "
            "accumulated"
        )
    return sums, squares


def _add_gram(state: torch.Tensor, block: Any) -> None:
    """Add block^T block to the upper triangle of ``state`` in place.

    On the CPU this is one BLAS ``dsyrk`` (half the work of a matrix product) writing straight
    into the state: a C-ordered torch tensor seen from numpy as the F-ordered transpose, whose
    lower triangle is the state's upper one. On CUDA it is ``addmm_`` (the full product).
    """
    if isinstance(block, np.ndarray):
        target = state.numpy().T
        out = blas.dsyrk(1.0, block.T, beta=1.0, c=target, trans=0, lower=1, overwrite_c=1)
        if not np.shares_memory(out, target):  # BLAS worked on a copy: write it back
            target[...] = out
    else:
        state.addmm_(block.T, block)


class SpectralAccumulator:
    """Float64 Gram matrix X^T X, column sums and row count of a stream of rows.

    One accumulator per (layer, pooling). Feed rows with :meth:`update`, combine partial
    results with :meth:`merge` / ``+`` / :meth:`all_reduce`, persist them with :meth:`save` /
    :meth:`load`, and read spectra or metrics (:meth:`singular_values`, :meth:`compute`).

    Args:
        dim: the width D of the rows.
        device: where the float64 state lives. ``None`` (default): the CPU, unless the first
            non-empty update brings CUDA rows, in which case the state moves to that device.
            Later rows on other devices are copied to the state's device chunk by chunk.
        chunk_rows: rows converted to float64 at a time (default: about 8 MiB of float64),
            bounding the extra memory of an update to O(D^2 + chunk_rows * D).

    Example:
        >>> acc = SpectralAccumulator(768)
        >>> acc.update(frames, lengths=lengths)   # frames (B, T, 768), lengths (B,)
        >>> compute_metrics(acc)["rankme"].value   # speechrank.metrics.compute_metrics
    """

    def __init__(
        self, dim: int, *, device: Any = None, chunk_rows: int | None = None
    ) -> None:
        self._dim = _check_dim(dim)
        self._device_fixed = device is not None
        self._device = _as_device(device) or torch.device("cpu")
        if chunk_rows is not None and (not isinstance(chunk_rows, int) or chunk_rows < 1):
            raise MetricInputError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
        self.chunk_rows = chunk_rows or _inputs.default_chunk_rows(self._dim)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every row (back to the state right after construction).

        The Gram state is a D x D float64 tensor whose upper triangle (with the diagonal) holds
        X^T X; the lower triangle is never read (CPU updates skip it). :attr:`gram` returns the
        full symmetric matrix, and saved files hold that too.
        """
        self._gram = torch.zeros(self._dim, self._dim, dtype=torch.float64, device=self._device)
        self._colsum = torch.zeros(self._dim, dtype=torch.float64, device=self._device)
        self._n = 0
        # The rows themselves, float64, while there are few (see row_limit): their spectrum
        # then comes from the N x N matrix X X^T, (N/D)^3 of the cost of a D x D eigensolve.
        self._rows: list[np.ndarray] | None = [] if self._device.type == "cpu" else None

    @property
    def row_limit(self) -> int:
        """Up to this many rows (D/2) the rows are kept and spectra use the N x N route."""
        return self._dim // 2

    def _rows_matrix(self) -> np.ndarray | None:
        if self._rows is None or not self._rows or self._n > self.row_limit:
            return None
        if len(self._rows) > 1:
            self._rows = [np.concatenate(self._rows, axis=0)]
        return self._rows[0]

    @property
    def dim(self) -> int:
        """The width D of the rows."""
        return self._dim

    @property
    def n_rows(self) -> int:
        """How many rows have been accumulated."""
        return self._n

    @property
    def device(self) -> torch.device:
        """Where the float64 state lives."""
        return self._device

    @property
    def gram(self) -> np.ndarray:
        """X^T X as a float64 numpy array (a copy), D x D, symmetric."""
        state = self._gram.detach().cpu().numpy()
        return np.triu(state) + np.triu(state, 1).T

    @property
    def column_sums(self) -> np.ndarray:
        """Sum of the rows, float64 numpy array of length D (a copy)."""
        return self._colsum.detach().cpu().numpy().copy()

    @property
    def mean(self) -> np.ndarray:
        """Mean row (column means), float64; all NaN when no rows have been seen."""
        if self._n == 0:
            return np.full(self._dim, np.nan)
        return self.column_sums / self._n

    def __repr__(self) -> str:
        return (
            f"SpectralAccumulator(dim={self._dim}, n_rows={self._n}, "
            f"device='{self._device}')"
        )

    # ----------------------------------------------------------------- update
    def update(self, rows: Any, mask: Any = None, *, lengths: Any = None) -> None:
        """Add rows to the accumulator.

        Args:
            rows: (N, D) rows, or (B, T, D) padded frames; a torch tensor (float32, bfloat16,
                float16, float64, CPU or CUDA) or a numpy array.
            mask: for 3-D rows, a (B, T) boolean mask of the valid frames.
            lengths: for 3-D rows, the valid frame count of each of the B utterances (frames
                ``0 .. lengths[b] - 1`` are valid). Without ``mask`` and ``lengths`` every
                frame of 3-D rows counts.

        Raises:
            NonFiniteError: some row holds NaN or Inf; nothing from this call is accumulated.
            MetricInputError: shapes or dtypes that do not fit.
        """
        array = _inputs.as_array(rows)
        valid = _inputs.check_rows(array, self._dim, mask, lengths)
        if _inputs.count_rows(array, valid) == 0:
            return
        if (
            not self._device_fixed
            and self._n == 0
            and isinstance(array, torch.Tensor)
            and array.device.type == "cuda"
        ):
            self._device = array.device
            self.reset()
        # Two passes so that an update is all-or-nothing without a second D x D buffer: first
        # check every chunk (finite rows, no float64 overflow) and sum it, then fold the rows
        # into the Gram state. A single chunk (the common case) is converted only once.
        sums = torch.zeros(self._dim, dtype=torch.float64)
        squares = torch.zeros(self._dim, dtype=torch.float64)
        kept: Any = None
        count = 0
        blocks = _inputs.iter_blocks(array, valid, self.chunk_rows, self._device)
        for index, block in enumerate(blocks):
            block_sums, block_squares = _block_sums(block, count)
            sums += torch.as_tensor(block_sums).cpu()
            squares += torch.as_tensor(block_squares).cpu()
            count += block.shape[0]
            kept = block if index == 0 else None
            del block  # free this chunk before the next one is made
        # |G_ij| <= sqrt(G_ii G_jj): a finite diagonal keeps every entry finite.
        totals = torch.cat([self._gram.diagonal().cpu() + squares, self._colsum.cpu() + sums])
        if not bool(torch.isfinite(totals).all()):
            raise NonFiniteError(
                "rows too large: their float64 Gram matrix overflows; nothing from this update "
                "was accumulated"
            )
        blocks = [kept] if kept is not None else _inputs.iter_blocks(
            array, valid, self.chunk_rows, self._device)
        keep_rows = self._rows is not None and self._n + count <= self.row_limit
        if not keep_rows:
            self._rows = None
        for block in blocks:
            _add_gram(self._gram, block)
            if keep_rows:
                self._rows.append(np.array(block, dtype=np.float64))  # never the caller's array
            del block
        self._colsum += sums.to(self._device)
        self._n += count
        self._device_fixed = True

    # ---------------------------------------------------------------- combine
    def merge(self, other: SpectralAccumulator) -> SpectralAccumulator:
        """Add ``other``'s rows to this accumulator in place and return ``self``."""
        if not isinstance(other, SpectralAccumulator):
            raise MetricInputError(
                f"can only merge a SpectralAccumulator, got {type(other).__name__}"
            )
        if other.dim != self._dim:
            raise MetricInputError(
                f"cannot merge accumulators of different dim ({self._dim} and {other.dim})"
            )
        self._gram += other._gram.to(self._device)
        self._colsum += other._colsum.to(self._device)
        both_kept = self._rows is not None and other._rows is not None
        if both_kept and self._n + other._n <= self.row_limit:
            self._rows.extend(other._rows)
        else:
            self._rows = None
        self._n += other._n
        return self

    def __add__(self, other: SpectralAccumulator) -> SpectralAccumulator:
        if not isinstance(other, SpectralAccumulator):
            return NotImplemented
        return self.copy().merge(other)

    def __iadd__(self, other: SpectralAccumulator) -> SpectralAccumulator:
        if not isinstance(other, SpectralAccumulator):
            return NotImplemented
        return self.merge(other)

    def copy(self) -> SpectralAccumulator:
        """An independent copy (same device, same chunking)."""
        twin = SpectralAccumulator(self._dim, device=self._device, chunk_rows=self.chunk_rows)
        twin._device_fixed = self._device_fixed
        twin._gram = self._gram.clone()
        twin._colsum = self._colsum.clone()
        twin._n = self._n
        twin._rows = None if self._rows is None else [rows.copy() for rows in self._rows]
        return twin

    def all_reduce(self, group: Any = None) -> SpectralAccumulator:
        """Sum the state over all processes of ``group`` (every process must call this).

        Uses ``torch.distributed.all_reduce`` with ``SUM``, so afterwards every process holds
        the accumulator of all rows seen anywhere (float addition, so exact up to the order of
        the sums). The state is sent from the device the backend needs: CPU for gloo, the
        current CUDA device for NCCL. Returns ``self``.

        Raises:
            MetricInputError: ``torch.distributed`` is not initialised, or the processes'
                accumulators have different ``dim``.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise MetricInputError(
                "all_reduce needs an initialised torch.distributed process group"
            )
        comm = self._device
        if dist.get_backend(group) == "nccl" and comm.type != "cuda":
            comm = torch.device("cuda", torch.cuda.current_device())
        elif dist.get_backend(group) == "gloo" and comm.type != "cpu":
            comm = torch.device("cpu")
        dims = torch.tensor([self._dim, -self._dim], dtype=torch.int64, device=comm)
        dist.all_reduce(dims, op=dist.ReduceOp.MAX, group=group)
        if int(dims[0]) != self._dim or int(-dims[1]) != self._dim:
            raise MetricInputError(
                f"all_reduce over accumulators of different dim ({int(-dims[1])}.."
                f"{int(dims[0])})"
            )
        flat = torch.cat([self._gram.reshape(-1), self._colsum]).to(comm)
        count = torch.tensor([self._n], dtype=torch.int64, device=comm)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        dist.all_reduce(count, op=dist.ReduceOp.SUM, group=group)
        flat = flat.to(self._device)
        d2 = self._dim * self._dim
        self._gram = flat[:d2].reshape(self._dim, self._dim).clone()
        self._colsum = flat[d2:].clone()
        self._n = int(count[0])
        self._rows = None  # the other processes' rows are not here: the Gram route from now on
        return self

    # ---------------------------------------------------------------- spectra
    def spectra(self) -> Spectra:
        """A snapshot of the current state whose spectra are computed lazily, once each."""
        rows = self._rows_matrix()
        if rows is None:
            return Spectra(self.gram, self.column_sums, self._n)
        # The rows route needs no D x D matrix; build one from the same rows only if asked.
        return Spectra(lambda: rows.T @ rows, self.column_sums, self._n, rows=rows)

    def singular_values(self) -> np.ndarray:
        """Singular values of the raw rows, sqrt(eig(X^T X)), descending, min(N, D) of them."""
        return self.spectra().singular_values

    def centered_singular_values(self) -> np.ndarray:
        """Singular values of the column-centred rows, sqrt(eig(X^T X - N mu mu^T))."""
        return self.spectra().centered_singular_values

    def covariance_eigenvalues(self) -> np.ndarray:
        """Sample-covariance eigenvalues l_k = s_k^2 / (N - 1) of the centred rows (NaN if N<2)."""
        return self.spectra().covariance_eigenvalues

    # ---------------------------------------------------------------- persist
    def save(self, path: str | os.PathLike[str], *, metadata: dict[str, str] | None = None) -> Path:
        """Write the state to a safetensors file (atomically: a crash leaves no partial file).

        The file holds the float64 ``gram`` and ``column_sums`` and the int64 ``n_rows``, with
        metadata ``format``, ``format_version``, ``dim``, ``n_rows`` and any string pairs given
        in ``metadata`` (e.g. model, layer, pooling). Partial results saved by several
        processes or runs can be loaded and merged later.
        """
        from safetensors.torch import save_file

        path = Path(path)
        extra = {str(k): str(v) for k, v in (metadata or {}).items()}
        info = {
            **extra,
            "format": FORMAT_NAME,
            "format_version": str(FORMAT_VERSION),
            "dim": str(self._dim),
            "n_rows": str(self._n),
        }
        tensors = {
            "gram": torch.from_numpy(self.gram),
            "column_sums": self._colsum.detach().cpu().contiguous(),
            "n_rows": torch.tensor([self._n], dtype=torch.int64),
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            save_file(tensors, str(tmp), metadata=info)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @staticmethod
    def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
        """The string metadata of a saved accumulator file."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                return dict(handle.metadata() or {})
        except FileNotFoundError as exc:
            raise AccumulatorFileError(f"{path}: no such accumulator file") from exc
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise AccumulatorFileError(f"{path}: not a safetensors file ({exc})") from exc

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: Any = None) -> SpectralAccumulator:
        """Read an accumulator written by :meth:`save`."""
        from safetensors.torch import load_file

        info = cls.read_metadata(path)
        if info.get("format") != FORMAT_NAME:
            raise AccumulatorFileError(
                f"{path}: not a speechrank SpectralAccumulator file "
                f"(format={info.get('format')!r})"
            )
        version = int(info.get("format_version", "0"))
        if version > FORMAT_VERSION:
            raise AccumulatorFileError(
                f"{path}: format version {version} is newer than this speechrank reads "
                f"({FORMAT_VERSION}); upgrade speechrank"
            )
        tensors = load_file(str(path))
        gram, colsum, count = tensors.get("gram"), tensors.get("column_sums"), tensors.get(
            "n_rows"
        )
        dim = int(info.get("dim", "0"))
        if (
            gram is None
            or colsum is None
            or count is None
            or tuple(gram.shape) != (dim, dim)
            or tuple(colsum.shape) != (dim,)
            or gram.dtype != torch.float64
            or int(count[0]) != int(info.get("n_rows", "-1"))
        ):
            raise AccumulatorFileError(f"{path}: inconsistent accumulator file")
        acc = cls(dim, device=device)
        acc._gram = gram.to(acc._device)
        acc._colsum = colsum.to(acc._device)
        acc._n = int(count[0])
        acc._rows = None  # files hold the sums only
        acc._device_fixed = device is not None or acc._n > 0
        return acc
