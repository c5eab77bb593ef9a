"""Bad input never ends in a traceback: every key of the sweep file and of a probe recipe, and
every option of ``rank`` and ``probe``, given wrong types and values through the command line.

The keys come from the schemas themselves (the pydantic models of :mod:`speechrank.sweep.config`
and :mod:`speechrank.probes.recipes`, the click parameters of the commands), so a key added
later is tried too. A value the schema refuses must end in exit code 2 and one line on stderr
that names the key; a value it accepts is run for real (a tiny random model on a dozen tones)
and must finish, or fail in one line.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pydantic
import pytest
import typer

from speechrank.cli import app, main
from speechrank.probes.recipes import RecipeTable
from speechrank.sweep.config import SECTIONS

from .conftest import write_csv_manifest, write_tone

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: Wrong types and values, as TOML.
BAD_TOML = ("5", '"x"', "[1, 2]", "true", "-1", "{a = 1}", '""', "1e400", "nan", "0")
#: The same for command-line options (a typed parser gets text).
BAD_TEXT = ("5", "x", "[1, 2]", "true", "-1", "{a = 1}", "", "1e400", "nan", "-5")

MODEL = "random:tiny@0"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A dozen labelled tones (label ``pitch``), with train, dev and test splits."""
    root = tmp_path_factory.mktemp("bad-input")
    rows = []
    for i in range(12):
        label = ("low", "high")[i % 2]
        path = write_tone(root / "audio" / f"u{i:02d}.wav", 0.3 + 0.01 * i,
                          freq=(180.0 if label == "low" else 900.0) + 7 * i, seed=i)
        split = ("train",) * 6 + ("dev",) * 2 + ("test",) * 2 + ("train",) * 2
        rows.append({"path": str(path.relative_to(root)), "pitch": label, "split": split[i]})
    manifest = write_csv_manifest(root / "data.csv", rows)
    (root / "checkpoints.txt").write_text(f"{MODEL} 0\n")
    return manifest


def _run(argv: list[str], capsys) -> tuple[int, list[str]]:
    """Exit code and stderr lines of the command line run in this process; an exception
    escaping :func:`main` (a traceback for the user) fails the test here."""
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def _check(code: int, err: list[str], key: str, refused: bool, what: str) -> None:
    if code == 0 and not refused:
        return
    assert code == 2, f"{what}: exit code {code}; stderr {err}"
    assert len(err) == 1 and err[0].startswith("speechrank: error: "), f"{what}: {err}"
    if refused:
        assert key in err[0], f"{what}: the line does not name {key}: {err[0]}"


# ----------------------------------------------------------------------------- sweep file

def _sweep_tables(manifest: Path, cache: Path) -> dict[str, dict[str, str]]:
    """A small valid sweep per section under test, as TOML values (rank alone for [rank],
    one probe alone for [[probe]], both for [options])."""
    rank = {"data": f'"{manifest}"', "metrics": '["rankme"]', "poolings": '["sum"]',
            "layers": '"0,1"', "num_utterances": "12"}
    probe = {"name": '"pitch"', "task": '"label:pitch"', "data": f'"{manifest}"',
             "c_grid": "[1.0]"}
    options = {"cache_dir": f'"{cache}"'}
    return {"rank": rank, "probe": probe, "options": options}


def _sweep_toml(section: str, tables: dict[str, dict[str, str]]) -> str:
    lines = []
    if section in ("rank", "options"):
        lines += ["[rank]", *(f"{k} = {v}" for k, v in tables["rank"].items())]
    if section in ("probe", "options"):
        lines += ["[[probe]]", *(f"{k} = {v}" for k, v in tables["probe"].items())]
    lines += ["[options]", *(f"{k} = {v}" for k, v in tables["options"].items())]
    return "\n".join(lines) + "\n"


def _refused(model: type[pydantic.BaseModel], table: dict[str, str]) -> bool:
    raw = tomllib.loads("\n".join(f"{k} = {v}" for k, v in table.items()))
    try:
        model.model_validate(raw)
    except pydantic.ValidationError:
        return True
    return False


