"""wrap_module, input normalisation and the runtime helpers (eval mode, threads, devices)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from speechrank.encoders import (
    EncoderOutput,
    SpeechEncoder,
    WrapOptions,
    configure_cpu_threads,
    wrap_module,
)
from speechrank.encoders.normalization import normalize_waveforms
from speechrank.encoders.runtime import eval_mode, resolve_dtype
from speechrank.errors import SpeechrankError


class ToyEncoder(torch.nn.Module):
    """Framing conv (kernel 400, hop 320) -> 2 linear "transformer" layers; dropout so that
    train mode would change the output."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 6, kernel_size=400, stride=320)
        self.proj = torch.nn.Linear(6, width)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(2))
        self.dropout = torch.nn.Dropout(0.5)

    def forward(self, waveforms: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cnn = self.conv(waveforms[:, None]).transpose(1, 2)
        x = self.dropout(self.proj(cnn))
        states = [cnn, x]
        for layer in self.layers:
            x = self.dropout(torch.tanh(layer(x)))
            states.append(x)
        return tuple(states)


def toy_lengths(n: torch.Tensor) -> torch.Tensor:
    return torch.div(n - 400, 320, rounding_mode="floor") + 1


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def toy() -> ToyEncoder:
    torch.manual_seed(0)
    return ToyEncoder()


def test_wrap_module_sequence_output(toy: ToyEncoder) -> None:
    enc = wrap_module(toy, sample_rate=16_000, frame_lengths=toy_lengths,
                      options=WrapOptions(name="toy", layer_names=["cnn", "0", "1", "2"]))
    assert isinstance(enc, SpeechEncoder)
    assert enc.layer_names == ["cnn", "0", "1", "2"] and enc.num_layers == 3
    assert enc.layer_dims == {"cnn": 6, "0": 8, "1": 8, "2": 8} and enc.dim == 8
    assert enc.frame_rate == 50.0
    waves = torch.randn(2, 8000)
    waves[1, 5000:] = 0
    toy.train()
    out = enc.encode(waves, torch.tensor([8000, 5000]), ["2", "cnn"])
    assert toy.training and toy.dropout.training  # train mode restored
    assert isinstance(out, EncoderOutput) and list(out.layers) == ["cnn", "2"]
    assert out.lengths.tolist() == [24, 15]
    assert out.layers["2"].shape == (2, 24, 8)
    again = enc.encode(waves, torch.tensor([8000, 5000]), ["2"])
    torch.testing.assert_close(out.layers["2"], again.layers["2"])  # no dropout: eval mode
    info = enc.describe()
    assert info["adapter"] == "module" and info["module_class"] == "ToyEncoder"
    assert info["layer_dims"]["cnn"] == 6
    fp = enc.fingerprint()
    with torch.no_grad():
        toy.proj.bias.add_(1.0)
    assert enc.fingerprint() != fp  # weights changed, fingerprint follows
    with pytest.raises(SpeechrankError, match="unknown layer"):
        enc.encode(waves, torch.tensor([8000, 5000]), ["7"])


def test_wrap_module_hf_style_and_mapping_outputs(toy: ToyEncoder) -> None:
    from transformers.modeling_outputs import BaseModelOutput

    def as_model_output(module: torch.nn.Module, w: torch.Tensor, n: torch.Tensor) -> object:
        states = module(w)
        return BaseModelOutput(last_hidden_state=states[-1], hidden_states=states[1:])

    enc = wrap_module(toy, sample_rate=16_000, frame_lengths=toy_lengths,
                      options=WrapOptions(forward=as_model_output))
    assert enc.layer_names == ["0", "1", "2"] and enc.name == "ToyEncoder"

    def as_mapping(module: torch.nn.Module, w: torch.Tensor, n: torch.Tensor) -> object:
        states = module(w)
        return {"cnn": states[0], "0": states[1]}

    enc = wrap_module(toy, sample_rate=16_000, frame_lengths=toy_lengths,
                      options=WrapOptions(forward=as_mapping, normalize=True, inference_mode=False))
    assert enc.layer_names == ["cnn", "0"]
    out = enc.encode(torch.randn(1, 4000) * 5 + 1, torch.tensor([4000]))
    assert out.layers["0"].shape == (1, 12, 8) and not out.layers["0"].requires_grad
    assert enc.describe()["grad_mode"] == "no_grad"


def test_wrap_module_rejects_bad_outputs(toy: ToyEncoder) -> None:
    with pytest.raises(SpeechrankError, match="layer names"):
        wrap_module(toy, sample_rate=16_000, frame_lengths=toy_lengths,
                    options=WrapOptions(layer_names=["a"]))
    with pytest.raises(SpeechrankError, match="expected"):
        wrap_module(toy, sample_rate=16_000, frame_lengths=toy_lengths,
                    options=WrapOptions(forward=lambda m, w, n: 3))
    with pytest.raises(SpeechrankError, match="frame_lengths"):
        wrap_module(toy, sample_rate=16_000, frame_lengths=lambda n: n // 100)


def test_eval_mode_restores_each_submodule() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(), torch.nn.Linear(2, 2))
    net.train()
    net[1].eval()
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == [True, True, False, True]
    with pytest.raises(RuntimeError), eval_mode(net):
        raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == [True, True, False, True]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=2, max_value=300), min_size=1, max_size=4),
       st.floats(min_value=1e-3, max_value=1e3), st.floats(min_value=-5, max_value=5),
       st.integers(min_value=0, max_value=2**31 - 1))
