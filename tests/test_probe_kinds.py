"""The probe kinds are declared once, by their drivers, and everything else reads the registry."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import get_args

import pytest

from speechrank.audio.utterance import Dataset, Utterance
from speechrank.errors import SpeechrankError
from speechrank.probes.config import LogisticConfig
from speechrank.probes.drivers import (
    DRIVERS,
    ProbeDriver,
    TaskKind,
    TaskSpec,
    default_config,
    driver_for_config,
)
from speechrank.probes.recipes import RecipeTable, recipe_keys
from speechrank.probes.tasks import resolve_task

PROBES = Path(__file__).resolve().parents[1] / "src" / "speechrank" / "probes"


def test_every_kind_has_one_driver_that_declares_it():
    assert list(DRIVERS) == list(get_args(TaskKind))
    for kind, driver in DRIVERS.items():
        assert issubclass(driver, ProbeDriver) and driver.kind == kind
        assert driver.metrics and all(isinstance(m, str) for m in driver.metrics)
        assert driver.pooling in ("mean", "sum", "frames")
        assert driver.fitting in ("per_layer", "logistic")
        assert dataclasses.is_dataclass(driver.config_type)
        assert default_config(kind) == driver.config_type()
        assert driver_for_config(driver.config_type()) is driver
    assert driver_for_config(LogisticConfig()) is None
    with pytest.raises(SpeechrankError, match="unknown probe kind 'svm'"):
        default_config("svm")  # type: ignore[arg-type]


def test_a_task_spec_reads_metrics_and_pooling_from_its_driver():
    for kind, driver in DRIVERS.items():
        spec = TaskSpec(name="t", label="x", kind=kind)
        assert (spec.metrics, spec.pooling) == (driver.metrics, driver.pooling)


def _dataset(labels: dict[str, str]) -> Dataset:
    return Dataset(spec="mem", format="manifest", root="/",
                   utterances=[Utterance(uid="u0", path="/u0.wav", labels=labels)])


def test_the_phone_task_takes_the_first_kind_whose_column_exists():
    both = _dataset({"phones": "a", "transcript": "a"})
    phone_kinds = [kind for kind, driver in DRIVERS.items() if driver.reads]
    assert resolve_task("pr", both).kind == phone_kinds[0]
    for kind in phone_kinds:
        spec = resolve_task("pr", both, pr_kind=kind)
        assert (spec.kind, spec.label) == (kind, DRIVERS[kind].reads)
    only_transcript = _dataset({"transcript": "a"})
    assert resolve_task("pr", only_transcript).kind == "ctc"
    with pytest.raises(SpeechrankError, match="no 'phones' or 'transcript' labels"):
        resolve_task("pr", _dataset({"speaker": "s"}))


def test_recipe_tables_take_every_field_of_every_kind():
    keys = set()
    for driver in DRIVERS.values():
        keys |= set(recipe_keys(driver.config_type))
    assert keys == set(RecipeTable.model_fields)
    assert recipe_keys(DRIVERS["utterance"].config_type)["max_iter"] == ("logistic", "max_iter")


def test_run_probe_does_not_dispatch_on_driver_types():
    """Which fitting a driver gets is its declaration (``fitting``), not an isinstance."""
    tree = ast.parse((PROBES / "run.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
            names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
            assert not any(name.endswith(("Driver", "Probe")) for name in names), names
