"""Cluster-robust standard errors of probe accuracies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speechrank.probes.stderr import clustered_accuracy_se


def test_one_item_per_cluster_is_the_corrected_binomial() -> None:
    correct = np.array([1] * 30 + [0] * 70)
    assert clustered_accuracy_se(correct) == pytest.approx(math.sqrt(0.3 * 0.7 / 99))


def test_known_answer_with_clusters() -> None:
    # clusters: a = 3/4 correct, b = 1/2, c = 0/2 -> p = 4/8
    correct = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    clusters = np.array(["a", "a", "a", "a", "b", "b", "c", "c"])
    residuals = np.array([3 - 0.5 * 4, 1 - 0.5 * 2, 0 - 0.5 * 2])
    expected = math.sqrt(3 / 2 * np.sum(residuals ** 2)) / 8
    assert clustered_accuracy_se(correct, clusters) == pytest.approx(expected)


def test_correlated_frames_widen_the_error() -> None:
    rng = np.random.default_rng(0)
    # 20 utterances of 250 frames each; each utterance is all right or all wrong
    per_utterance = rng.random(20) < 0.5
    correct = np.repeat(per_utterance, 250)
    clusters = np.repeat(np.arange(20), 250)
    assert clustered_accuracy_se(correct, clusters) > 10 * clustered_accuracy_se(correct)


def test_edge_cases() -> None:
    assert math.isnan(clustered_accuracy_se(np.array([])))
    assert math.isnan(clustered_accuracy_se(np.array([1, 0, 1]), np.array([7, 7, 7])))
    assert clustered_accuracy_se(np.ones(10)) == 0.0
    with pytest.raises(ValueError, match="same length"):
        clustered_accuracy_se(np.ones(3), np.zeros(2))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=60))
def test_relabelling_and_reordering_clusters_changes_nothing(items) -> None:
    correct = np.array([c for c, _ in items])
    clusters = np.array([g for _, g in items])
    base = clustered_accuracy_se(correct, clusters)
    order = np.argsort(-clusters, kind="stable")
    again = clustered_accuracy_se(correct[order], clusters[order] * 10 + 3)
    assert (math.isnan(base) and math.isnan(again)) or again == pytest.approx(base)
