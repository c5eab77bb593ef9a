"""The metric registry: every metric declares its input, its direction and how its state
merges, and the analysis reads the direction from there."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

import numpy as np
import pytest

from speechrank.analysis import orientation
from speechrank.metrics import (
    GROUP_METRIC_NAMES,
    LAYER_METRIC_NAMES,
    METRICS,
    ROW_METRIC_NAMES,
    SPECTRAL_METRIC_NAMES,
    Direction,
    Merge,
    MetricInput,
    MetricInputError,
    SpectralAccumulator,
    compute_metric,
    compute_metrics,
    direction,
)
from speechrank.metrics.cluster import CLUSTER_METRIC_NAMES, cluster_metrics


def test_every_metric_declares_input_direction_and_merge():
    for name, spec in METRICS.items():
        assert spec.name == name
        assert spec.input in get_args(MetricInput)
        assert spec.direction in get_args(Direction)
        assert spec.merge in get_args(Merge)
        assert spec.orientation == (1 if spec.direction == "higher" else -1)
        assert direction(name) == spec.direction
        # what merges by addition today is what the Gram and group states hold
        assert (spec.merge == "sum") == (spec.input in ("gram", "groups"))
    assert direction("accuracy") is None  # a probe score is not a registered metric


def test_the_name_lists_partition_the_registry():
    assert set(SPECTRAL_METRIC_NAMES) | set(GROUP_METRIC_NAMES) | set(ROW_METRIC_NAMES) == set(
        METRICS)
    assert len(SPECTRAL_METRIC_NAMES + GROUP_METRIC_NAMES + ROW_METRIC_NAMES) == len(METRICS)
    assert LAYER_METRIC_NAMES == SPECTRAL_METRIC_NAMES + ROW_METRIC_NAMES
    assert ROW_METRIC_NAMES == CLUSTER_METRIC_NAMES
    assert {n for n, s in METRICS.items() if s.direction == "lower"} == {
        "alpha_req", "kmeans_inertia", "davies_bouldin"}


def test_correlate_orients_every_metric_by_its_declared_direction():
    for name, spec in METRICS.items():
        assert orientation(name, kind="metric") == spec.orientation
    assert orientation("not_a_metric", kind="metric") == 1
    assert orientation("alpha_req", kind="metric", overrides={"alpha_req": 1}) == 1


def test_a_row_metric_is_computed_from_a_matrix_only():
    X = np.random.default_rng(0).standard_normal((400, 6))
    want = cluster_metrics(X, n_clusters=8)
    for name in ROW_METRIC_NAMES:
        assert compute_metric(name, X, n_clusters=8).value == want[name].value
    both = compute_metrics(X, ["rankme", *ROW_METRIC_NAMES], n_clusters=8)
    assert list(both) == ["rankme", *ROW_METRIC_NAMES]
    acc = SpectralAccumulator(6)
    acc.update(X)
    with pytest.raises(MetricInputError, match="needs the rows themselves"):
        compute_metric("kmeans_inertia", acc)


def test_the_registry_and_the_analysis_load_without_torch():
    """The report and ``correlate`` read directions; they do not need torch for that, and
    ``speechrank.metrics.lidar`` stays the function once its submodule has loaded."""
    code = ("import sys\n"
            "import speechrank.analysis, speechrank.report, speechrank.metrics.registry\n"
            "assert 'torch' not in sys.modules, 'torch loaded'\n"
            "import speechrank.metrics.lidar\n"
            "from speechrank.metrics import lidar, LidarAccumulator\n"
            "assert callable(lidar) and LidarAccumulator.__module__.endswith('.lidar')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
