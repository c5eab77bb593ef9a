"""BEST-RQ objective pieces: span masks, the random-projection quantiser, the loss, the schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from speechrank.encoders.bestrq import config_for_size, init_bestrq_model
from speechrank.pretrain import WarmupInverseSqrt
from speechrank.pretrain.objective import (
    BatchRandom,
    BestRqPretrainer,
    Masking,
    RandomProjectionQuantizer,
    span_mask,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # float32 sums depend on it


@settings(max_examples=60, deadline=None)
@given(frames=st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=6),
       prob=st.floats(min_value=0.001, max_value=0.5), span=st.integers(1, 25),
       seed=st.integers(0, 2**32 - 1))
def test_span_mask_stays_in_valid_frames(frames: list[int], prob: float, span: int,
                                         seed: int) -> None:
    time = max(frames) + 3
    mask = span_mask(np.array(frames), time, prob, span, np.random.default_rng(seed))
    again = span_mask(np.array(frames), time, prob, span, np.random.default_rng(seed))
    assert mask.shape == (len(frames), time)
    assert np.array_equal(mask, again)
    for row, valid in enumerate(frames):
        assert not mask[row, valid:].any()
        assert mask[row, :valid].any() == (valid > 0)


def test_span_mask_rate_and_span_length() -> None:
    rng = np.random.default_rng(0)
    mask = span_mask(np.full(2000, 128), 128, 0.02, 20, rng)
    # P(frame masked) = 1 - (1 - p)^20 away from the start (plus the forced span when empty)
    expected = 1 - (1 - 0.02) ** 20
    assert abs(mask[:, 40:].mean() - expected) < 0.02
    single = span_mask(np.array([100]), 100, 1e-9, 20, np.random.default_rng(1))
    assert single.sum() == 20  # one forced span of full length
    starts = np.flatnonzero(np.diff(single[0].astype(int)) == 1)
    assert starts.size <= 1


def test_quantizer_picks_the_nearest_unit_code() -> None:
    gen = torch.Generator().manual_seed(0)
    quantizer = RandomProjectionQuantizer(12, 4, 32, gen)
    torch.testing.assert_close(quantizer.codebook.norm(dim=-1), torch.ones(32))
    x = torch.randn(200, 12, generator=gen)
    codes = quantizer(x)
    projected = (x.double() @ quantizer.projection.double())
    projected = projected / projected.norm(dim=-1, keepdim=True)
    distances = torch.cdist(projected, quantizer.codebook.double())
    assert torch.equal(codes, distances.argmin(-1))
    assert torch.equal(quantizer(3.0 * x), codes)  # l2 normalisation: scale-free
    assert not any(p.requires_grad for p in quantizer.parameters())


def test_pretrainer_loss_starts_near_log_codebook_and_trains_the_encoder_only() -> None:
    config = config_for_size("micro")
    model = BestRqPretrainer(init_bestrq_model(config, 0), quantizer_seed=1)
    waves = 0.1 * torch.randn(3, 12000, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([12000, 9000, 5000])
    result = model(waves, lengths, Masking(mask_prob=0.05, mask_span=10, noise_std=0.1),
                   BatchRandom(np.random.default_rng(0), torch.Generator().manual_seed(0)))
    assert math.isfinite(float(result.loss.detach()))
    assert abs(float(result.loss.detach()) - math.log(config.codebook_size)) < 0.5
    assert 0 < result.masked_frames <= result.valid_frames == 36 + 27 + 14
    assert 0 <= result.accuracy <= 1
    result.loss.backward()
    assert model.encoder.input_proj.weight.grad is not None
    assert model.encoder.input_proj.weight.grad.abs().sum() > 0
    names = {name for name, _ in model.named_parameters()}
    assert not any(name.startswith("quantizer") for name in names)
    assert set(model.state_dict()) >= {"quantizer.projection", "quantizer.codebook",
                                       "head.weight", "encoder.input_proj.weight"}


@pytest.mark.parametrize(("step", "factor"), [(0, 0.01), (49, 0.5), (99, 1.0), (399, 0.5)])
def test_warmup_inverse_sqrt(step: int, factor: float) -> None:
    assert WarmupInverseSqrt(100)(step) == pytest.approx(factor)
    assert WarmupInverseSqrt(0)(step) == 1.0


def test_shuffled_targets_keep_their_counts_but_not_their_frames() -> None:
    torch.manual_seed(0)
    model = BestRqPretrainer(init_bestrq_model(config_for_size("micro"), 0), 1)
    waves = torch.randn(3, 8000) * 0.1
    lengths = torch.tensor([8000, 6000, 3000])
    masking = Masking(mask_prob=1.0, mask_span=1, noise_std=0.1)

    @torch.no_grad()
    def run(shuffle: np.random.Generator | None):
        random = BatchRandom(np.random.default_rng(0), torch.Generator().manual_seed(0),
                             shuffle=shuffle)
        return model(waves, lengths, masking, random)

    plain = run(None)
    shuffled = run(np.random.default_rng(5))
    again = run(np.random.default_rng(5))
    # every valid frame is masked: the same targets, counted the same, in another order
    assert np.array_equal(plain.target_counts, shuffled.target_counts)
    assert shuffled.masked_frames == plain.masked_frames
    assert float(shuffled.loss) == float(again.loss)
    assert float(shuffled.loss) != float(plain.loss)
