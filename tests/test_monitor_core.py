"""RankMonitor: same numbers as ``speechrank rank``, invisible to training, alarms, budget."""

from __future__ import annotations

import copy
import math
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from speechrank.audio.utterance import Dataset, Utterance
from speechrank.encoders import WrapOptions, wrap_module
from speechrank.errors import SpeechrankError
from speechrank.monitor import (
    AlarmRule,
    CollapseDetector,
    MonitorSetup,
    RankCollapseWarning,
    RankMonitor,
    metric_key,
)
from speechrank.rank import run_rank
from speechrank.spec import MeasureSpec
from speechrank.store import ResultStore

from .conftest import FSDD, require_fsdd

SR = 16_000


# --------------------------------------------------------------------------- toy models


class ToyEncoder(torch.nn.Module):
    """A strided convolution then tanh(linear) blocks; returns every hidden state.

    ``dropout`` draws from torch's global generator in train mode, and ``noisy_eval`` makes
    even the eval-mode forward draw from it, so the RNG tests can fail.
    """

    def __init__(self, dim: int = 12, layers: int = 3, seed: int = 0, *,
                 noisy_eval: bool = False) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # No biases and an odd nonlinearity: time sums stay zero-mean (no collapse).
            self.front = torch.nn.Conv1d(1, dim, kernel_size=400, stride=160, bias=False)
            self.blocks = torch.nn.ModuleList(torch.nn.Linear(dim, dim, bias=False)
                                              for _ in range(layers))
        self.drop = torch.nn.Dropout(0.1)
        self.noisy_eval = noisy_eval

    def forward(self, waveforms: torch.Tensor) -> list[torch.Tensor]:
        h = self.front(waveforms[:, None]).transpose(1, 2)
        hidden = [h]
        for block in self.blocks:
            h = torch.tanh(block(self.drop(h)))
            if self.noisy_eval:
                h = h + 0.0 * torch.rand_like(h)
            hidden.append(h)
        return hidden


