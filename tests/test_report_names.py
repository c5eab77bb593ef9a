"""The report's short dataset names and how it shows paths (never absolute)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from speechrank.report.names import MAX_NAME, dataset_names, display_paths

ABSOLUTE = re.compile(r"(?:^|[\s\"'(=:\[])/[A-Za-z0-9._-]+")


def test_paths_inside_the_store_folder_become_relative_others_keep_two_parts():
    base = "/home/me/demo"
    assert display_paths("synthetic:/home/me/demo/corpus#manifest=ood_de", base) == \
        "synthetic:corpus#manifest=ood_de"
    assert display_paths('{"cache_dir": "/home/me/demo/feature-cache"}', base) == \
        '{"cache_dir": "feature-cache"}'
    assert display_paths("fsdd:/work/shared/data/fsdd", base) == "fsdd:…/data/fsdd"
    assert display_paths("on /tmp and /", base) == "on …/tmp and /"
    assert display_paths("/home/me/demo/corpus", None) == "…/demo/corpus"
    assert display_paths("/x/corpus", "/") == "…/x/corpus"  # the root is no base
    # what only looks like a path is left alone
    for text in ("n/a", "1/3 checkpoints", "rankme/sum", "https://arxiv.org/abs/2409.10787",
                 "facebook/hubert-base-ls960", "a / b", "ρ in layer / τ", "./data.csv",
                 "~/data", "img/overview-1.png", "<script>alert(1)</script>"):
        assert display_paths(text, base) == text


@given(st.lists(st.sampled_from(["/", "a", "b", ".", " ", ":", "#", "=", "\"", "(", "é", "-"]),
                max_size=40).map("".join))
def test_no_absolute_path_survives(text):
    shown = display_paths(text, "/a")
    assert ABSOLUTE.search(shown) is None or ABSOLUTE.search(text) is None


def test_datasets_get_short_unique_names():
    specs = ["synthetic:/d/run1/corpus#manifest=train,dev,test",
             "synthetic:/d/run1/corpus#manifest=ood_de",
             "/d/tones/data.csv", "/e/other/data.csv", "fsdd:/shared/data/fsdd",
             "random:tiny", "labelled", "manifest:/d/x.csv#split=test&speaker=s1"]
    names = dataset_names(specs)
    assert names[specs[0]] == "corpus (train,dev,test)"
    assert names[specs[1]] == "corpus (ood_de)"
    assert {names[specs[2]], names[specs[3]]} == {"data [1]", "data [2]"}
    assert names[specs[4]] == "fsdd"
    assert names[specs[6]] == "labelled"
    assert names[specs[7]] == "x (test; s1)"
    assert len(set(names.values())) == len(specs)
    assert all("/" not in name for name in names.values())


@given(st.lists(st.text(min_size=1, max_size=80), max_size=12))
def test_names_are_unique_and_short(specs):
    names = dataset_names(specs)
    assert set(names) == set(specs)
    assert len(set(names.values())) == len(names)
    assert all(len(name) <= MAX_NAME + 6 for name in names.values())  # room for " [12]"
