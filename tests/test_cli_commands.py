"""End-to-end tests of `corpus`, `pretrain` and `probe` through the command line."""

from __future__ import annotations

import json

import pytest

from speechrank.cli import main


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "corpus"
    assert main(["corpus", str(out), "--minutes", "2", "--languages", "en",
                 "--json", str(out.parent / "corpus.json")]) == 0
    return out


def test_corpus_command(small_corpus, capsys):
    summary = json.loads((small_corpus.parent / "corpus.json").read_text())
    assert summary["total_clips"] > 20
    for name in ("pretrain.jsonl", "train.jsonl", "dev.jsonl", "test.jsonl"):
        assert (small_corpus / name).is_file()
    # Asking again without --overwrite keeps the corpus and says why, in one line.
    assert main(["corpus", str(small_corpus), "--minutes", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "overwrite" in err[0]


@pytest.mark.slow
def test_pretrain_rank_and_probe_commands(small_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", f"synthetic:{small_corpus}", str(run), "--steps", "4",
                 "--save-every", "2", "--batch-size", "2", "--quiet",
                 "--json", str(tmp_path / "p.json")]) == 0
    out = capsys.readouterr().out
    assert "RankMe-t at the last checkpoint" in out
    summary = json.loads((tmp_path / "p.json").read_text())
    assert summary["final_step"] == 4
    checkpoints = sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint-"))
    assert checkpoints == ["checkpoint-000000", "checkpoint-000002", "checkpoint-000004"]
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    monitored = [r for r in log if r.get("event") == "monitor"]
    assert [r["step"] for r in monitored] == [0, 2, 4]
    assert all(f"rankme_t/layer_{i}" in r["values"] for r in monitored for i in range(5))

    assert main(["rank", str(run / "checkpoint-000004"), f"synthetic:{small_corpus}",
                 "--metrics", "rankme", "--pooling", "sum", "--quiet",
                 "--json", str(tmp_path / "r.json")]) == 0
    rows = json.loads((tmp_path / "r.json").read_text())["results"]
    assert sorted({r["layer"] for r in rows}) == ["0", "1", "2", "3", "4"]

    assert main(["probe", str(run / "checkpoint-000004"),
                 f"synthetic:{small_corpus}#manifest=train,dev,test", "--task", "pr",
                 "--layers", "0,4", "--quiet", "--cache-dir", str(tmp_path / "cache"),
                 "--json", str(tmp_path / "pr.json")]) == 0
    probe = json.loads((tmp_path / "pr.json").read_text())
    splits = {(r["layer"], r["split"], r["metric"]) for r in probe["results"]}
    assert ("4", "test", "frame_accuracy") in splits
    assert all(0.0 <= r["value"] <= 1.0 for r in probe["results"]
               if r["metric"] == "frame_accuracy")


def test_rank_tables_fit_80_columns_one_per_pooling():
    from rich.console import Console

    from speechrank.cli import rows_tables
    from speechrank.metrics import SPECTRAL_METRIC_NAMES
    from speechrank.results import ResultRow

    rows = [ResultRow("m", "m", None, "d", str(layer), pooling, metric, 123.456 + layer, 300,
                      768)
            for pooling in ("sum", "mean", "frames") for layer in range(13)
            for metric in SPECTRAL_METRIC_NAMES]
    tables = rows_tables(rows, "random:hubert-base on fsdd")
    assert len(tables) == 3
    console = Console(width=80, record=True, color_system=None)
    for table in tables:
        console.print(table)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    for pooling in ("sum", "mean", "frames"):
        assert f"pooling {pooling}" in text
    assert "123.5" in text and "135.5" in text  # every value is printed, none cut to "…"
    assert text.count("│    12 │") == 3
