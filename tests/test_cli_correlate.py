"""`speechrank correlate` end to end: the verdict per task beside the step and the loss, the
layer choice, `--across runs`, and one-line errors."""

from __future__ import annotations

import json

import pytest

from speechrank.cli import main
from speechrank.results import ResultRow
from speechrank.store import CheckpointRecord, ResultStore

STEPS = [0, 100, 200, 300, 400]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three runs of five checkpoints and three layers, with checkpoint records."""
    path = tmp_path_factory.mktemp("cli") / "runs.sqlite"
    with ResultStore(path) as opened:
        for k, run in enumerate(("default", "lr-x5", "hubert-k20")):
            for i, step in enumerate(STEPS):
                ckpt = f"checkpoint-{step:06d}"
                for j, layer in enumerate("012"):
                    wobble = ((i * 7 + j * 3 + k) % 5) / 10
                    opened.add_rows([
                        ResultRow(run, ckpt, step, "synthetic:c", layer, "sum", "rankme",
                                  10 + i + wobble + k, 100, 16),
                        ResultRow(run, ckpt, step, "synthetic:c", layer, "frames",
                                  "participation_ratio", 3 + j - wobble, 400, 16),
                        ResultRow(run, ckpt, step, "synthetic:c", layer, "mean", "accuracy",
                                  0.2 + 0.1 * i + 0.05 * wobble + 0.1 * k, 50, 16, task="ks",
                                  split="test", domain="in"),
                    ])
                opened.record_checkpoint(CheckpointRecord(
                    run, ckpt, f"/runs/{run}/{ckpt}", "speechrank", step,
                    training={} if step == 0 else {"loss": 5.0 - i + k, "accuracy": 0.1 * i}))
    return path


def test_correlate_prints_the_verdict_and_writes_it(store, tmp_path, capsys):
    out = tmp_path / "c.json"
    assert main(["correlate", str(store), "--bootstrap", "50", "--no-detail",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Does RankMe-t tell more than the step and the loss?" in text
    assert "Beside every metric: the step and the loss" in text
    assert "Choosing a layer without labels" in text
    assert "isoscore/frames" in text and "last layer" in text
    payload = json.loads(out.read_text())
    assert payload["across"] == "checkpoints"
    verdicts = payload["verdict"]
    assert {v["model"] for v in verdicts} == {"default", "lr-x5", "hubert-k20"}
    for v in verdicts:
        assert v["outcome"] in {"told_more", "nothing_more", "against", "undefined"}
        assert v["loss_available"] is True and v["sentence"].startswith("ks (in, accuracy): ")
        assert v["regret_metric"] is not None and v["step_rho"] is not None
    assert {c["selector"] for c in payload["layer_choice"]} >= {"rankme/sum",
                                                                "isoscore/frames",
                                                                "last layer"}
    assert all("regret_fraction" in c for c in payload["layer_choice"])
    assert payload["baselines"] and payload["summary"]


def test_correlate_across_runs(store, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["correlate", str(store), "--across", "runs", "--bootstrap", "50",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Runs compared (step: 400)" in text and "does the signal pick the better run" in text
    payload = json.loads(out.read_text())
    assert payload["across"] == "runs" and payload["step"] == 400
    assert {r["run"] for r in payload["runs"]} == {"default", "lr-x5", "hubert-k20"}
    signals = {r["signal"] for r in payload["records"]}
    assert {"rankme/sum", "participation_ratio/frames", "loss"} <= signals
    assert main(["correlate", str(store), "--across", "runs", "--step", "100",
                 "--bootstrap", "0", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["step"] == 100


@pytest.mark.parametrize(("args", "message"), [
    (["--across", "layers"], "--across must be checkpoints or runs"),
    (["--step", "100"], "--step needs --across runs"),
    (["--across", "runs", "--step", "ten"], "--step must be a training step or 'last'"),
    (["--across", "runs", "--step", "700"], "fewer than 2 runs measured at step 700"),
])
def test_bad_options_are_one_line_errors(store, capsys, args, message):
    assert main(["correlate", str(store), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_one_run_cannot_be_compared_across_runs(tmp_path, capsys):
    path = tmp_path / "one.sqlite"
    with ResultStore(path) as opened:
        opened.add_rows([ResultRow("only", "c", 0, "d", "0", "sum", "rankme", 1.0, 10, 4),
                         ResultRow("only", "c", 0, "d", "0", "mean", "accuracy", 0.5, 10, 4,
                                   task="ks", split="test")])
    assert main(["correlate", str(path), "--across", "runs"]) == 2
    assert "at least 2 runs" in capsys.readouterr().err
