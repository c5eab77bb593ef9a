"""The HTML report: content, escaping, no external resources, determinism, and a real render
in headless Chromium that checks every image decoded (naturalWidth > 0)."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from speechrank.analysis.options import AnalysisOptions
from speechrank.results import ResultRow
from speechrank.store import ResultStore

XSS = "<script>alert(1)</script>"
MODEL = "m&<model>"
STEPS = [0, 100, 200, 400]
LAYERS = ["cnn", "0", "1", "2"]
TITLE = "demo <report> & co"


#: The probes' dataset, as a sweep stores it: a DATA spec with an absolute path (filled in with
#: the store's folder by the fixture); the page names it by its short name.
LABELLED = "manifest:STORE/audio/labelled.csv#split=all"
#: A path outside the store's folder, in the store's metadata.
ELSEWHERE = "/opt/speech/fsdd/recordings"


def _rows(labelled: str = "labelled") -> list[ResultRow]:
    rows = []
    for i, step in enumerate(STEPS):
        ckpt = f"ckpt&{step}"
        for j, layer in enumerate(LAYERS):
            rank = 50.0 - 20.0 * (i == 1) + 10.0 * i * (j + 1) / 4 + j
            for metric, value in (("rankme", rank), ("alpha_req", 1.0 + 10.0 / rank)):
                rows.append(ResultRow(MODEL, ckpt, step, "unlabelled&data", layer, "sum",
                                      metric, value, 300, 32, conventions={"eps": 1e-7}))
            acc = 0.4 + rank / 200.0 - 0.02 * abs(j - 2)
            for task, score, value, domain in (("ks", "accuracy", acc, "in"),
                                               ("ks", "accuracy", acc - 0.1, "out"),
                                               ("pr", "per", 1.0 - acc, "in"),
                                               (XSS, "accuracy", acc, "a&b")):
                for split in ("dev", "test"):
                    rows.append(ResultRow(MODEL, ckpt, step, labelled, layer, "mean", score,
                                          value, 120, 32, task=task, split=split,
                                          domain=domain, conventions={"seed": 0}))
    for step in range(0, 1000, 250):  # the training monitor's rows
        for layer in ("0", "1"):
            rows.append(ResultRow("run", f"step-{step}", step, "held&out", layer, "sum",
                                  "rankme", 20.0 + math.log1p(step) + int(layer), 64, 32,
                                  conventions={"source": "monitor"}))
    return rows


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    from speechrank.report import write_report

    base = tmp_path_factory.mktemp("report")
    with ResultStore(base / "store.sqlite") as store:
        store.add_rows(_rows(LABELLED.replace("STORE", str(base))))
        store.set_meta("sweep_config", {"note": XSS, "cache_dir": str(base / "cache"),
                                        "data": ELSEWHERE})
        index = write_report(store, base / "out", title=TITLE, n_bootstrap=50)
    assert index == base / "out" / "index.html"
    return base / "out"


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.h2: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)


EXPECTED_SECTIONS = [
    "Does RankMe-t tell more than the step and the loss?",
    "Headline numbers", "Did training improve the probes?",
    "Metric vs probe score, layer by layer", "Label-free metrics over "
    "training", "Probe scores over training (test split)", "Choosing a layer without labels",
    "Best layer: does the "
    "highest-metric layer have the best score?", "Checkpoint selection within each layer",
    "Correlations in detail", "Rank during training (monitor)", "Datasets",
    "Conventions and counts behind every number", "Analysis settings, notes and sweep metadata",
]


def test_page_structure_escaping_and_local_resources(report_dir):
    text = (report_dir / "index.html").read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(text)
    assert parser.h2 == EXPECTED_SECTIONS
    # no script at all: the data's <script> only appears escaped
    assert "<script" not in text.lower()
    assert html.escape(XSS) in text and html.escape(MODEL) in text
    assert "ckpt&amp;" not in text or "ckpt&amp;0" not in text  # checkpoints show as steps
    assert f"<title>{html.escape(TITLE)}</title>" in text
    imgs = [a["src"] for t, a in parser.tags if t == "img"]
    assert len(imgs) >= 10
    for src in imgs:
        assert re.fullmatch(r"img/[a-z0-9-]+\.png", src), src
        assert (report_dir / src).stat().st_size > 1000
    assert len(set(imgs)) == len(imgs)
    for tag, attrs in parser.tags:
        assert tag not in ("link", "iframe", "object", "embed", "base")
        for name in ("src", "href"):
            value = attrs.get(name)
            if value is not None:
                assert not re.match(r"^[a-z]+:", value), value  # relative or #anchor only
    assert sum(1 for t, _ in parser.tags if t == "table") >= 7


def test_headline_numbers_match_the_analysis(report_dir):
    from speechrank.analysis import correlate

    rep = correlate(_rows(), AnalysisOptions(n_bootstrap=50))
    text = (report_dir / "index.html").read_text(encoding="utf-8")
    s = next(s for s in rep.summary if (s.metric, s.pooling, s.task, s.domain)
             == ("rankme", "sum", "ks", "in"))
    assert f"median within-layer ρ <b>{s.within_rho_median:+.2f}</b>" in text
    n = s.best_layer_n
    assert f"best layer at {round(s.best_layer_agreement * n)}/{n} checkpoints" in text


def test_report_is_deterministic(report_dir, tmp_path):
    from speechrank.report import write_report

    again = write_report(report_dir.parent / "store.sqlite", tmp_path / "again", title=TITLE,
                         n_bootstrap=50)
    assert (report_dir / "index.html").read_bytes() == again.read_bytes()
    names = sorted(p.name for p in (report_dir / "img").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "again" / "img").iterdir())
    for name in names:
        assert (report_dir / "img" / name).read_bytes() == \
            (tmp_path / "again" / "img" / name).read_bytes(), name


def test_empty_and_label_free_only_sources(tmp_path):
    from speechrank.report import write_report

    empty = write_report([], tmp_path / "empty").read_text(encoding="utf-8")
    assert "The store holds no results." in empty
    rows = [r for r in _rows() if not r.task]
    only_rank = write_report(rows, tmp_path / "rank", n_bootstrap=0).read_text(encoding="utf-8")
    assert "No metric-score pairs" in only_rank and "Label-free metrics over training" in only_rank


def test_out_dir_must_be_a_directory(tmp_path):
    from speechrank.errors import SpeechrankError
    from speechrank.report import write_report

    (tmp_path / "file").write_text("x")
    with pytest.raises(SpeechrankError, match="not a directory"):
        write_report([], tmp_path / "file")


# ------------------------------------------------------------------------- headless Chromium
_PROBE = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.from(document.images).map(function (im) {
    return {src: im.getAttribute('src'), complete: im.complete, width: im.naturalWidth};
  });
  var resources = performance.getEntriesByType('resource').map(function (r) { return r.name; });
  var out = {images: imgs, resources: resources, title: document.title,
             scripts: document.scripts.length,
             h2: Array.from(document.querySelectorAll('h2')).map(function (h) {
               return h.textContent; }),
             tables: document.querySelectorAll('table').length,
             bodyText: document.body.innerText.length};
  var pre = document.createElement('pre');
  pre.id = 'speechrank-probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and Path("/usr/bin/chromium").exists():
        found = "/usr/bin/chromium"
    return found


def _render(report: Path, scratch: Path) -> dict:
    """Open a test-only copy of the page (the report itself has no script) in headless
    Chromium and return what the probe script saw once the page had loaded."""
    copy = scratch / "page"
    shutil.copytree(report, copy)
    page = copy / "index.html"
    page.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"),
                    encoding="utf-8")
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={scratch / 'profile'}", "--virtual-time-budget=10000",
           "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    match = re.search(r'<pre id="speechrank-probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"no probe output from Chromium (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(html.unescape(match.group(1)))


needs_chromium = pytest.mark.skipif(_chromium() is None,
                                     reason="chromium is not installed "
                                            "(bash scripts/ensure-test-tools.sh installs it)")


@pytest.mark.slow
@needs_chromium
def test_renders_in_chromium_with_every_image_loaded(report_dir, tmp_path):
    seen = _render(report_dir, tmp_path)
    assert seen["title"] == TITLE  # escaped in the source, intact once parsed
    assert seen["h2"] == EXPECTED_SECTIONS
    assert seen["tables"] >= 7 and seen["bodyText"] > 2000
    assert seen["scripts"] == 1  # only the test's probe: the data's <script> stayed text
    assert len(seen["images"]) >= 10
    broken = [im["src"] for im in seen["images"] if not (im["complete"] and im["width"] > 0)]
    assert broken == []
    assert all(url.startswith("file://") for url in seen["resources"]), seen["resources"]


@pytest.mark.slow
@needs_chromium
def test_chromium_check_catches_a_broken_image(report_dir, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(report_dir, damaged)
    victim = sorted((damaged / "img").iterdir())[0]
    victim.write_bytes(b"not a png")
    seen = _render(damaged, tmp_path)
    broken = [im["src"] for im in seen["images"] if im["width"] == 0]
    assert broken == [f"img/{victim.name}"]


def test_report_opens_with_the_verdict_then_rank_and_score_over_training(report_dir):
    """The page opens with the verdict per task (does RankMe-t tell more than the step and
    the loss?); then, per probe task, one figure of RankMe-t (top) and the main score (bottom)
    over training for every layer, before the headline table and the long lists."""
    text = (report_dir / "index.html").read_text(encoding="utf-8")
    first_h2 = text.index("<h2")
    assert text.index('<h2 id="verdict">') == first_h2
    overview = re.findall(r'<img src="(img/overview-[a-z0-9-]+\.png)"', text)
    # ks (in), ks (out), pr (in: its main score is PER) and the XSS-named task
    assert len(overview) == 4 and len(set(overview)) == 4
    for src in overview:
        assert (report_dir / src).stat().st_size > 1000
    headline = text.index('<h2 id="headline">')
    first_table_after = text.index("<table", headline)
    assert all(headline < text.index(src) < first_table_after for src in overview)
    assert "RankMe-t (rankme, sum pooling) on unlabelled&amp;data (top)" in text
    assert "accuracy on labelled (all) (bottom)" in text
    # one verdict sentence per task, the store has no training records: no loss
    verdict = text[first_h2:headline]
    for task in ("ks (in", "ks (out", "pr (in", html.escape(XSS)):
        assert task in verdict
    assert "RankMe-t told" in verdict and "no checkpoint records" in verdict


# ------------------------------------------------------------------------- names and paths
def test_datasets_by_short_name_and_no_absolute_path(report_dir):
    text = (report_dir / "index.html").read_text(encoding="utf-8")
    base = str(report_dir.parent)
    assert base not in text and ELSEWHERE not in text  # not in the text, not in an attribute
    assert "…/fsdd/recordings" in text  # a path elsewhere: its last two parts
    # the Datasets table: each short name with its spec, paths relative to the store's folder
    datasets = text[text.index('<h2 id="datasets">'):text.index('<h2 id="conventions">')]
    assert "<td>labelled (all)</td><td><code>manifest:audio/labelled.csv#split=all</code>" \
        in datasets
    assert "<td>unlabelled&amp;data</td>" in datasets and "held&amp;out" in datasets
    # tables and captions use the short name
    assert "labelled (all)" in text[:text.index('<h2 id="datasets">')]
    assert "labelled.csv" not in text[:text.index('<h2 id="datasets">')]


def test_overview_axis_labels_are_short_and_clear_of_the_ticks(report_dir, tmp_path,
                                                                monkeypatch):
    """The y labels of the rank-and-score figures name the metric and the score, not the
    dataset, and never run over the tick labels."""
    from speechrank.report import plots, write_report

    drawn = []
    original = plots.rank_and_score

    def keep(*args, **kwargs):
        fig = original(*args, **kwargs)
        drawn.append((kwargs, fig))
        return fig

    monkeypatch.setattr(plots, "rank_and_score", keep)
    write_report(report_dir.parent / "store.sqlite", tmp_path / "again", n_bootstrap=0)
    assert len(drawn) == 4
    for kwargs, fig in drawn:
        assert kwargs["top_label"] == "RankMe-t"
        assert kwargs["bottom_label"] in ("accuracy", "per")
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            label = ax.yaxis.label.get_window_extent(renderer)
            assert label.x0 >= 0 and label.height <= ax.get_window_extent(renderer).height
            for tick in ax.get_yticklabels():
                if tick.get_text():
                    assert not label.overlaps(tick.get_window_extent(renderer)), tick


_WIDTH_PROBE = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="narrow" src="index.html" style="width:400px;height:800px;border:0"></iframe>
<iframe id="wide" src="index.html" style="width:1280px;height:800px;border:0"></iframe>
<script>
var seen = {}, waiting = 2;
function measure(frame) {
  var doc = frame.contentDocument, root = doc.documentElement;
  var wide = Array.from(doc.body.querySelectorAll('*')).filter(function (e) {
    return e.getBoundingClientRect().right > root.clientWidth + 0.5 && !e.closest('.wrap');
  }).slice(0, 5).map(function (e) { return e.tagName + ' ' + e.textContent.slice(0, 80); });
  seen[frame.id] = {scrollWidth: root.scrollWidth, clientWidth: root.clientWidth,
                    innerWidth: frame.contentWindow.innerWidth, overflowing: wide,
                    text: doc.body.innerText};
  if (--waiting === 0) {
    var pre = document.createElement('pre');
    pre.id = 'speechrank-probe';
    pre.textContent = JSON.stringify(seen);
    document.body.appendChild(pre);
  }
}
['narrow', 'wide'].forEach(function (id) {
  var frame = document.getElementById(id);
  frame.addEventListener('load', function () { measure(frame); });
});
</script></body></html>
"""

