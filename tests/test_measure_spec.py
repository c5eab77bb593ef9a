"""The one measurement spec: its defaults, its checks, the protocols as functions of it, and
the places that build it (the command line, the sweep file, the monitor)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import typer

from speechrank.cli import app
from speechrank.errors import SpeechrankError
from speechrank.metrics import LAYER_METRIC_NAMES, SPECTRAL_METRIC_NAMES
from speechrank.pipeline import plan_measure
from speechrank.protocols import PROTOCOLS, apply_protocol
from speechrank.spec import DEFAULT_SPEC, MONITOR_SPEC, MeasureSpec
from speechrank.sweep.config import SweepConfig

#: Values no field takes: wrong types, out of range, not finite.
BAD = ["5", -1, 0, 1.5, True, math.inf, math.nan, [1, 2], {"a": 1}, ""]


def _accepts(field: str, value: object) -> bool:
    try:
        MeasureSpec(**{field: value})
    except SpeechrankError:
        return False
    return True


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(MeasureSpec)])
def test_every_field_refuses_bad_values_in_one_line(field: str) -> None:
    refused = 0
    for value in BAD:
        try:
            MeasureSpec(**{field: value})
        except SpeechrankError as err:
            refused += 1
            line = str(err)
            assert "\n" not in line and line.startswith(f"measurement option {field}")
            assert " = " in line and ": " in line  # the value, then what is allowed
    assert refused >= 5, field


def test_what_the_fields_accept() -> None:
    spec = MeasureSpec(metrics="rankme, kmeans_inertia,rankme", poolings=["frames", "sum"],
                       layers=[0, "cnn"], crop_seconds=2, max_frames=None)
    assert spec.metrics == ("rankme", "kmeans_inertia")  # a comma list, repeats dropped
    assert spec.poolings == ("frames", "sum") and spec.layers == ("0", "cnn")
    assert spec.crop_seconds == 2.0 and spec.max_frames is None  # None: every frame
    assert MeasureSpec(metrics="all").metrics == LAYER_METRIC_NAMES
    assert not _accepts("metrics", "lidar")  # a metric of groups, not of one layer's rows
    assert not _accepts("seed", -5) and _accepts("seed", 0)
    assert not _accepts("n_clusters", 1) and _accepts("n_clusters", 2)
    with pytest.raises(SpeechrankError, match="unknown measurement option"):
        DEFAULT_SPEC.replace(max_utterances=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_SPEC.seed = 1  # type: ignore[misc]


def test_one_source_of_defaults() -> None:
    params = {p.name: p.default
              for p in typer.main.get_command(app).commands["rank"].params}  # type: ignore
    assert params["num_utterances"] == DEFAULT_SPEC.num_utterances
    assert params["max_frames"] == DEFAULT_SPEC.max_frames
    assert params["batch_seconds"] == DEFAULT_SPEC.batch_seconds
    assert params["n_clusters"] == DEFAULT_SPEC.n_clusters
    assert params["seed"] == DEFAULT_SPEC.seed and params["convergence"] is True
    # the monitor's defaults differ only where it says so
    changed = {f.name for f in dataclasses.fields(MeasureSpec)
               if getattr(MONITOR_SPEC, f.name) != getattr(DEFAULT_SPEC, f.name)}
    assert changed == {"metrics", "poolings", "num_utterances", "convergence"}


def test_a_sweep_rank_table_builds_the_spec() -> None:
    cfg = SweepConfig.from_dict({
        "rank": {"data": "d.csv", "poolings": "sum,frames", "max_seconds": 3.0,
                 "metrics": ["rankme", "kmeans_inertia"], "n_clusters": 8, "layers": [1, 2],
                 "protocol": "whetten2025", "total_seconds": 60.0},
        "options": {"seed": 4, "batch_seconds": 8.0, "max_seconds": 5.0}})
    assert cfg.rank_spec == MeasureSpec(
        poolings=("sum", "frames"), metrics=("rankme", "kmeans_inertia"), n_clusters=8,
        layers=("1", "2"), protocol="whetten2025", total_seconds=60.0, seed=4,
        batch_seconds=8.0, crop_seconds=3.0)  # [rank] max_seconds beats [options]
    plain = SweepConfig.from_dict({"rank": {"data": "d.csv"}, "options": {"max_seconds": 5.0}})
    assert plain.rank_spec == DEFAULT_SPEC.replace(crop_seconds=5.0)


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_a_protocol_maps_a_spec_to_a_spec(name: str) -> None:
    protocol = PROTOCOLS[name]
    applied = protocol.apply(DEFAULT_SPEC)
    for key, value in protocol.options.items():
        assert getattr(applied, key) == getattr(MeasureSpec().replace(**{key: value}), key)
    assert protocol.apply(applied) == applied  # applying twice changes nothing
    mine = DEFAULT_SPEC.replace(protocol=name, seed=7, poolings="mean")
    spec, record = apply_protocol(mine)
    assert spec.seed == 7 and spec.poolings == ("mean",)  # explicit fields win
    assert record["overridden"]["poolings"] == {"protocol": list(protocol.options["poolings"]),
                                                "used": ["mean"]}
    assert "poolings" not in record["filled"] and "num_utterances" in record["filled"]
    assert apply_protocol(DEFAULT_SPEC) == (DEFAULT_SPEC, None)


def test_the_plan_resolves_and_refuses() -> None:
    plan = plan_measure(DEFAULT_SPEC)
    assert plan.poolings == ("sum", "mean", "frames") and plan.spectral == SPECTRAL_METRIC_NAMES
    assert plan.cluster == () and plan.convergence_in(1) and not plan.convergence_in(2)
    clusters = plan_measure(MeasureSpec(metrics="rankme,davies_bouldin"))
    assert clusters.spectral == ("rankme",) and clusters.cluster == ("davies_bouldin",)
    with pytest.raises(SpeechrankError, match="cannot be measured across processes"):
        clusters.check_processes(2, "run it in one process")
    clusters.check_processes(1, "")
    with pytest.raises(SpeechrankError, match="add frames to the poolings"):
        plan_measure(MeasureSpec(metrics="kmeans_inertia", poolings="sum"))
    # a protocol's cluster metrics with an explicit pooling lacking frames: refused once
    # the protocol is applied
    with pytest.raises(SpeechrankError, match="add frames"):
        plan_measure(MeasureSpec(protocol="whetten2025", poolings="sum"))
