"""SpectralAccumulator: updates (2-D, masked 3-D, dtypes), NaN refusal, merging, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from speechrank.errors import SpeechrankError
from speechrank.metrics import (
    AccumulatorFileError,
    MetricInputError,
    NonFiniteError,
    SpectralAccumulator,
    compute_metrics,
)

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Single-threaded BLAS: these matrices are small and the CI's cores are shared, where
    spinning BLAS threads slow small products down many times over."""
    with threadpool_limits(1):
        yield


def _rows(seed: int, n: int, d: int, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) + rng.standard_normal(d)).astype(dtype)


def _state(acc: SpectralAccumulator) -> tuple[np.ndarray, np.ndarray, int]:
    return acc.gram, acc.column_sums, acc.n_rows


def _assert_same_state(a: SpectralAccumulator, b: SpectralAccumulator, rtol: float = 1e-12):
    assert a.n_rows == b.n_rows
    np.testing.assert_allclose(a.gram, b.gram, rtol=rtol, atol=rtol * np.abs(b.gram).max())
    np.testing.assert_allclose(a.column_sums, b.column_sums, rtol=rtol,
                               atol=rtol * max(np.abs(b.column_sums).max(), 1.0))


def test_gram_column_sums_and_mean_are_the_float64_sums():
    x = _rows(0, 300, 7)
    acc = SpectralAccumulator(7, chunk_rows=64)
    acc.update(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(acc.gram, x64.T @ x64, rtol=1e-12)
    np.testing.assert_allclose(acc.column_sums, x64.sum(0), rtol=1e-12)
    np.testing.assert_allclose(acc.mean, x64.mean(0), rtol=1e-12)
    assert acc.n_rows == 300 and acc.dim == 7
    assert acc.gram.dtype == np.float64
    np.testing.assert_array_equal(acc.gram, acc.gram.T)


@SETTINGS
@given(seed=st.integers(0, 2**16), chunk=st.integers(1, 50), cuts=st.lists(
    st.integers(0, 120), max_size=4))
def test_chunking_and_batching_do_not_change_the_state(seed, chunk, cuts):
    x = _rows(seed, 120, 5, np.float64)
    one = SpectralAccumulator(5)
    one.update(x)
    split = SpectralAccumulator(5, chunk_rows=chunk)
    for part in np.split(x, sorted(cuts)):
        split.update(part)
    _assert_same_state(split, one)


@SETTINGS
@given(seed=st.integers(0, 2**16), use_lengths=st.booleans(), as_torch=st.booleans())
def test_masked_3d_update_equals_update_with_only_the_valid_rows(seed, use_lengths, as_torch):
    rng = np.random.default_rng(seed)
    batch, frames, dim = 6, 9, 4
    padded = rng.standard_normal((batch, frames, dim)).astype(np.float32)
    lengths = rng.integers(0, frames + 1, size=batch)
    mask = np.arange(frames)[None, :] < lengths[:, None]
    if not use_lengths:  # an arbitrary mask, not just a prefix
        mask = rng.random((batch, frames)) < 0.6
    padded[~mask] = np.nan  # padding is never read, whatever it holds
    valid = padded[mask]
    expected = SpectralAccumulator(dim)
    expected.update(valid)
    got = SpectralAccumulator(dim, chunk_rows=int(rng.integers(1, 20)))
    rows = torch.from_numpy(padded) if as_torch else padded
    if use_lengths:
        got.update(rows, lengths=torch.from_numpy(lengths) if as_torch else lengths)
    else:
        got.update(rows, torch.from_numpy(mask) if as_torch else mask)
    _assert_same_state(got, expected)


def test_3d_rows_without_mask_count_every_frame():
    x = _rows(1, 24, 3).reshape(4, 6, 3)
    acc, flat = SpectralAccumulator(3), SpectralAccumulator(3)
    acc.update(x)
    flat.update(x.reshape(-1, 3))
    _assert_same_state(acc, flat)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_torch_dtypes_accumulate_their_exact_values_in_float64(dtype):
    x = torch.from_numpy(_rows(2, 50, 6)).to(dtype)
    acc = SpectralAccumulator(6)
    acc.update(x)
    x64 = x.double().numpy()
    np.testing.assert_allclose(acc.gram, x64.T @ x64, rtol=1e-12)
    assert acc.device == torch.device("cpu")


def test_numpy_integer_and_read_only_inputs_are_accepted():
    x = np.arange(12, dtype=np.int32).reshape(4, 3)
    x.setflags(write=False)
    acc = SpectralAccumulator(3)
    acc.update(x)
    x64 = x.astype(np.float64)
    np.testing.assert_array_equal(acc.gram, x64.T @ x64)


def test_tensor_requiring_grad_is_detached():
    x = torch.randn(10, 4, requires_grad=True)
    acc = SpectralAccumulator(4)
    acc.update(x * 2)
    assert acc.n_rows == 10


@SETTINGS
@given(seed=st.integers(0, 2**16), bad=st.sampled_from([np.nan, np.inf, -np.inf]),
       where=st.integers(0, 79 * 3), as_torch=st.booleans())
def test_non_finite_rows_are_refused_before_any_state_changes(seed, bad, where, as_torch):
    acc = SpectralAccumulator(3, chunk_rows=16)
    acc.update(_rows(seed, 20, 3))
    before = _state(acc)
    x = _rows(seed + 1, 80, 3)
    x.flat[where] = bad
    with pytest.raises(NonFiniteError, match=f"row {where // 3} ") as info:
        acc.update(torch.from_numpy(x) if as_torch else x)
    assert isinstance(info.value, SpeechrankError)
    after = _state(acc)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert after[2] == before[2]


def test_overflowing_rows_are_refused():
    acc = SpectralAccumulator(2)
    with pytest.raises(NonFiniteError, match="overflow"):
        acc.update(np.full((3, 2), 1e200))
    assert acc.n_rows == 0 and not acc.gram.any()


@pytest.mark.parametrize(
    ("rows", "kwargs", "message"),
    [
        (np.zeros((4, 3)), {}, "columns"),
        (np.zeros(5), {}, "dimension"),
        (np.zeros((2, 3, 5, 5)), {}, "dimension"),
        (np.zeros((4, 5), dtype=complex), {}, "real"),
        (np.zeros((4, 5)), {"mask": np.ones(4, bool)}, "3-D|\\(B, T, D\\)"),
        (np.zeros((2, 3, 5)), {"lengths": np.array([1, 4])}, "lengths must lie"),
        (np.zeros((2, 3, 5)), {"lengths": np.array([1.0, 2.0])}, "integers"),
        (np.zeros((2, 3, 5)), {"mask": np.ones((2, 4), bool)}, "mask must be"),
        (np.zeros((2, 3, 5)), {"mask": np.ones((2, 3), int)}, "mask must be"),
        (np.zeros((2, 3, 5)), {"mask": np.ones((2, 3), bool), "lengths": np.array([1, 1])},
         "not both"),
    ],
)
def test_bad_rows_give_one_line_errors(rows, kwargs, message):
    acc = SpectralAccumulator(5)
    with pytest.raises(MetricInputError, match=message):
        acc.update(rows, kwargs.pop("mask", None), **kwargs)
    assert acc.n_rows == 0


@pytest.mark.parametrize("dim", [0, -3, 2.5, True, "8"])
def test_bad_dim_is_refused(dim):
    with pytest.raises(MetricInputError, match="dim"):
        SpectralAccumulator(dim)


def test_merge_add_copy_and_reset():
    x = _rows(3, 200, 6)
    whole = SpectralAccumulator(6)
    whole.update(x)
    a, b = SpectralAccumulator(6), SpectralAccumulator(6)
    a.update(x[:70])
    b.update(x[70:])
    total = a + b
    assert a.n_rows == 70 and b.n_rows == 130  # + leaves both operands alone
    _assert_same_state(total, whole)
    c = a.copy()
    assert c.merge(b) is c
    _assert_same_state(c, whole)
    a += b
    _assert_same_state(a, whole)
    c.reset()
    assert c.n_rows == 0 and not c.gram.any() and np.isnan(c.mean).all()
    assert total.n_rows == 200  # copies are independent
    with pytest.raises(MetricInputError, match="different dim"):
        a.merge(SpectralAccumulator(5))
    with pytest.raises(MetricInputError, match="SpectralAccumulator"):
        a.merge(np.zeros((6, 6)))  # type: ignore[arg-type]


def test_save_load_round_trip_is_exact_and_partial_results_combine(tmp_path):
    x = _rows(4, 500, 8)
    whole = SpectralAccumulator(8)
    whole.update(x)
    for i, part in enumerate(np.array_split(x, 3)):
        shard = SpectralAccumulator(8)
        shard.update(part)
        shard.save(tmp_path / f"shard{i}.safetensors", metadata={"layer": "3", "pooling": "sum"})
    loaded = [SpectralAccumulator.load(tmp_path / f"shard{i}.safetensors") for i in range(3)]
    combined = loaded[0] + loaded[1] + loaded[2]
    _assert_same_state(combined, whole)
    path = whole.save(tmp_path / "whole.safetensors")
    back = SpectralAccumulator.load(path)
    np.testing.assert_array_equal(back.gram, whole.gram)
    np.testing.assert_array_equal(back.column_sums, whole.column_sums)
    assert back.n_rows == whole.n_rows and back.dim == 8
    info = SpectralAccumulator.read_metadata(tmp_path / "shard0.safetensors")
    assert info["layer"] == "3" and info["format_version"] == "1" and info["dim"] == "8"
    assert compute_metrics(back)["rankme"].value == compute_metrics(whole)["rankme"].value
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary file


def test_load_refuses_missing_corrupt_foreign_and_newer_files(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(AccumulatorFileError, match="no such"):
        SpectralAccumulator.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(AccumulatorFileError):
        SpectralAccumulator.load(tmp_path / "junk.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"a": "b"})
    with pytest.raises(AccumulatorFileError, match="not a speechrank"):
        SpectralAccumulator.load(tmp_path / "other.safetensors")
    acc = SpectralAccumulator(3)
    acc.update(np.ones((2, 3)))
    acc.save(tmp_path / "acc.safetensors", metadata={"format_version": "ignored"})
    assert SpectralAccumulator.read_metadata(tmp_path / "acc.safetensors")[
        "format_version"] == "1"
    tensors = {"gram": torch.zeros(3, 3, dtype=torch.float64),
               "column_sums": torch.zeros(3, dtype=torch.float64),
               "n_rows": torch.tensor([0])}
    newer = {"format": "speechrank.SpectralAccumulator", "format_version": "99", "dim": "3",
             "n_rows": "0"}
    save_file(tensors, str(tmp_path / "newer.safetensors"), metadata=newer)
    with pytest.raises(AccumulatorFileError, match="newer"):
        SpectralAccumulator.load(tmp_path / "newer.safetensors")
    bad = {**newer, "format_version": "1", "n_rows": "5"}
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=bad)
    with pytest.raises(AccumulatorFileError, match="inconsistent"):
        SpectralAccumulator.load(tmp_path / "bad.safetensors")


def test_empty_updates_change_nothing():
    acc = SpectralAccumulator(4)
    acc.update(np.zeros((0, 4), np.float32))
    acc.update(np.zeros((3, 0, 4)), lengths=np.zeros(3, dtype=np.int64))
    assert acc.n_rows == 0


def test_all_reduce_without_a_process_group_is_a_clear_error():
    with pytest.raises(MetricInputError, match=r"torch\.distributed"):
        SpectralAccumulator(3).all_reduce()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rows_accumulate_on_their_device_and_match_the_cpu():
    x = torch.from_numpy(_rows(5, 3000, 32))
    cpu, gpu = SpectralAccumulator(32), SpectralAccumulator(32)
    cpu.update(x)
    gpu.update(x.cuda().to(torch.bfloat16).float())
    gpu_bf = SpectralAccumulator(32)
    gpu_bf.update(x.cuda().to(torch.bfloat16))
    assert gpu.device.type == "cuda"
    _assert_same_state(gpu, gpu_bf)
    ref = SpectralAccumulator(32)
    ref.update(x.to(torch.bfloat16))
    _assert_same_state(gpu, ref, rtol=1e-10)
    both = cpu.copy().merge(gpu)  # merging across devices moves the other state
    assert both.n_rows == 6000
