"""Probe math on plain arrays: edit distance and PER, frame labels, linear and CTC probes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speechrank.accumulate import uid_generator
from speechrank.probes.alignment import (
    even_frame_indices,
    frame_centres,
    parse_phones,
    phone_frame_labels,
)
from speechrank.probes.config import CTCProbeConfig, LogisticConfig
from speechrank.probes.ctc import fit_ctc_probe, greedy_decode
from speechrank.probes.edit_distance import edit_distance, phone_error_rate
from speechrank.probes.linear import (
    chance_levels,
    classification_scores,
    fit_logistic_probe,
)

# ----------------------------------------------------------------------------- edit distance


def _reference_distance(a: list, b: list) -> int:
    """The textbook O(nm) dynamic programme, cell by cell."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        table[i][0] = i
    for j in range(len(b) + 1):
        table[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1,
                              table[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return table[-1][-1]


@pytest.mark.parametrize(("ref", "hyp", "expected"), [
    ("kitten", "sitting", 3),
    ("", "", 0),
    ("abc", "", 3),
    ("", "ab", 2),
    ("abc", "abc", 0),
    ("abc", "cba", 2),
    (["aɪ", "b"], ["a", "ɪ", "b"], 2),  # a multi-character phone is one token
    (["h", "ə", "l", "oʊ"], ["h", "l", "oʊ", "oʊ"], 2),
])
def test_edit_distance_known_answers(ref, hyp, expected):
    assert edit_distance(list(ref), list(hyp)) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abcd"), max_size=12), st.lists(st.sampled_from("abcd"),
                                                                max_size=12))
def test_edit_distance_matches_textbook_dp(a, b):
    d = edit_distance(a, b)
    assert d == _reference_distance(a, b)
    assert d == edit_distance(b, a)
    assert abs(len(a) - len(b)) <= d <= max(len(a), len(b))


def test_phone_error_rate_is_corpus_level():
    refs = [["a", "b", "c"], ["d"]]
    hyps = [["a", "c"], ["d", "e"]]
    assert phone_error_rate(refs, hyps) == pytest.approx(2 / 4)
    assert phone_error_rate(refs, refs) == 0.0
    assert phone_error_rate([["a", "b"]], [[]]) == 1.0  # all deleted
    assert phone_error_rate([["a"]], [["b", "c", "d"]]) == 3.0  # insertions can exceed 1


def test_phone_error_rate_errors():
    with pytest.raises(ValueError, match="references"):
        phone_error_rate([["a"]], [])
    with pytest.raises(ValueError, match="no phones"):
        phone_error_rate([[]], [["a"]])


# ----------------------------------------------------------------------------- alignment


def test_frame_labels_on_hand_made_phones():
    # 20 ms frames: centres at 10, 30, 50, ..., 210 ms.
    phones = [[0.15, 0.20, "c"], [0.0, 0.05, "a"], [0.05, 0.10, "b"]]  # unsorted on purpose
    labels = phone_frame_labels(phones, 11, 50.0, silence="sil")
    assert labels == ["a", "a", "b", "b", "b", "sil", "sil", "c", "c", "c", "sil"]
    # Only some frames, as a capped probe asks for them.
    assert phone_frame_labels(phones, 0, 50.0, frames=np.array([0, 5, 8])) == ["a", "sil", "c"]
    assert phone_frame_labels([], 3, 50.0) == ["sil"] * 3
    assert frame_centres(3, 50.0).tolist() == pytest.approx([0.01, 0.03, 0.05])


def test_frame_labels_half_open_intervals():
    # A centre exactly on a boundary belongs to the phone that starts there.
    phones = [[0.0, 0.025, "x"], [0.025, 0.075, "y"], [0.075, 0.1, "z"]]
    assert phone_frame_labels(phones, 3, 20.0) == ["y", "z", "sil"]  # centres 25, 75, 125 ms


@pytest.mark.parametrize("bad", [[[0.1, 0.05, "a"]], [[0.0, "x", "a"]], [[0.0, 0.1]],
                                 [[float("nan"), 0.1, "a"]]])
def test_bad_phones_raise(bad):
    with pytest.raises(ValueError, match="bad phone"):
        parse_phones(bad)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 500), st.integers(0, 600), st.integers(0, 2**31 - 1))
def test_even_frame_indices(num_valid, quota, seed):
    picks = even_frame_indices(num_valid, quota, np.random.default_rng(seed))
    assert len(picks) == min(quota, num_valid)
    assert np.all(np.diff(picks) > 0)
    assert picks.size == 0 or (picks[0] >= 0 and picks[-1] < num_valid)
    if 0 < quota < num_valid:  # evenly spread: gaps differ by at most one frame
        gaps = np.diff(picks)
        assert gaps.size == 0 or gaps.max() - gaps.min() <= 1


