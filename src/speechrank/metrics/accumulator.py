"""Streaming float64 Gram matrix: one pass, O(D^2) memory, exact merges.

Every spectral metric of DESIGN.md section 1 needs only the spectrum of the row matrix X
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


class _BatchSums:
    """The Gram matrix, column sums and count of one ``update`` call, before they are committed.

    Accumulating a batch apart from the state and committing it only after every chunk passed
    the finiteness check is what makes ``update`` all-or-nothing.
    """

    def __init__(self, dim: int, device: torch.device) -> None:
        self.device = device
        self.n = 0
        if device.type == "cpu":
            # Upper triangle of X^T X in Fortran order, updated in place by BLAS dsyrk.
            self.gram: Any = np.zeros((dim, dim), order="F")
            self.colsum: Any = np.zeros(dim)
        else:
            self.gram = torch.zeros(dim, dim, dtype=torch.float64, device=device)
            self.colsum = torch.zeros(dim, dtype=torch.float64, device=device)

    def add(self, block: Any, offset: int) -> None:
        """Add one float64 block; raise NonFiniteError (naming the row) if it holds NaN/Inf."""
        sums = block.sum(0)
        finite = np.isfinite(sums).all() if isinstance(sums, np.ndarray) else bool(
            torch.isfinite(sums).all()
        )
        if not finite:  # a NaN or Inf anywhere makes its column sum non-finite
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
        if isinstance(block, np.ndarray):
            self.gram = blas.dsyrk(
                1.0, block.T, beta=1.0, c=self.gram, trans=0, lower=0, overwrite_c=1
            )
        else:
            self.gram.addmm_(block.T, block)
        self.colsum += sums
        self.n += block.shape[0]

    def commit(self, gram: torch.Tensor, colsum: torch.Tensor) -> None:
        """Add the batch to the state tensors (same device), after the overflow check."""
        if not (_all_finite(self.gram) and _all_finite(self.colsum)):
            raise NonFiniteError(
                "rows too large: their float64 Gram matrix overflows; nothing from this update "
                "was accumulated"
            )
        if isinstance(self.gram, np.ndarray):
            # dsyrk filled the upper triangle U only (the lower one is still 0): add U, then
            # U^T without its diagonal, straight into the state, with no D x D temporaries.
            state = gram.numpy()
            state += self.gram
            np.fill_diagonal(self.gram, 0.0)
            state += self.gram.T
            colsum.numpy()[:] += self.colsum
        else:
            gram += self.gram
            colsum += self.colsum


def _all_finite(values: Any) -> bool:
    if isinstance(values, np.ndarray):
        return bool(np.isfinite(values).all())
    return bool(torch.isfinite(values).all())


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
        >>> acc.compute()["rankme"].value
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
        """Forget every row (back to the state right after construction)."""
        self._gram = torch.zeros(self._dim, self._dim, dtype=torch.float64, device=self._device)
        self._colsum = torch.zeros(self._dim, dtype=torch.float64, device=self._device)
        self._n = 0

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
        return self._gram.detach().cpu().numpy().copy()

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
        batch = _BatchSums(self._dim, self._device)
        for block in _inputs.iter_blocks(array, valid, self.chunk_rows, self._device):
            batch.add(block, batch.n)
            del block  # free this chunk before the next one is made
        batch.commit(self._gram, self._colsum)
        self._n += batch.n
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
        return self

    # ---------------------------------------------------------------- spectra
    def spectra(self) -> Spectra:
        """A snapshot of the current state whose spectra are computed lazily, once each."""
        return Spectra(self.gram, self.column_sums, self._n)

    def singular_values(self) -> np.ndarray:
        """Singular values of the raw rows, sqrt(eig(X^T X)), descending, min(N, D) of them."""
        return self.spectra().singular_values

    def centered_singular_values(self) -> np.ndarray:
        """Singular values of the column-centred rows, sqrt(eig(X^T X - N mu mu^T))."""
        return self.spectra().centered_singular_values

    def covariance_eigenvalues(self) -> np.ndarray:
        """Sample-covariance eigenvalues l_k = s_k^2 / (N - 1) of the centred rows (NaN if N<2)."""
        return self.spectra().covariance_eigenvalues

    def compute(self, names: Any = None, **options: Any) -> dict[str, Any]:
        """All (or the named) spectral metrics, as ``{name: MetricResult}``.

        Same as :func:`speechrank.metrics.compute_metrics` (``self, names, **options``).
        """
        from speechrank.metrics.api import compute_metrics

        return compute_metrics(self, names, **options)

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
            "gram": self._gram.detach().cpu().contiguous(),
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
        acc._device_fixed = device is not None or acc._n > 0
        return acc