SWEEP_CASES = [(section, key, value) for section, model in SECTIONS.items()
               for key in model.model_fields for value in BAD_TOML]


@pytest.mark.slow
@pytest.mark.parametrize(("section", "key", "value"), SWEEP_CASES)
def test_sweep_file_keys_given_bad_values(section, key, value, data, tmp_path, capsys,
                                          monkeypatch):
    monkeypatch.chdir(tmp_path)  # a cache_dir given as a relative name is made here
    tables = _sweep_tables(data, data.parent / "cache")
    tables[section][key] = value
    config = tmp_path / "sweep.toml"
    config.write_text(_sweep_toml(section, tables))
    refused = _refused(SECTIONS[section], tables[section])
    code, err = _run(["sweep", str(data.parent / "checkpoints.txt"), "--config", str(config),
                      "--store", str(tmp_path / "store.sqlite"), "-q"], capsys)
    _check(code, err, key, refused, f"[{section}] {key} = {value}")


@pytest.mark.parametrize(("toml", "expected"), [
    ("[rank]\ndata = 5", "sweep config [rank] data = 5: Input should be a valid string"),
    ('[rank]\ndata = "d.csv"\nmax_frames = "x"',
     "sweep config [rank] max_frames = 'x': Input should be a valid integer"),
    ('[rank]\ndata = "d.csv"\nmax_seconds = [1, 2]',
     "sweep config [rank] max_seconds = [1, 2]: Input should be a valid number"),
    ('[rank]\ndata = "d.csv"\nprotocol = {a = 1}',
     "sweep config [rank] protocol = {'a': 1}: Input should be 'aldeneh2025' or "
     "'whetten2025'"),
    ('[[probe]]\ntask = "ks"\ndata = "d.csv"\nc_grid = 5',
     "sweep config [[probe]] #1 c_grid = 5: Input should be a list"),
    ('[[probe]]\ntask = "ks"\ndata = "d.csv"\nmax_iter = -1',
     "sweep config [[probe]] #1 max_iter = -1: Input should be greater than or equal to 1"),
    ('[rank]\ndata = "d.csv"\n[options]\nseed = "x"',
     "sweep config [options] seed = 'x': Input should be a valid integer"),
    ('[rank]\ndata = "d.csv"\n[options]\ncache_dir = 5',
     "sweep config [options] cache_dir = 5: Input should be a valid string"),
    ('[rank]\ndata = "d.csv"\n[options]\nmemo_gb = 1e400',
     "sweep config [options] memo_gb = inf: Input should be a finite number"),
    ('[rank]\ndata = "d.csv"\n[options]\nseed = -5',
     "sweep config [options] seed = -5: Input should be greater than or equal to 0"),
    ('[rank]\ndata = "d.csv"\npoolings = ["sum", "max"]',
     "sweep config [rank] poolings.1 = 'max': Input should be 'sum', 'mean' or 'frames'"),
    ('[rank]\ndata = "d.csv"\n[[probe]]\ntask = "ks"\ndata = "d.csv"\ndomain = "ood"',
     "sweep config [[probe]] #1 domain = 'ood': Input should be 'in' or 'out'"),
    ('[rank]\ndata = "d.csv"\n[[probe]]\ntask = "ks"\ndata = "d.csv"\nmax_frames = "x"',
     "sweep config [[probe]] #1 max_frames = 'x': expected a positive number"),
    ("rank = 5", "sweep config [rank]: expected a table of keys, got 5"),
    ("probe = 5", "sweep config probe: expected [[probe]] tables"),
])
def test_the_sweep_file_mistakes_users_make_read_as_one_line(toml, expected, tmp_path, capsys):
    config = tmp_path / "sweep.toml"
    config.write_text(toml + "\n")
    code, err = _run(["sweep", str(tmp_path), "--config", str(config), "--store",
                      str(tmp_path / "s.sqlite")], capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"speechrank: error: {expected}"), err