def test_even_frame_indices_all_and_seeded():
    assert even_frame_indices(5, None, uid_generator(0, "u")).tolist() == [0, 1, 2, 3, 4]
    a = even_frame_indices(100, 7, uid_generator(3, "utt-1"))
    b = even_frame_indices(100, 7, uid_generator(3, "utt-1"))
    assert a.tolist() == b.tolist()


# ----------------------------------------------------------------------------- logistic probe


def _gaussian_splits(labels_fn, n=(600, 200, 200), dim=16, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name, size in zip(("train", "dev", "test"), n, strict=True):
        x = rng.standard_normal((size, dim)) * 3.0 + 5.0  # scaled and shifted: standardised
        out[name] = (x, labels_fn(x, rng))
    return out


_W = np.random.default_rng(42).standard_normal((16, 5))


def _linear_labels(x, rng):
    return np.argmax((x - 5.0) @ _W, axis=1)


def _noise_labels(x, rng):
    return rng.integers(0, 5, size=len(x))


def test_linear_labels_score_near_the_top():
    fit = fit_logistic_probe(_gaussian_splits(_linear_labels))
    assert fit.scores["test"]["accuracy"] > 0.9
    assert fit.scores["test"]["macro_f1"] > 0.85
    assert fit.chosen_c in LogisticConfig().c_grid
    assert fit.n_rows == {"train": 600, "dev": 200, "test": 200}
    assert fit.dim == 16
    assert len(fit.dev_curve) == len(fit.converged) == 5


def test_float32_fit_is_a_named_variant_close_to_float64():
    splits = _gaussian_splits(lambda x, rng: np.argmax((x - 5.0) @ _W + rng.gumbel(
        size=(len(x), 5)), axis=1))
    reference = fit_logistic_probe(splits)
    variant = fit_logistic_probe(splits, LogisticConfig(fit_dtype="float32"))
    again = fit_logistic_probe(splits, LogisticConfig(fit_dtype="float32"))
    assert variant.scores == again.scores  # deterministic in float32 too
    for split in ("train", "dev", "test"):  # 200 test rows: one row is 0.005
        assert abs(variant.scores[split]["accuracy"]
                   - reference.scores[split]["accuracy"]) <= 0.02
    with pytest.raises(ValueError, match="fit_dtype"):
        LogisticConfig(fit_dtype="float16")  # type: ignore[arg-type]


def test_noise_labels_score_near_chance():
    splits = _gaussian_splits(_noise_labels)
    fit = fit_logistic_probe(splits)
    chance = chance_levels(splits["train"][1], splits["test"][1])
    assert chance["uniform"] == pytest.approx(0.2)
    assert abs(fit.scores["test"]["accuracy"] - 0.2) < 0.1  # 200 examples: sd about 0.03
    assert fit.scores["train"]["accuracy"] < 0.6


def test_logistic_probe_is_deterministic_and_ignores_test():
    splits = _gaussian_splits(_linear_labels)
    a = fit_logistic_probe(splits)
    b = fit_logistic_probe(splits)
    assert a.scores == b.scores and a.chosen_c == b.chosen_c and a.dev_curve == b.dev_curve
    # Test labels play no part in any choice: scrambling them moves only the test scores.
    x_test, y_test = splits["test"]
    scrambled = {**splits, "test": (x_test, np.roll(y_test, 1))}
    c = fit_logistic_probe(scrambled)
    assert c.chosen_c == a.chosen_c and c.dev_curve == a.dev_curve
    assert c.scores["train"] == a.scores["train"] and c.scores["dev"] == a.scores["dev"]
    assert c.scores["test"] != a.scores["test"]


def test_logistic_probe_string_labels_and_errors():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3))
    y = np.where(x[:, 0] > 0, "yes", "no")
    fit = fit_logistic_probe({"train": (x, y), "dev": (x, y), "test": (x, y)})
    assert fit.scores["test"]["accuracy"] > 0.9
    with pytest.raises(ValueError, match="fewer than 2 classes"):
        fit_logistic_probe({"train": (x, np.zeros(40)), "dev": (x, y)})
    with pytest.raises(ValueError, match="dev"):
        fit_logistic_probe({"train": (x, y)})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=60),
       st.booleans())