def toy_frames(num_samples: torch.Tensor) -> torch.Tensor:
    return torch.clamp((torch.as_tensor(num_samples) - 400) // 160 + 1, min=0)


def toy_encoder(module: torch.nn.Module | None = None, **kwargs):
    return wrap_module(module or ToyEncoder(**kwargs), sample_rate=SR, frame_lengths=toy_frames,
                       options=WrapOptions(name="toy"))


def waves(n: int = 24, seed: int = 0, lo: float = 0.3, hi: float = 1.2) -> list[np.ndarray]:
    """Distinct non-silent waveforms of varied length (tone + noise)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        samples = int(rng.uniform(lo, hi) * SR)
        t = np.arange(samples) / SR
        wave = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.1 * rng.standard_normal(samples)
        out.append(wave.astype(np.float32))
    return out


@pytest.fixture(scope="module")
def wav_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = tmp_path_factory.mktemp("monitor_wavs")
    utterances = []
    for i, wave in enumerate(waves(30, seed=3)):
        path = root / f"utt{i:02d}.wav"
        # 8 kHz files: the monitor must resample exactly as ``rank`` does.
        sf.write(path, wave[::2], SR // 2, subtype="FLOAT")
        utterances.append(Utterance(uid=path.name, path=str(path)))
    return Dataset(spec=str(root), format="directory", root=str(root), utterances=utterances)


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


# --------------------------------------------------------------------------- equality with rank


def test_values_equal_run_rank_on_files(wav_dataset: Dataset) -> None:
    encoder = toy_encoder()
    kwargs = {"poolings": ["sum", "mean", "frames"], "metrics": ["rankme", "erank_cov"]}
    kwargs.update(num_utterances=20, max_frames=300, seed=5, batch_seconds=3.0)
    reference = run_rank(encoder, wav_dataset, MeasureSpec(**kwargs))
    monitor = RankMonitor(encoder, wav_dataset, MeasureSpec.for_monitor(**kwargs))
    values = monitor(encoder, step=7)
    assert len(reference.rows) == 4 * 3 * 2
    for row in reference.rows:
        key = metric_key(row.metric, row.pooling, row.layer)
        assert rel(values[key], row.value) < 1e-9, key
    assert {row.n_rows for row in monitor.last.rows if row.pooling != "frames"} == {20}
    assert values["rankme_t/layer_2"] == values[metric_key("rankme", "sum", "2")]
    assert "rankme_mean/layer_0" in values and "erank_cov_frames/layer_3" in values


@pytest.mark.slow
def test_values_equal_run_rank_on_fsdd_with_hf_model() -> None:
    require_fsdd()
    from speechrank.audio.datasets import load_dataset
    from speechrank.encoders import load_encoder

    encoder = load_encoder("random:tiny")
    data = load_dataset(f"fsdd:{FSDD}")
    reference = run_rank(encoder, data, MeasureSpec(layers="0,2,4", poolings="sum",
                                                    metrics="rankme", num_utterances=12, seed=2))
    setup = MonitorSetup(encoder_options={"do_normalize": encoder.do_normalize})
    monitor = RankMonitor(encoder.model, data,
                          MeasureSpec.for_monitor(layers="0,2,4", num_utterances=12, seed=2),
                          setup=setup)
    values = monitor(encoder.model, step=0)
    assert [k for k in values if k.startswith("rankme_t/")] == [
        "rankme_t/layer_0", "rankme_t/layer_2", "rankme_t/layer_4"]
    for row in reference.rows:
        assert rel(values[f"rankme_t/layer_{row.layer}"], row.value) < 1e-9


# --------------------------------------------------------------------------- invisible to training


def test_train_modes_of_every_submodule_are_restored() -> None:
    module = ToyEncoder()
    module.train()
    module.blocks[1].eval()  # a frozen part inside a training model
    module.drop.eval()
    before = {name: m.training for name, m in module.named_modules()}
    monitor = RankMonitor(toy_encoder(module), waves(6),
                          MeasureSpec.for_monitor(num_utterances=None))
    monitor(step=0)
    assert {name: m.training for name, m in module.named_modules()} == before
    module.eval()
    before = {name: m.training for name, m in module.named_modules()}
    monitor(step=1)
    assert {name: m.training for name, m in module.named_modules()} == before


def test_measures_in_eval_mode() -> None:
    # Dropout on in train mode: the values would change from call to call.
    module = ToyEncoder()
    module.train()
    monitor = RankMonitor(toy_encoder(module), waves(8))
    first, second = monitor(step=0), monitor(step=1)
    assert first == second
    assert module.training


def _rng_snapshot() -> tuple:
    return (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())


@pytest.mark.parametrize("noisy_eval", [False, True])
def test_random_streams_are_untouched(noisy_eval: bool) -> None:
    module = ToyEncoder(noisy_eval=noisy_eval)
    monitor = RankMonitor(toy_encoder(module), waves(6))
    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    expected = (random.random(), np.random.random(), torch.rand(3))
    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    before = _rng_snapshot()
    monitor(module, step=0)
    after = _rng_snapshot()
    assert before[0] == after[0]
    assert np.array_equal(before[1], after[1])
    assert torch.equal(before[2], after[2])
    got = (random.random(), np.random.random(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_noisy_eval_toy_really_draws_random_numbers() -> None:
    # Guards the test above: without the monitor's protection this forward moves the stream.
    module = ToyEncoder(noisy_eval=True).eval()
    state = torch.get_rng_state().clone()
    module(torch.zeros(1, 800))
    assert not torch.equal(state, torch.get_rng_state())


def test_optimizer_gradients_and_weights_are_untouched() -> None:
    module = ToyEncoder()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    batch = torch.from_numpy(np.stack([w[:8000] for w in waves(4, lo=0.6)]))

    def loss_fn() -> torch.Tensor:
        return sum(h.pow(2).mean() for h in module(batch))

    loss_fn().backward()
    optimizer.step()
    optimizer.zero_grad()
    loss_fn().backward()  # gradients pending, as between backward and step
    monitor = RankMonitor(toy_encoder(module), waves(6))
    grads = [p.grad.clone() for p in module.parameters()]
    weights = [p.detach().clone() for p in module.parameters()]
    state = copy.deepcopy(optimizer.state_dict())
    monitor(module, step=1)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, module.parameters(), strict=True))
    assert all(torch.equal(w, p) for w, p in zip(weights, module.parameters(), strict=True))
    new_state = optimizer.state_dict()
    for key, entry in state["state"].items():
        for name, value in entry.items():
            now = new_state["state"][key][name]
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(now))
    assert all(p.requires_grad for p in module.parameters())
    # Training goes on: a backward pass through the same module still works.
    optimizer.step()
    optimizer.zero_grad()
    loss_fn().backward()


# --------------------------------------------------------------------------- collapse alarm


class Constant(torch.nn.Module):
    """Every frame of every layer is the all-ones vector: rank 1."""

    def __init__(self, dim: int = 8, layers: int = 2) -> None:
        super().__init__()
        self.inner = ToyEncoder(dim=dim, layers=layers)

    def forward(self, waveforms: torch.Tensor) -> list[torch.Tensor]:
        return [torch.zeros_like(h) * h + 1 for h in self.inner(waveforms)]


def test_collapse_alarm_fires_on_constant_outputs() -> None:
    monitor = RankMonitor(toy_encoder(Constant()), waves(10))
    with pytest.warns(RankCollapseWarning, match="rank collapse at step 3"):
        values = monitor(step=3)
    for layer in ("0", "1", "2"):
        assert values[f"rankme_t/layer_{layer}"] == pytest.approx(1.0, abs=1e-3)
        assert values[f"collapse/layer_{layer}"] == 1.0
    assert [(a.step, a.layer, a.reason) for a in monitor.alarms] == [
        (3, "0", "below_min_rank"), (3, "1", "below_min_rank"), (3, "2", "below_min_rank")]


def test_no_alarm_on_a_healthy_model() -> None:
    monitor = RankMonitor(toy_encoder(), waves(16))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankCollapseWarning)
        values = monitor(step=0)
    assert all(values[f"collapse/layer_{i}"] == 0.0 for i in range(4))
    assert monitor.alarms == []


def test_alarm_fires_on_a_drop_from_the_best_value() -> None:
    healthy = ToyEncoder()
    monitor = RankMonitor(toy_encoder(healthy), waves(16),
                          alarm=AlarmRule(min_rank=None, max_drop=0.5))
    first = monitor(step=0)
    collapsed = Constant(dim=12, layers=3)
    with pytest.warns(RankCollapseWarning, match="dropped"):
        values = monitor(toy_encoder(collapsed), step=1)
    assert values["collapse/layer_1"] == 1.0
    alarm = monitor.alarms[0]
    assert alarm.reason == "dropped" and alarm.best == first["rankme_t/layer_0"]
    # The best value is kept: the next healthy call is fine again.
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankCollapseWarning)
        assert monitor(healthy, step=2)["collapse/layer_0"] == 0.0


def test_alarm_can_be_switched_off_and_retargeted() -> None:
    monitor = RankMonitor(toy_encoder(Constant()), waves(6), alarm=AlarmRule(on=""))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankCollapseWarning)
        values = monitor(step=0)
    assert not any(k.startswith("collapse/") for k in values)
    other = RankMonitor(toy_encoder(Constant()), waves(6),
                        MeasureSpec.for_monitor(poolings="sum,mean"),
                        alarm=AlarmRule(on="rankme_mean", warn=False))
    other(step=0)
    assert {a.key.split("/")[0] for a in other.alarms} == {"rankme_mean"}
    with pytest.raises(SpeechrankError, match="alarm_on"):
        RankMonitor(toy_encoder(), waves(4), alarm=AlarmRule(on="erank_cov_sum"))


class HalfNaN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = ToyEncoder(dim=8, layers=2)

    def forward(self, waveforms: torch.Tensor) -> list[torch.Tensor]:
        hidden = self.inner(waveforms)
        return [*hidden[:-1], hidden[-1] * float("nan")]


def test_non_finite_layer_gives_nan_and_an_alarm_not_an_exception() -> None:
    monitor = RankMonitor(toy_encoder(HalfNaN()), waves(8))
    with pytest.warns(RankCollapseWarning, match="nan"):
        values = monitor(step=0)
    assert math.isnan(values["rankme_t/layer_2"]) and values["collapse/layer_2"] == 1.0
    assert math.isfinite(values["rankme_t/layer_1"]) and values["collapse/layer_1"] == 0.0
    bad = [r for r in monitor.last.rows if r.layer == "2"]
    assert bad[0].conventions["non_finite_features"] is True


def test_detector_rules() -> None:
    detector = CollapseDetector(min_rank=2.0, max_drop=0.25)
    assert detector.check(0, {"k": ("1", 10.0)}) == []
    assert detector.check(1, {"k": ("1", 7.6)}) == []
    [alarm] = detector.check(2, {"k": ("1", 7.4)})
    assert alarm.reason == "dropped" and alarm.best == 10.0
    [alarm] = detector.check(3, {"k": ("1", 1.5)})
    assert alarm.reason == "below_min_rank"
    [alarm] = detector.check(4, {"k": ("1", float("nan"))})
    assert alarm.reason == "non_finite"
    assert detector.best == {"k": 10.0}
    with pytest.raises(ValueError):
        CollapseDetector(max_drop=1.5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1e4), min_size=1, max_size=30),
       st.floats(min_value=0.05, max_value=1.0))
def test_detector_drop_rule_matches_its_definition(values: list[float], drop: float) -> None:
    detector = CollapseDetector(min_rank=None, max_drop=drop)
    best = None
    for step, value in enumerate(values):
        alarms = detector.check(step, {"k": ("0", value)})
        expected = best is not None and value < (1 - drop) * best
        assert bool(alarms) == expected
        best = value if best is None else max(best, value)


# --------------------------------------------------------------------------- budget and inputs


def test_max_utterances_budget(wav_dataset: Dataset) -> None:
    monitor = RankMonitor(toy_encoder(), wav_dataset,
                          MeasureSpec.for_monitor(num_utterances=7, seed=1)).prepare()
    assert monitor.heldout.num_utterances == 7
    monitor(step=0)
    assert {row.n_rows for row in monitor.last.rows} == {7}
    assert monitor.last.rows[0].conventions["num_utterances"] == 7
    again = RankMonitor(toy_encoder(), wav_dataset,
                        MeasureSpec.for_monitor(num_utterances=7, seed=1)).prepare()
    assert ([p.utterance.uid for p in again.heldout.planned]
            == [p.utterance.uid for p in monitor.heldout.planned])


def test_seconds_budget_and_crop(wav_dataset: Dataset) -> None:
    monitor = RankMonitor(toy_encoder(), wav_dataset,
                          MeasureSpec.for_monitor(num_utterances=None, total_seconds=6.0))
    monitor.prepare()
    assert 0 < monitor.heldout.audio_seconds <= 6.0
    loaded = sum(b.waveforms.shape[0] for b in monitor.heldout.batches_for())
    assert loaded == monitor.heldout.num_utterances < len(wav_dataset)
    assert sum(sum(b.num_samples) for b in monitor.heldout.batches_for()) <= 6.0 * SR
    cropped = RankMonitor(toy_encoder(), wav_dataset,
                          MeasureSpec.for_monitor(crop_seconds=0.25)).prepare()
    assert max(max(b.num_samples) for b in cropped.heldout.batches_for()) <= 0.25 * SR
    with pytest.raises(SpeechrankError, match="no usable audio"):
        RankMonitor(toy_encoder(), wav_dataset,
                    MeasureSpec.for_monitor(total_seconds=0.01)).prepare()


def test_waveforms_and_paths_give_the_same_values(tmp_path: Path) -> None:
    data = waves(10, seed=4)
    paths = []
    for i, wave in enumerate(data):
        paths.append(tmp_path / f"{i}.wav")
        sf.write(paths[-1], wave, SR, subtype="FLOAT")
    encoder = toy_encoder()
    from_waves = RankMonitor(encoder, data)(step=0)
    from_paths = RankMonitor(encoder, [str(p) for p in paths])(step=0)
    for key, value in from_waves.items():
        assert rel(from_paths[key], value) < 1e-9 if value else from_paths[key] == value
    assert RankMonitor(encoder, data).prepare().heldout.spec == "waveforms:10"


def test_silent_and_too_short_waveforms_are_skipped() -> None:
    data = [*waves(5), np.zeros(SR, dtype=np.float32), np.ones(100, dtype=np.float32)]
    monitor = RankMonitor(toy_encoder(), data).prepare()
    assert monitor.heldout.num_utterances == 5
    assert monitor.heldout.skips.counts == {"silent": 1, "too_short": 1}


def test_bad_arguments_are_one_line_errors() -> None:
    with pytest.raises(SpeechrankError, match="cannot monitor"):
        RankMonitor(torch.nn.Linear(2, 2), waves(3)).prepare()
    with pytest.raises(SpeechrankError, match=r"poolings.*= 'max'"):
        RankMonitor(toy_encoder(), waves(3), MeasureSpec.for_monitor(poolings="max"))
    with pytest.raises(SpeechrankError, match="metrics = 'lidar'"):
        RankMonitor(toy_encoder(), waves(3), MeasureSpec.for_monitor(metrics="lidar"))
    with pytest.raises(SpeechrankError, match="mixture"):
        RankMonitor(toy_encoder(), [waves(1)[0], "x.wav"])(step=0)
    with pytest.raises(SpeechrankError, match="num_utterances = 0"):
        MeasureSpec.for_monitor(num_utterances=0)


def test_building_a_monitor_reads_no_audio(tmp_path: Path) -> None:
    missing = tmp_path / "not-yet"  # the held-out set is read at the first call
    monitor = RankMonitor(toy_encoder(), str(missing))
    assert monitor.heldout is None and monitor.has_model
    with pytest.raises(SpeechrankError):
        monitor(step=0)


def test_metric_key_names() -> None:
    assert metric_key("rankme", "sum", "3") == "rankme_t/layer_3"
    assert metric_key("rankme", "mean", "3") == "rankme_mean/layer_3"
    assert metric_key("erank_cov", "sum", "cnn") == "erank_cov_sum/layer_cnn"


def test_a_later_model_object_is_measured(wav_dataset: Dataset) -> None:
    module = ToyEncoder()
    monitor = RankMonitor(toy_encoder(module), waves(12), MeasureSpec.for_monitor(layers="3"))
    first = monitor(step=0)
    changed = copy.deepcopy(module)
    with torch.no_grad():
        changed.blocks[2].weight.mul_(0.1)
    second = monitor(toy_encoder(changed), step=1)
    assert second["rankme_t/layer_3"] != first["rankme_t/layer_3"]
    assert monitor(step=2) == second  # the last model given stays the default
    assert list(first) == ["rankme_t/layer_3", "collapse/layer_3"]


# --------------------------------------------------------------------------- store


def test_rows_go_to_the_store_per_step(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    monitor = RankMonitor(toy_encoder(), waves(8), store=path, run_name="run-a",
                          setup=MonitorSetup(data_name="heldout"))
    monitor(step=10)
    monitor(step=20)
    monitor.close()
    with ResultStore(path, create=False) as store:
        rows = store.rows(model="run-a")
        assert sorted({r.step for r in rows}) == [10, 20]
        assert {r.checkpoint for r in rows} == {"step-10", "step-20"}
        assert {r.dataset for r in rows} == {"heldout"}
        assert {r.metric for r in rows} == {"rankme"} and {r.pooling for r in rows} == {"sum"}
        assert all(r.conventions["source"] == "monitor" for r in rows)
        assert len(rows) == 2 * 4
        assert store.is_done("run-a|step-20|monitor|heldout")
        at_20 = {r.layer: r.value for r in rows if r.step == 20}
    assert at_20 == {str(i): monitor.history[1][1][f"rankme_t/layer_{i}"] for i in range(4)}


# --------------------------------------------------------------------------- model kinds


def _tiny_hubert_config():
    from transformers import HubertConfig

    return HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, conv_dim=(32, 32, 32), conv_stride=(5, 4, 4),
                        conv_kernel=(10, 4, 4), feat_extract_norm="layer",
                        do_stable_layer_norm=True, num_conv_pos_embeddings=16,
                        num_conv_pos_embedding_groups=4)


def test_hugging_face_model_objects() -> None:
    from transformers import HubertForCTC, HubertModel

    torch.manual_seed(0)
    model = HubertModel(_tiny_hubert_config())
    model.train()
    model.feature_extractor._freeze_parameters()
    flags = [p.requires_grad for p in model.parameters()]
    monitor = RankMonitor(model, waves(8), MeasureSpec.for_monitor(layers="all"))
    values = monitor(model, step=0)
    assert set(values) >= {"rankme_t/layer_0", "rankme_t/layer_2"}
    assert [p.requires_grad for p in model.parameters()] == flags
    assert model.training
    # A model with a head is measured through its base model.
    torch.manual_seed(0)
    head = HubertForCTC(_tiny_hubert_config())
    head.hubert.load_state_dict(model.state_dict())
    assert monitor(head, step=1) == pytest.approx(values, rel=1e-9)


def test_bestrq_model_and_pretrainer() -> None:
    from speechrank.encoders.bestrq import BestRqConfig, init_bestrq_model

    config = BestRqConfig(dim=32, num_layers=2, num_heads=2, ffn_dim=64, pos_conv_groups=4,
                          n_mels=20)
    model = init_bestrq_model(config, seed=0)
    monitor = RankMonitor(model, waves(8), run_name="bestrq")
    values = monitor(model, step=0)
    assert sorted(k for k in values if k.startswith("rankme_t")) == [
        "rankme_t/layer_0", "rankme_t/layer_1", "rankme_t/layer_2"]
    try:
        from speechrank.pretrain.objective import BestRqPretrainer
    except ImportError:
        return
    wrapper = BestRqPretrainer(model, quantizer_seed=0)
    assert monitor(wrapper, step=1) == values


# --------------------------------------------------------------------------- pretrain loop


def test_monitor_built_without_a_model_prepares_at_first_call() -> None:
    monitor = RankMonitor(None, waves(6), MeasureSpec.for_monitor(layers="1"))
    assert monitor.heldout is None and "pending" in repr(monitor)
    with pytest.raises(SpeechrankError, match="without a model"):
        monitor.prepare()
    with pytest.raises(SpeechrankError, match="without a model"):
        monitor(step=0)
    values = monitor(toy_encoder(), step=0)
    assert list(values) == ["rankme_t/layer_1", "collapse/layer_1"]
    assert monitor.heldout.num_utterances == 6 and monitor.run_name == "toy"


@pytest.mark.slow
def test_pretrain_loop_logs_and_stores_the_monitor(tmp_path: Path, wav_dataset: Dataset) -> None:
    import json

    from speechrank.monitor import pretrain_monitor
    from speechrank.monitor.pretrain import PRETRAIN_SPEC
    from speechrank.pretrain import TrainRun, pretrain

    monitor = pretrain_monitor(waves(6, seed=6), PRETRAIN_SPEC.replace(layers="0,2"),
                               store=tmp_path / "r.sqlite")
    pretrain(wav_dataset, tmp_path / "run-x", TrainRun(steps=2, save_every=1), progress=False,
             monitor=monitor, overrides={"batch_size": 2, "size": "micro", "crop_seconds": 0.5})
    assert [step for step, _ in monitor.history] == [0, 1, 2]
    events = [json.loads(line) for line in (tmp_path / "run-x" / "train_log.jsonl").open()]
    logged = [e for e in events if e["event"] == "monitor"]
    assert [e["step"] for e in logged] == [0, 1, 2]
    assert logged[2]["values"]["rankme_t/layer_2"] == monitor.history[2][1]["rankme_t/layer_2"]
    monitor.close()
    with ResultStore(tmp_path / "r.sqlite", create=False) as store:
        rows = store.rows()
    assert {r.model for r in rows} == {"run-x"}
    assert {r.checkpoint for r in rows} == {"checkpoint-000000", "checkpoint-000001",
                                           "checkpoint-000002"}


def test_a_layer_that_stays_collapsed_warns_once() -> None:
    monitor = RankMonitor(toy_encoder(Constant()), waves(6), MeasureSpec.for_monitor(layers="1"))
    with pytest.warns(RankCollapseWarning):
        monitor(step=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankCollapseWarning)
        assert monitor(step=1)["collapse/layer_1"] == 1.0  # still flagged, no new warning
    assert [(a.step, a.new) for a in monitor.alarms] == [(0, True), (1, False)]


def test_detector_marks_new_collapses() -> None:
    detector = CollapseDetector(min_rank=2.0, max_drop=None)
    news = [[a.new for a in detector.check(i, {"k": ("0", v)})]
            for i, v in enumerate([1.0, 1.5, 5.0, 1.0])]
    assert news == [[True], [False], [], [True]]