# ----------------------------------------------------------------------------- probe recipe

RECIPE_CASES = [(key, value) for key in RecipeTable.model_fields for value in BAD_TOML]


@pytest.mark.slow
@pytest.mark.parametrize(("key", "value"), RECIPE_CASES)
def test_probe_recipe_keys_given_bad_values(key, value, data, tmp_path, capsys):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f"{key} = {value}\n")
    refused = _refused(RecipeTable, {key: value})
    code, err = _run(["probe", MODEL, str(data), "--task", "label:pitch", "--layers", "0",
                      "--cache-dir", str(data.parent / "cache"), "--recipe", str(recipe),
                      "-q"], capsys)
    _check(code, err, key, refused, f"recipe {key} = {value}")


# ----------------------------------------------------------------------------- rank, probe

def _options(command: str) -> list[str]:
    """The value-taking options of a command, from its click parameters."""
    group = typer.main.get_command(app)
    params = group.commands[command].params  # type: ignore[attr-defined]
    return [p.opts[0] for p in params if p.param_type_name == "option" and not p.is_flag]


def _bases(data: Path) -> dict[str, list[str]]:
    return {"rank": ["rank", MODEL, str(data), "--metrics", "rankme", "--pooling", "sum",
                     "--layers", "0,1", "--no-convergence", "-q"],
            "probe": ["probe", MODEL, str(data), "--task", "label:pitch", "--layers", "0",
                      "--cache-dir", str(data.parent / "cache"), "-q"]}


OPTION_CASES = [(command, option, value) for command in ("rank", "probe")
                for option in _options(command) for value in BAD_TEXT]


@pytest.mark.slow
@pytest.mark.parametrize(("command", "option", "value"), OPTION_CASES)
def test_rank_and_probe_options_given_bad_values(command, option, value, data, tmp_path,
                                                 capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # --json and --cache-dir given relative names write here
    code, err = _run([*_bases(data)[command], option, value], capsys)
    _check(code, err, option, False, f"{command} {option} {value!r}")


def test_the_schemas_cover_what_the_cases_need():
    assert {"rank", "probe", "options"} == set(SECTIONS)
    assert {"c_grid", "max_iter", "fit_dtype", "solver", "max_frames",
            "max_audio_seconds"} <= set(RecipeTable.model_fields)
    assert {"--seed", "--max-frames", "--num-utterances", "--batch-seconds",
            "--n-clusters"} <= set(_options("rank"))
    assert {"--seed", "--recipe", "--cache-dir", "--solver"} <= set(_options("probe"))
    assert math.isinf(tomllib.loads("x = 1e400")["x"])


@pytest.mark.parametrize(("argv", "expected"), [
    (["--seed", "-5"],
     "measurement option seed = -5: Input should be greater than or equal to 0"),
    (["--batch-seconds", "1e400"],
     "measurement option batch_seconds = inf: Input should be a finite number"),
    (["--max-seconds", "1e400"],
     "measurement option crop_seconds (--max-seconds) = inf: Input should be a finite number"),
    (["--total-seconds", "1e400"],
     "measurement option total_seconds = inf: Input should be a finite number"),
    (["--protocol", "nope"],
     "measurement option protocol = 'nope': Input should be 'aldeneh2025' or 'whetten2025'"),
])
def test_rank_option_values_that_used_to_escape(argv, expected, data, capsys):
    code, err = _run(["rank", MODEL, str(data), *argv], capsys)
    assert (code, err) == (2, [f"speechrank: error: {expected}"])


@pytest.mark.parametrize("value", ["newton", "", "SKLEARN"])
def test_probe_solver_is_checked_like_a_recipe_key(value, data, capsys):
    """``--solver`` goes through the recipe's checks: one line naming the key and the value."""
    code, err = _run([*_bases(data)["probe"], "--solver", value], capsys)
    assert code == 2 and len(err) == 1, err
    assert "solver" in err[0] and "'torch' or 'sklearn'" in err[0], err[0]