def test_classification_scores_are_scikit_learns_bit_for_bit(pairs, as_strings):
    from sklearn.metrics import accuracy_score, f1_score

    y_true = np.array([a for a, _ in pairs])
    y_pred = np.array([b for _, b in pairs])
    if as_strings:  # phone and speaker labels are strings
        y_true, y_pred = y_true.astype(str), y_pred.astype(str)
    scores = classification_scores(y_true, y_pred)
    assert scores["accuracy"] == float(accuracy_score(y_true, y_pred))
    assert scores["macro_f1"] == float(f1_score(y_true, y_pred, average="macro",
                                                zero_division=0))


def test_classification_scores_known_answers_and_edges():
    # a: 1 of 2 found, predicted once (F1 2/3); b: found, predicted 3 times (F1 1/2);
    # c: never predicted (F1 0)
    scores = classification_scores(np.array(list("aabc")), np.array(list("abbb")))
    assert scores["accuracy"] == pytest.approx(0.5)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    empty = classification_scores(np.array([]), np.array([]))
    assert np.isnan(empty["accuracy"]) and np.isnan(empty["macro_f1"])
    with pytest.raises(ValueError, match="length"):
        classification_scores(np.array([1, 2]), np.array([1]))


# ----------------------------------------------------------------------------- CTC probe


def test_greedy_decode_merges_repeats_and_drops_blanks():
    path = [0, 1, 1, 0, 1, 2, 2, 0, 0, 3]
    scores = np.full((len(path), 4), -5.0)
    scores[np.arange(len(path)), path] = 0.0
    import torch

    assert greedy_decode(torch.from_numpy(scores), len(path)) == [1, 1, 2, 3]
    assert greedy_decode(torch.from_numpy(scores), 3) == [1]


def _ctc_data(n, rng, vocab=("a", "b", "c", "d", "e"), dim=8, noise=0.1):
    """Each phone is a fixed vector held for 3 frames, with 'silence' frames between."""
    codes = {p: rng.standard_normal(dim) * 2.0 for p in vocab}
    silence = np.zeros(dim)
    feats, phones = [], []
    for _ in range(n):
        seq = [vocab[i] for i in rng.integers(0, len(vocab), size=rng.integers(2, 6))]
        frames = [silence] * 2
        for p in seq:
            frames += [codes[p]] * 3 + [silence]
        x = np.stack(frames) + noise * rng.standard_normal((len(frames), dim))
        feats.append(x.astype(np.float32))
        phones.append(seq)
    return feats, phones


def _ctc_splits(seed=0):
    rng = np.random.default_rng(seed)
    feats, phones = _ctc_data(100, rng)
    return {"train": (feats[:60], phones[:60]), "dev": (feats[60:80], phones[60:80]),
            "test": (feats[80:], phones[80:])}


def test_ctc_probe_learns_a_learnable_mapping():
    config = CTCProbeConfig(steps=80, eval_every=20, batch_size=8, lr=1e-1)
    fit = fit_ctc_probe(_ctc_splits(), config, seed=0)
    assert fit.per["test"] < 0.05, fit
    assert fit.per["train"] < 0.05
    assert fit.dev_curve[0][0] == 0 and fit.dev_curve[-1][0] == 80
    assert fit.best_step > 0
    assert fit.n_rows == {"train": 60, "dev": 20, "test": 20}
    assert fit.too_short == 0


def test_ctc_probe_is_deterministic_and_test_is_never_a_choice():
    config = CTCProbeConfig(steps=40, eval_every=10, batch_size=8, lr=1e-1)
    splits = _ctc_splits(1)
    a = fit_ctc_probe(splits, config, seed=3)
    b = fit_ctc_probe(splits, config, seed=3)
    assert a.per == b.per and a.dev_curve == b.dev_curve and a.best_step == b.best_step
    feats, phones = splits["test"]
    changed = {**splits, "test": (feats, [list(reversed(p)) for p in phones])}
    c = fit_ctc_probe(changed, config, seed=3)
    assert c.best_step == a.best_step and c.per["dev"] == a.per["dev"]


def test_ctc_probe_on_noise_stays_poor():
    rng = np.random.default_rng(0)
    feats, phones = _ctc_data(60, rng)
    noise = [rng.standard_normal(f.shape).astype(np.float32) for f in feats]
    splits = {"train": (noise[:40], phones[:40]), "dev": (noise[40:50], phones[40:50]),
              "test": (noise[50:], phones[50:])}
    fit = fit_ctc_probe(splits, CTCProbeConfig(steps=60, eval_every=20, batch_size=8,
                                               lr=1e-1), seed=0)
    assert fit.per["test"] > 0.5
