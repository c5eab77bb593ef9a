"""Recipe files (`speechrank pretrain --recipe FILE`): TOML read once, checked by type and range."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from speechrank.cli import main
from speechrank.errors import SpeechrankError
from speechrank.pretrain import TrainConfig, TrainRun, load_recipe, pretrain
from speechrank.pretrain.recipe import RecipeFile
from tests.test_pretrain_training import corpus  # noqa: F401  (a fixture)

REPO = Path(__file__).resolve().parents[1]


def toml_value(value: Any) -> str:
    """One TOML value (the few kinds these tests write)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def write_recipe(path: Path, fields: dict[str, Any]) -> Path:
    path.write_text("".join(f"{key} = {toml_value(value)}\n" for key, value in fields.items()))
    return path


def test_the_schema_is_train_config_with_the_same_defaults() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert set(RecipeFile.model_fields) == set(fields)
    schema = RecipeFile()
    assert {name: getattr(schema, name) for name in fields} == fields


def test_a_recipe_file_sets_its_keys_and_keeps_the_defaults(tmp_path: Path) -> None:
    path = write_recipe(tmp_path / "r.toml", {
        "targets": "bestrq", "learning_rate": 1e-3, "input_snr_db": [0, 20],
        "adam_betas": [0.9, 0.95], "crop_seconds": 2, "decay_steps": 400})
    recipe = load_recipe(path)
    assert recipe == dataclasses.replace(TrainConfig(), targets="bestrq", learning_rate=1e-3,
                                         input_snr_db=(0.0, 20.0), adam_betas=(0.9, 0.95),
                                         crop_seconds=2.0, decay_steps=400)
    assert isinstance(recipe.crop_seconds, float)  # an integer is a number of seconds
    assert load_recipe(write_recipe(tmp_path / "empty.toml", {})) == TrainConfig()
    # TOML has no null: false switches the input noise off
    assert load_recipe(write_recipe(tmp_path / "clean.toml", {"input_snr_db": False})
                       ).input_snr_db is None


def test_the_shipped_benchmark_recipes_are_valid() -> None:
    files = sorted((REPO / "benchmarks" / "recipes").glob("*.toml"))
    assert len(files) >= 10
    for path in files:
        assert isinstance(load_recipe(path), TrainConfig), path


#: For every key of the schema: values of a wrong type and values out of range.
WRONG: dict[str, list[Any]] = {
    "size": ["huge", 3, ["tiny"]],
    "seed": ["0", 1.5, -1, True],
    "batch_size": [0, -3, 2.0, "12"],
    "crop_seconds": [0.05, "2.56", True, float("nan")],
    "learning_rate": [-1e-3, "2e-3", float("inf"), [1e-3]],
    "warmup_steps": [-1, 6.5, "60"],
    "weight_decay": [-0.1, "0.01", False],
    "adam_betas": [[0.9], [0.9, 0.98, 0.999], [1.0, 0.9], ["0.9", 0.98], 0.9, [True, 0.9]],
    "adam_eps": [0.0, -1e-8, "1e-8"],
    "grad_clip": [0, -1.0, "1"],
    "mask_prob": [0.0, 1.5, "0.08", True],
    "mask_span": [0, 1.5, "10"],
    "noise_std": [-0.1, "0.1"],
    "max_preload_seconds": [0, -5.0, "7200"],
    "targets": ["wav2vec", 1, True],
    "num_clusters": [1, 0, 50.0, "50"],
    "kmeans_frames": [1, 1e4, "50000"],
    "kmeans_deltas": [1, "yes", 0.0],
    "input_snr_db": [[20, 0], [0], "0:20", [0, "20"], 10, [0, float("nan")], True],
    "unmasked_weight": [-0.5, "0.5", [0.5]],
    "schedule": ["cosine", 1, False],
    "decay_steps": [0, -10, 600.0, "600", {"steps": 600}],
    "shuffle_targets": ["true", 1, 0.0],
}


def test_every_key_of_the_schema_has_wrong_values_here() -> None:
    assert set(WRONG) == set(RecipeFile.model_fields)


@pytest.mark.parametrize(("key", "value"), [(k, v) for k, vs in WRONG.items() for v in vs],
                         ids=lambda x: repr(x)[:20])
def test_a_wrong_value_is_one_line_naming_the_key(tmp_path: Path, key: str, value: Any) -> None:
    path = write_recipe(tmp_path / "bad.toml", {key: value})
    with pytest.raises(SpeechrankError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"recipe {path}")
    assert key in message