def test_normalize_waveforms(lengths: list[int], scale: float, offset: float,
                             seed: int) -> None:
    """(x - mean) / sqrt(var + 1e-7) over each row's valid samples, padding left at 0; the same
    as Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm where float32 statistics are
    well conditioned (ours accumulate in float64)."""
    from transformers import Wav2Vec2FeatureExtractor

    rng = np.random.default_rng(seed)
    width = max(lengths) + 3
    waves = np.zeros((len(lengths), width), dtype=np.float32)
    for row, n in enumerate(lengths):
        waves[row, :n] = rng.normal(size=n).astype(np.float32) * scale + offset
    got = normalize_waveforms(torch.from_numpy(waves), torch.tensor(lengths)).numpy()
    hf = Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm(
        list(waves), attention_mask=[(np.arange(width) < n).astype(np.int32) for n in lengths])
    for row, n in enumerate(lengths):
        x = waves[row, :n].astype(np.float64)
        want = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        np.testing.assert_allclose(got[row, :n], want, rtol=1e-5, atol=1e-5)
        assert not got[row, n:].any()
        if abs(offset) / scale < 100:
            np.testing.assert_allclose(got[row, :n], hf[row][:n], rtol=1e-4, atol=1e-4)


def test_configure_cpu_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        assert configure_cpu_threads(1) == 1
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        # a user choice at or below the available cores is kept
        assert configure_cpu_threads() == 1
        import speechrank.encoders.runtime as runtime

        monkeypatch.setattr(runtime, "available_physical_cores", lambda: 1)
        torch.set_num_threads(max(2, before))
        assert configure_cpu_threads() == 1  # too many for the affinity: lowered
        torch.set_num_threads(3)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert configure_cpu_threads() == 3  # the user's environment wins
        with pytest.raises(SpeechrankError):
            configure_cpu_threads(0)
    finally:
        torch.set_num_threads(before)
    from speechrank.encoders.runtime import available_physical_cores

    assert 1 <= available_physical_cores() <= (len(__import__("os").sched_getaffinity(0)))


def test_resolve_dtype() -> None:
    assert resolve_dtype(None) is None
    assert resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype("torch.float16") is torch.float16
    assert resolve_dtype(torch.float32) is torch.float32
