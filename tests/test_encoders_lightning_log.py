"""Reading a Lightning CSVLogger ``metrics.csv`` without Lightning.

The file below is what pytorch-lightning 2.6.6's ``CSVLogger`` wrote for a module that logs
``train_loss`` and ``train_masked_accuracy`` with ``on_step=True, on_epoch=True`` (as
torchaudio's ``examples/hubert/lightning_modules.py`` does) over four steps, copied verbatim.
"""

from __future__ import annotations

from pathlib import Path

from speechrank.encoders.lightning_log import find_metrics, read_metrics, record_at

WRITTEN = """\
epoch,step,train_loss_epoch,train_loss_step,train_masked_accuracy_epoch,train_masked_accuracy_step
0,0,,0.6463521122932434,,0.5
0,1,,0.48351144790649414,,0.5
0,2,,0.7371985912322998,,0.5
0,3,,0.2878199815750122,,0.5
0,3,0.5387204885482788,,0.5,
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_last_step_value_at_or_before_the_step(tmp_path):
    rows = read_metrics([_write(tmp_path / "metrics.csv", WRITTEN)])
    assert len(rows) == 5
    assert record_at(rows, 2) == {"loss": 0.7371985912322998, "accuracy": 0.5}
    assert record_at(rows, 10) == {"loss": 0.2878199815750122, "accuracy": 0.5}  # not _epoch
    assert record_at(rows, -1) == {}


def test_layouts_are_found(tmp_path):
    # Lightning's default: version_N/checkpoints/*.ckpt beside version_N/metrics.csv
    ckpt = _write(tmp_path / "a/lightning_logs/version_0/checkpoints/epoch=0-step=2.ckpt", "x")
    _write(tmp_path / "a/lightning_logs/version_0/metrics.csv", WRITTEN)
    assert find_metrics(ckpt) == [tmp_path / "a/lightning_logs/version_0/metrics.csv"]
    # torchaudio's HuBERT recipe: exp/checkpoints_<dataset>_<model>/ and exp/lightning_logs/
    ckpt = _write(tmp_path / "exp/checkpoints_librispeech_hubert_pretrain_base/x.ckpt", "x")
    for n in (10, 2):
        _write(tmp_path / f"exp/lightning_logs/version_{n}/metrics.csv", WRITTEN)
    assert [p.parent.name for p in find_metrics(ckpt)] == ["version_2", "version_10"]
    lonely = _write(tmp_path / "b/c/d/e/x.ckpt", "x")
    assert find_metrics(lonely) == []


def test_a_resumed_run_overrides_and_learning_rate_is_read(tmp_path):
    first = _write(tmp_path / "v0.csv", "epoch,step,train_loss,lr-AdamW\n0,0,5.0,0.1\n"
                                        "0,4,4.0,0.2\n0,8,3.0,0.3\n")
    resumed = _write(tmp_path / "v1.csv", "epoch,step,train_loss,lr-AdamW\n0,4,3.5,0.25\n"
                                          "0,6,nan,\n")
    rows = read_metrics([first, resumed])
    assert record_at(rows, 5) == {"loss": 3.5, "learning_rate": 0.25}
    assert record_at(rows, 8) == {"loss": 3.0, "learning_rate": 0.3}


def test_unreadable_or_stepless_files_give_nothing(tmp_path):
    bad = _write(tmp_path / "bad.csv", "epoch,loss\n0,1.0\n")
    assert read_metrics([bad, tmp_path / "missing.csv"]) == []