#: An absolute path in page text: a slash after a space, quote, bracket, '=' or ':' (or at the
#: start), then a name and another slash.
_ABSOLUTE_IN_TEXT = re.compile(r"(?:^|[\s\"'(=:\[])/[A-Za-z0-9._-]+/")


@pytest.mark.slow
@needs_chromium
def test_page_fits_400_and_1280_pixels_and_shows_no_absolute_path(report_dir, tmp_path):
    """Headless Chromium opens the page in frames 400 and 1280 pixels wide (its windows are
    at least 500 wide): the page never scrolls sideways (wide tables scroll in their own box),
    and its text holds no absolute path."""
    copy = tmp_path / "page"
    shutil.copytree(report_dir, copy)
    (copy / "probe.html").write_text(_WIDTH_PROBE, encoding="utf-8")
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--no-first-run", "--disable-extensions",
           "--allow-file-access-from-files", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=10000", "--window-size=1400,900", "--dump-dom",
           (copy / "probe.html").as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    match = re.search(r'<pre id="speechrank-probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"no probe output from Chromium (rc {proc.returncode}): {proc.stderr[-2000:]}"
    seen = json.loads(html.unescape(match.group(1)))
    for name, width in (("narrow", 400), ("wide", 1280)):
        frame = seen[name]
        assert frame["innerWidth"] == width
        assert frame["scrollWidth"] <= frame["clientWidth"], (name, frame["overflowing"])
        assert frame["overflowing"] == [], name
        assert len(frame["text"]) > 2000
        assert str(report_dir.parent) not in frame["text"]
        assert _ABSOLUTE_IN_TEXT.search(frame["text"]) is None, \
            _ABSOLUTE_IN_TEXT.search(frame["text"])