@pytest.mark.parametrize(("fields", "expected"), [
    ({"kmeans_frames": 20, "num_clusters": 50},
     "kmeans_frames = 20: must be at least num_clusters (50)"),
    ({"decay_steps": 50, "warmup_steps": 60},
     "decay_steps = 50: must be greater than warmup_steps (60)"),
    ({"input_snr_db": [20, 0]}, "input_snr_db = [20, 0]: must be [low, high]"),
    ({"learning_rat": 1e-3}, "learning_rat: unknown key"),
    ({"training": {"learning_rate": 1e-3}}, "training: unknown key"),
])
def test_inconsistent_and_unknown_keys_are_one_line(tmp_path: Path, fields: dict,
                                                   expected: str) -> None:
    with pytest.raises(SpeechrankError, match=re.escape(expected)) as info:
        load_recipe(write_recipe(tmp_path / "bad.toml", fields))
    assert "\n" not in str(info.value)


def test_unreadable_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(SpeechrankError, match=r"recipe .*missing\.toml: not found"):
        load_recipe(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("learning_rate = = 1\n")
    with pytest.raises(SpeechrankError, match="not valid TOML"):
        load_recipe(broken)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SpeechrankError, match="recipe"):
        load_recipe(binary)


_SCALARS = st.one_of(st.booleans(), st.integers(-10**6, 10**6),
                     st.floats(allow_nan=True, allow_infinity=True),
                     st.text(max_size=8))
_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3),
                    st.dictionaries(st.sampled_from(["a", "b"]), _SCALARS, max_size=2))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.dictionaries(st.sampled_from(sorted(WRONG)), _VALUES, max_size=4))
def test_any_table_gives_a_recipe_or_one_line(tmp_path: Path, fields: dict) -> None:
    path = write_recipe(tmp_path / "any.toml", fields)
    try:
        recipe = load_recipe(path)
    except SpeechrankError as err:
        assert "\n" not in str(err) and str(err).startswith(f"recipe {path}")
    else:
        assert isinstance(recipe, TrainConfig)


def test_the_command_line_refuses_a_bad_recipe_in_one_line(tmp_path: Path, capsys) -> None:
    for key, values in WRONG.items():
        path = write_recipe(tmp_path / f"{key}.toml", {key: values[0]})
        code = main(["pretrain", str(tmp_path / "no-data"), str(tmp_path / "run"),
                     "--steps", "1", "--recipe", str(path), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2, key
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert key in err
    assert not (tmp_path / "run").exists()


def test_pretrain_help_names_the_default_recipe(capsys) -> None:
    assert main(["pretrain", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "HuBERT-style targets" in text and "--recipe" in text
    assert "BEST-RQ encoder" not in text


def test_a_recipe_file_trains_the_run_and_is_recorded(corpus: Path,  # noqa: F811
                                                     tmp_path: Path) -> None:
    path = write_recipe(tmp_path / "r.toml", {
        "size": "micro", "batch_size": 4, "crop_seconds": 0.64, "targets": "hubert",
        "num_clusters": 8, "kmeans_frames": 400, "warmup_steps": 1, "mask_prob": 0.2})
    summary = pretrain(str(corpus), tmp_path / "run", TrainRun(steps=2), config=load_recipe(path),
                       progress=False)
    recorded = json.loads((tmp_path / "run" / "checkpoint-000002" / "config.json").read_text())
    assert TrainConfig.from_dict(recorded["pretraining"]) == TrainConfig.from_dict(
        summary.recipe)
    assert recorded["pretraining"]["num_clusters"] == 8
    assert recorded["pretraining"]["mask_prob"] == 0.2


def test_a_zero_learning_rate_leaves_the_weights_as_initialised(corpus: Path,  # noqa: F811
                                                               tmp_path: Path) -> None:
    config = TrainConfig(size="micro", batch_size=4, crop_seconds=0.64, learning_rate=0.0,
                         num_clusters=8, kmeans_frames=400, warmup_steps=1)
    summary = pretrain(str(corpus), tmp_path / "run", TrainRun(steps=3, save_every=3),
                       config=config, progress=False)
    assert math.isfinite(summary.final_loss)
    first = load_file(str(tmp_path / "run" / "checkpoint-000000" / "model.safetensors"))
    last = load_file(str(tmp_path / "run" / "checkpoint-000003" / "model.safetensors"))
    assert all(torch.equal(first[key], last[key]) for key in first)

