"""``speechrank report``: one static HTML page with the plots and tables of a results store.

The page opens from disk: images are PNG files under ``img/`` referenced by relative paths,
the style sheet is inline, there is no script and nothing is fetched from the network. Every
string that comes from the data (model, checkpoint, dataset and task names, conventions,
sweep metadata) is HTML-escaped. The same rows give the same bytes: nothing time-dependent is
written and the PNGs carry no software metadata.

Data selection and markup are apart: this module chooses what the page shows and builds a
view model (:class:`Section` of blocks: :class:`TableBlock` of :class:`Td` cells, figures,
paragraphs ...); the Jinja2 template ``templates/report.html.j2`` (autoescape on, shipped as
package data) is the only place with HTML, and ``templates/report.css`` its style sheet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import jinja2
from markupsafe import Markup

from speechrank.analysis import (
    AnalysisOptions,
    CorrelationReport,
    PairKey,
    Selection,
    correlate,
)
from speechrank.analysis.baselines import metric_name
from speechrank.analysis.correlate import (
    focus_metric,
    headline_verdicts,
    load_source,
    main_score,
    main_score_verdicts,
)
from speechrank.analysis.flags import dominated, legend, not_converged
from speechrank.analysis.progress import training_progress
from speechrank.analysis.series import (
    Series,
    SeriesSet,
    checkpoint_order,
    collect_series,
    is_monitor_row,
)
from speechrank.analysis.tables import fmt, layer_choice_rows, pair_columns
from speechrank.errors import SpeechrankError
from speechrank.report import plots
from speechrank.report.names import dataset_names, display_paths
from speechrank.results import ResultRow, layer_sort_key
from speechrank.store import VOLATILE_CONVENTION_KEYS, ResultStore

__all__ = ["is_monitor_row", "write_report"]

_MAX_META_CHARS = 20_000


# ------------------------------------------------------------------------------ view model
# What the page shows, as data; templates/report.html.j2 is the only place with markup.
@dataclasses.dataclass(frozen=True)
class Td:
    """A table cell: text, CSS class, hover title, a second line in small type, code style."""

    text: str = ""
    cls: str = ""
    title: str = ""
    note: str = ""
    code: bool = False


class Block:
    """A block of a section; ``kind`` names the template branch that draws it."""

    kind: ClassVar[str]


@dataclasses.dataclass
class TableBlock(Block):
    kind: ClassVar[str] = "table"
    headers: list[str]
    rows: list[list[Td]]
    caption: str = ""


@dataclasses.dataclass(frozen=True)
class FigureBlock(Block):
    kind: ClassVar[str] = "figure"
    name: str
    caption: str


@dataclasses.dataclass
class FiguresBlock(Block):
    kind: ClassVar[str] = "figures"
    heading: str
    figures: list[FigureBlock]


@dataclasses.dataclass(frozen=True)
class Paragraph(Block):
    kind: ClassVar[str] = "paragraph"
    text: str
    style: str = ""


@dataclasses.dataclass(frozen=True)
class Heading(Block):
    kind: ClassVar[str] = "heading"
    text: str


@dataclasses.dataclass
class RichList(Block):
    """Items of ``(text, bold)`` runs."""

    kind: ClassVar[str] = "rich_list"
    items: list[list[tuple[str, bool]]]
    style: str = ""


@dataclasses.dataclass(frozen=True)
class Details(Block):
    kind: ClassVar[str] = "details"
    summary: str
    text: str


@dataclasses.dataclass
class Section:
    anchor: str
    title: str
    lead: str = ""
    blocks: list[Block] = dataclasses.field(default_factory=list)


_ENV = jinja2.Environment(loader=jinja2.PackageLoader("speechrank.report", "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined,
                          keep_trailing_newline=True)


# ------------------------------------------------------------------------------ small helpers
def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "x"


def _image_name(kind: str, parts: Sequence[Any]) -> str:
    digest = hashlib.sha256(json.dumps([kind, *map(str, parts)]).encode()).hexdigest()[:10]
    return f"{kind}-{_slug('-'.join(map(str, parts)))}-{digest}.png"


def _progress_section(page: _Page, rows: Sequence[ResultRow], split: str) -> None:
    """Did the probes move over training, by more than their standard errors?"""
    moved = training_progress(rows, split=split)
    if not moved:
        return
    page.section("progress", "Did training improve the probes?",
                 f"The best layer's {split} score at the first and the last checkpoint, each "
                 "with its standard error (clustered by utterance for frame scores), the gain "
                 "in standard errors (sqrt(se1^2 + se2^2), conservative), and whether every "
                 "layer of the upper half scores higher at the end than halfway through.")

    def score(value: float, se: float) -> Td:
        return _cell(f"{fmt(value, 3)} ± {fmt(se, 3)}", "num")

    page.add(_table(
        ["task", "domain", "score", "first step", "best (layer)", "last step", "best (layer)",
         "gain", "gain / SE", "upper layers up"],
        [[_cell(p.task), _cell(p.domain), _cell(p.score), _cell(p.first_step, "num"),
          score(p.first_best, p.first_best_se), _cell(p.last_step, "num"),
          score(p.last_best, p.last_best_se), _num(p.gain, 3, signed=True),
          _num(p.gain_in_se, 1, signed=True),
          _cell(("yes" if p.upper_improved else "no") + f" (layers "
                f"{', '.join(p.upper_layers)}, step {p.mid_step} to {p.last_step})")]
         for p in moved],
        caption="lower-is-better scores are oriented so that a positive gain is better"))
    page.add(Paragraph(f"Standard errors: {moved[0].se_method}.", "muted"))


def _cell(text: Any, cls: str = "", title: str = "", **more: Any) -> Td:
    return Td(str(text), cls, title, **more)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Td]], caption: str = ""
           ) -> TableBlock:
    return TableBlock(list(headers), [list(r) for r in rows], caption)


def _num(value: float, digits: int = 2, *, signed: bool = False, cls: str = "num",
         title: str = "") -> Td:
    text = fmt(value, digits, signed=signed)
    return _cell(text, cls if text != "–" else "num na", title)


def _rho_cell(value: float, low: float = math.nan, high: float = math.nan,
              p: float = math.nan, n: int | None = None, reason: str = "") -> Td:
    if not math.isfinite(value):
        return _cell("–", "num na", reason)
    cls = "num good" if value >= 0.5 else ("num bad" if value <= -0.5 else "num")
    note = (f"[{low:+.2f}, {high:+.2f}]" if math.isfinite(low) and math.isfinite(high)
            else "")
    title = " ".join(filter(None, [f"p={p:.3g}" if math.isfinite(p) else "",
                                   f"n={n}" if n is not None else ""]))
    return _cell(f"{value:+.2f}", cls, title, note=note)


def _key_headers(cols: Sequence[str]) -> list[str]:
    names = {"metric_dataset": "metric data", "metric_variant": "metric variant",
             "probe_dataset": "probe data", "probe_pooling": "probe pooling",
             "score_variant": "score variant"}
    return [names.get(c, c) for c in cols]


def _key_cells(key: PairKey, cols: Sequence[str], datasets: Mapping[str, str]) -> list[Td]:
    """The cells naming ``key`` (datasets by their short names)."""
    out = []
    for c in cols:
        text = str(getattr(key, c))
        if c in ("metric_dataset", "probe_dataset"):
            text = datasets.get(text, text)
        if (c == "metric" and key.metric_orientation < 0) or (
                c == "score" and key.score_orientation < 0):
            text += " (−)"
        out.append(_cell(text))
    return out


def _x_axis(checkpoints: Sequence[str], steps: Mapping[tuple[str, str], int | None],
            model: str) -> plots.XAxis:
    values = [steps.get((model, c)) for c in checkpoints]
    if values and all(v is not None for v in values):
        return [float(v) for v in values], None, "training step"  # type: ignore[arg-type]
    return ([float(i) for i in range(len(checkpoints))],
            [c if len(c) <= 14 else c[:13] + "…" for c in checkpoints], "checkpoint")


def _column_labels(checkpoints: Sequence[str], steps: Mapping[tuple[str, str], int | None],
                   model: str) -> list[str]:
    values = [steps.get((model, c)) for c in checkpoints]
    if values and all(v is not None for v in values) and len(set(values)) == len(values):
        return [str(v) for v in values]
    return [c if len(c) <= 14 else c[:13] + "…" for c in checkpoints]


def _short_name(s: Series) -> str:
    f = s.fields
    if s.kind == "metric":
        text = f"{f['metric']} ({f['pooling']})"
    else:
        text = f"{f['task']}: {f['score']} ({f['domain'] or '-'})"
    return text + (f" [{s.variant}]" if s.variant else "")


def _series_name(s: Series, datasets: Mapping[str, str]) -> str:
    f = s.fields
    data = datasets.get(f["dataset"], f["dataset"])
    if s.kind == "metric":
        text = f"{f['metric']} ({f['pooling']} pooling) on {data}"
    else:
        text = f"{f['task']}: {f['score']}, {f['domain'] or '-'} domain, on {data}"
    return f"{f['model']} · {text}" + (f" [{s.variant}]" if s.variant else "")


# ------------------------------------------------------------------------------ the page
class _Page:
    """Sections of blocks, and the images written so far."""

    def __init__(self, out_dir: Path, datasets: Mapping[str, str]) -> None:
        self.out_dir = out_dir
        #: dataset spec -> its short name (:func:`~speechrank.report.names.dataset_names`)
        self.datasets = dict(datasets)
        self.img_dir = out_dir / "img"
        self.img_dir.mkdir(parents=True, exist_ok=True)
        self.sections: list[Section] = []
        self.images: list[str] = []

    def section(self, anchor: str, title: str, lead: str = "") -> None:
        self.sections.append(Section(anchor, title, lead))

    def add(self, block: Any) -> None:
        self.sections[-1].blocks.append(block)

    def figure(self, fig: Any, kind: str, parts: Sequence[Any], caption: str) -> FigureBlock:
        name = _image_name(kind, parts)
        plots.save(fig, self.img_dir / name)
        self.images.append(name)
        return FigureBlock(name, caption)


def write_report(source: Any, out_dir: str | Path, *,
                 correlation: CorrelationReport | None = None,
                 title: str = "speechrank report", probe_split: str | None = None,
                 scatter: Sequence[tuple[str, str]] | None = None, n_bootstrap: int = 1000,
                 seed: int = 0) -> Path:
    """Write ``out_dir/index.html`` and its images ``out_dir/img/*.png``; return the page path.

    Args:
        source: a :class:`~speechrank.store.ResultStore`, the path of one, or result rows.
        out_dir: the report directory (created; existing images of the same name replaced).
        correlation: a ready :func:`~speechrank.analysis.correlate` result; computed from
            ``source`` with ``n_bootstrap``, ``seed`` and ``probe_split`` when omitted.
        title: the page title.
        probe_split: the probe split whose scores are plotted (default: the correlation's,
            else ``test``).
        scatter: (metric, pooling) pairs that get rank-vs-score scatter plots (default:
            ``("rankme", "sum")`` when present, else the first analysed metric).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SpeechrankError(f"{out_dir}: exists and is not a directory")
    meta: dict[str, Any] = {}
    # paths on the page are shown relative to the store's folder (see report.names)
    base = out_dir.resolve().parent
    if isinstance(source, ResultStore):
        meta = source.meta()
        base = source.path.resolve().parent
    elif isinstance(source, (str, Path)):
        with ResultStore(source, create=False) as store:
            meta = store.meta()
        base = Path(source).resolve().parent
    rows, records = load_source(source)
    if probe_split is None:
        probe_split = correlation.settings.get("probe_split", "test") if correlation else "test"
    if correlation is None:
        options = AnalysisOptions(n_bootstrap=n_bootstrap, seed=seed, probe_split=probe_split)
        correlation = correlate(rows, options, checkpoints=records)
    found = collect_series(rows, probe_split=probe_split)
    page = _Page(out_dir, dataset_names(r.dataset for r in rows))

    monitor = [s for s in found.metric if s.is_monitor]
    metric_series = [s for s in found.metric if s not in monitor]
    focus = _focus(correlation, scatter)

    _verdict_section(page, correlation)
    _headline(page, correlation, focus, rows, found)
    _progress_section(page, rows, probe_split)
    if focus:
        _scatter_section(page, correlation, found, focus)
    if metric_series:
        _series_section(page, "metrics", "Label-free metrics over training", metric_series,
                        found, "Each line is a layer; the heat map shows the same values, "
                        "layers by checkpoints.")
    if found.score:
        _series_section(page, "probes", f"Probe scores over training ({probe_split} split)",
                        found.score, found, "Each line is a layer; scores where lower is "
                        "better (PER) use a reversed colour map, so brighter is better "
                        "everywhere.")
    if correlation.summary:
        _layer_choice_section(page, correlation)
        _across_runs_section(page, rows, records, correlation)
        _selection_sections(page, correlation)
        _correlation_detail(page, correlation, found)
    if monitor:
        _series_section(page, "monitor", "Rank during training (monitor)", monitor, found,
                        "Rows written by the training monitor on its held-out set.",
                        heatmaps=False)
    _datasets_section(page, rows)
    _conventions_section(page, found, monitor)
    _settings_section(page, correlation, meta)

    counts = (f"{len(rows)} result rows: {found.n_metric_rows} label-free metric rows in "
              f"{len(found.metric)} series, {found.n_probe_rows} probe rows ({probe_split} split)"
              f" in {len(found.score)} series; {len(correlation.summary)} metric-score pairs.")
    from speechrank import __version__

    # every string of data the template writes goes through display_paths: no absolute path
    # on the page (markup the template built itself, a macro's output, is left as it is)
    env = _ENV.overlay(finalize=lambda value: display_paths(value, base)
                       if isinstance(value, str) and not isinstance(value, Markup) else value)
    document = env.get_template("report.html.j2").render(
        title=title, counts=counts, sections=page.sections, version=__version__)
    index = out_dir / "index.html"
    index.write_text(document, encoding="utf-8")
    return index


def _focus(report: CorrelationReport, scatter: Sequence[tuple[str, str]] | None
           ) -> list[tuple[str, str]]:
    present = [(s.metric, s.pooling) for s in report.summary]
    if scatter is not None:
        return [tuple(x) for x in scatter if tuple(x) in present]  # type: ignore[misc]
    if ("rankme", "sum") in present:
        return [("rankme", "sum")]
    return present[:1]


# ------------------------------------------------------------------------------ sections
#: The probe score each kind of task is summed up by (the demo's headline uses the same).
MAIN_SCORES = ("accuracy", "frame_accuracy", "per")

_OUTCOME = {"told_more": ("told more", "num good"), "nothing_more": ("nothing more", "num"),
            "against": ("against the score", "num bad"), "undefined": ("–", "num na")}


def _interval_cell(low: float, high: float) -> Td:
    if not (math.isfinite(low) and math.isfinite(high)):
        return _cell("–", "num na")
    return _cell(f"[{low:+.2f}, {high:+.2f}]", "num")


def _regret_cell(value: float, se: float = math.nan) -> Td:
    if not math.isfinite(value):
        return _cell("–", "num na")
    return _cell(f"{value:.2f}" + (f" ± {se:.2f}" if math.isfinite(se) else ""), "num")


def _verdict_section(page: _Page, report: CorrelationReport) -> None:
    """The page's opening: per task, did the focus metric tell more than the step and the
    loss? One sentence each, the numbers behind them, then the same beside every metric."""
    headline = headline_verdicts(report)
    if not headline:
        return
    focus = focus_metric(report)
    name = metric_name(*focus) if focus else "the metric"
    loss = any(v.loss_available for v in headline)
    page.section(
        "verdict", f"Does {name} tell more than the step and the loss?",
        "Every training run says two things about a checkpoint for free: how far training "
        "has gone (the step) and the pretraining loss" + ("" if loss else
        " (not in this store: it has no checkpoint records with a loss)") + ". Within each "
        "layer, across checkpoints, the label-free metric earns its cost only if it tracks "
        "the probe score beyond them: a partial Spearman ρ given the step whose 95 % interval "
        "(over resampled checkpoints) lies above 0, or a checkpoint choice that loses less of "
        "the score range than taking the last checkpoint, the first or the lowest loss, by "
        "more than the standard error over layers. \"Nothing more\" is a finding, not a failure of "
        "the analysis.")
    several = len({v.model for v in headline}) > 1
    page.add(RichList([[(_OUTCOME[v.outcome][0].capitalize() + ". ", True),
                        ((f"{v.model}: " if several else "") + v.sentence, False)]
                       for v in headline], "headline"))
    body = []
    for v in main_score_verdicts(report):
        text, cls = _OUTCOME[v.outcome]
        body.append([
            *([_cell(v.model)] if several else []),
            _cell(f"{v.metric}/{v.pooling}" + (" (−)" if v.metric_orientation < 0 else "")),
            _cell(f"{v.task}: {v.score}" + (" (−)" if v.score_orientation < 0 else "")),
            _cell(v.domain or "-"), _cell(str(v.n_checkpoints), "num"),
            _cell(str(v.n_layers), "num"),
            _rho_cell(v.metric_rho, v.metric_rho_low, v.metric_rho_high),
            _rho_cell(v.step_rho, v.step_rho_low, v.step_rho_high),
            _rho_cell(v.loss_rho, v.loss_rho_low, v.loss_rho_high),
            _rho_cell(v.partial, v.partial_low, v.partial_high),
            _regret_cell(v.regret_metric, v.regret_metric_se), _regret_cell(v.regret_last),
            _regret_cell(v.regret_first), _regret_cell(v.regret_loss),
            _cell(text, cls, v.sentence)])
    page.add(Heading("Beside every metric"))
    page.add(_table(
        [*(["run"] if several else []), "metric", "probe", "domain", "ckpts", "layers",
         "ρ metric", "ρ step", "ρ −loss",
         "ρ given step", "regret", "regret last", "regret first", "regret low loss",
         "verdict"], body,
        "ρ: median over layers of the within-layer Spearman ρ with the task's main score "
        "(below: the 95 % interval of that median over resampled checkpoints); ρ given step: "
        "the median partial ρ; regret: mean over layers of (best − chosen) / (best − worst) "
        "score over the layer's checkpoints when choosing by the metric (± standard error), "
        "the last checkpoint, the first, the lowest loss. Hover a verdict for its sentence."))


def _layer_choice_section(page: _Page, report: CorrelationReport) -> None:
    selectors, rows = layer_choice_rows(report)
    if not rows:
        return
    page.section(
        "layer-choice", "Choosing a layer without labels",
        "At every checkpoint, the layer each rule picks without labels, scored by the probe: "
        "the regret as a fraction of the score range over the layers, (best − chosen) / "
        "(best − worst), 0 for the best layer and 1 for the worst. rankme/sum: RankMe-t's "
        "highest layer (which Aldeneh et al., ICASSP 2025, found unreliable for this); "
        "isoscore: the most isotropic layer by IsoScore (Rudman et al., Findings of ACL 2022), "
        "(PR − 1)/(D − 1) of the covariance spectrum's participation ratio PR; last layer: "
        "the deepest, what most users take; first layer: the shallowest (a rule that "
        "cannot tell the layers apart picks it too).")
    body = []
    for label, by_selector in rows:
        cells = []
        for name in selectors:
            s = by_selector.get(name)
            if s is None or not s.n_checkpoints:
                cells.append(_cell("–", "num na"))
                continue
            cells.append(_cell(f"{s.regret_fraction_median:.2f}", "num",
                               f"mean {s.regret_fraction_mean:.2f}"
                               + (f" ± {s.regret_fraction_se:.2f}"
                                  if math.isfinite(s.regret_fraction_se) else "")
                               + f" over {s.n_checkpoints} checkpoints",
                               note=f"best at {s.n_best}/{s.n_checkpoints}"))
        body.append([_cell(label), *cells])
    page.add(_table(["probe", *selectors], body,
                    "median over checkpoints (hover: mean ± standard error); below: the "
                    "checkpoints where the rule picked a best layer"))
    others = sorted({s.selector for s in report.layer_choice_summary} - set(selectors))
    if others:
        body = []
        for label, by_selector in rows:
            cells = [_num(by_selector[n].regret_fraction_median) if n in by_selector
                     else _cell("–", "num na") for n in others]
            body.append([_cell(label), *cells])
        page.add(Heading("Every label-free metric's highest layer"))
        page.add(_table(["probe", *others], body, "median regret fraction over checkpoints"))


def _across_runs_section(page: _Page, rows: Sequence[ResultRow], records: Sequence[Any],
                         report: CorrelationReport) -> None:
    """Across runs at one step, when the store holds more than one run."""
    models = {s.model for s in report.summary}
    if len(models) < 2:
        return
    from speechrank.analysis.across_runs import compare_runs

    page.section("across-runs", "Across runs: does the signal pick the better run?",
                 "The runs compared at one training step each (the last one they all "
                 "measured): per layer, the Spearman ρ across runs of each signal with the "
                 "probe score, and the regret of choosing the run with the highest signal, as "
                 "a fraction of the score range over the runs. Across runs the loss may not be "
                 "comparable (other targets, other codebooks): this is where a label-free "
                 "metric can say what the loss cannot.")
    try:
        options = AnalysisOptions(n_bootstrap=report.settings.get("n_bootstrap", 1000),
                                  seed=report.settings.get("seed", 0),
                                  probe_split=report.settings.get("probe_split", "test"))
        result = compare_runs(rows, records, options=options)
    except SpeechrankError as exc:
        page.add(Paragraph(f"Not compared: {exc}"))
        return
    page.add(_table(["run", "checkpoint", "step", "loss", "masked accuracy"],
                    [[_cell(p.run), _cell(p.checkpoint), _cell(p.step, "num"),
                      _num(p.loss if p.loss is not None else math.nan, 3),
                      _num(p.train_accuracy if p.train_accuracy is not None else math.nan, 3)]
                     for p in result.runs]))
    scores: dict[tuple[str, ...], set[str]] = {}
    for s in result.summary:
        scores.setdefault((s.task, s.domain, s.probe_dataset), set()).add(s.score)
    body = []
    for s in sorted(result.summary, key=lambda s: (s.task, s.domain, s.kind != "training",
                                                   s.signal)):
        if s.score != main_score(scores[(s.task, s.domain, s.probe_dataset)]):
            continue
        body.append([_cell(s.signal + (" (−)" if s.metric_orientation < 0 else "")),
                     _cell(f"{s.task}: {s.score}"), _cell(s.domain or "-"),
                     _rho_cell(s.rho_median, s.rho_min, s.rho_max),
                     _cell(f"{s.n_significant}/{s.n_layers}", "num"),
                     _regret_cell(s.regret_fraction_mean, s.regret_fraction_se),
                     _cell(f"{s.n_best}/{s.n_layers}", "num")])
    page.add(_table(["signal", "probe", "domain", "ρ across runs", "layers with interval "
                     "excluding 0", "regret", "best run chosen"], body,
                    "ρ: median over layers (below: min and max over layers); regret: mean "
                    "over layers ± standard error"))
    if result.notes:
        page.add(RichList([[(n, False)] for n in result.notes], "muted"))


def _layer_lines(series: Series, checkpoints: Sequence[str], x_axis: plots.XAxis
                 ) -> dict[str, tuple[list[float], list[float]]]:
    """Layer -> (x, y) of ``series`` at ``checkpoints`` (positions from ``x_axis``)."""
    index = {c: i for i, c in enumerate(checkpoints)}
    out = {}
    for layer in series.layers():
        pts = [(x_axis[0][index[c]], series.points[(c, layer)].value)
               for c in checkpoints if (c, layer) in series.points]
        out[layer] = ([p[0] for p in pts], [p[1] for p in pts])
    return out


def _rank_and_score_figures(page: _Page, found: SeriesSet) -> None:
    """Per probe task: RankMe-t (rankme, sum pooling) above the task's main score, every
    layer, over training (one shared x axis)."""
    ranks = [s for s in found.metric if not s.is_monitor
             and (s.fields["metric"], s.fields["pooling"]) == ("rankme", "sum")]
    for score in found.score:
        name = score.fields["score"]
        main = next((m for m in MAIN_SCORES if any(
            o.fields["score"] == m and o.key[:2] == score.key[:2]
            and o.key[3:] == score.key[3:] for o in found.score)), None)
        if name != main:
            continue
        model = score.key[0]
        rank = next((r for r in ranks if r.key[0] == model), None)
        if rank is None:
            continue
        checkpoints = sorted({c for c, _ in rank.points} | {c for c, _ in score.points},
                             key=checkpoint_order(found.steps, model))
        x_axis = _x_axis(checkpoints, found.steps, model)
        f = score.fields
        title = f"{f['task']} ({f['domain'] or '-'} domain): RankMe-t and {name} by layer"
        fig = plots.rank_and_score(_layer_lines(rank, checkpoints, x_axis),
                                   _layer_lines(score, checkpoints, x_axis), x_axis, title=title,
                                   top_label="RankMe-t", bottom_label=name)
        names = page.datasets
        caption = (f"{f['task']}: RankMe-t (rankme, sum pooling) on "
                   f"{names.get(rank.fields['dataset'], rank.fields['dataset'])} (top) and the "
                   f"probe's {name} on {names.get(f['dataset'], f['dataset'])} (bottom) over "
                   f"training, one line per layer, {model}")
        page.add(page.figure(fig, "overview", [*score.key, score.variant], caption))


def _headline(page: _Page, report: CorrelationReport, focus: Sequence[tuple[str, str]],
              rows: Sequence[ResultRow], found: SeriesSet) -> None:
    page.section("headline", "Headline numbers",
                 "Within a layer, across checkpoints: does the label-free metric rise and fall "
                 "with the probe score (Spearman ρ)? Across layers: does the layer with the "
                 "highest metric have the best score? Values are oriented so that higher is "
                 "better for every series; (−) marks a negated one (PER, alpha-ReQ).")
    if not rows:
        page.add(Paragraph("The store holds no results."))
        return
    _rank_and_score_figures(page, found)
    if not report.summary:
        page.add(Paragraph("No metric-score pairs: the report needs label-free metrics and "
                           "probe scores of the same checkpoints and layers."))
        return
    items = []
    for s in report.summary:
        if (s.metric, s.pooling) not in focus:
            continue
        bl = (f"{round(s.best_layer_agreement * s.best_layer_n)}/{s.best_layer_n} checkpoints"
              if s.best_layer_n else "no checkpoint")
        ck = (f"{round(s.checkpoint_agreement * s.checkpoint_n)}/{s.checkpoint_n} layers"
              if s.checkpoint_n else "no layer")
        items.append([
            (f"{s.task}: {s.score}", True), (f" ({s.domain or '-'} domain) vs ", False),
            (f"{s.metric}/{s.pooling}", True), (": median within-layer ρ ", False),
            (fmt(s.within_rho_median, signed=True), True),
            (f" over {s.within_n} layer(s) (range {fmt(s.within_rho_min, signed=True)} to "
             f"{fmt(s.within_rho_max, signed=True)}); the metric's layer was the best layer "
             f"at {bl} (mean regret {fmt(s.best_layer_regret_mean, 3)}); its checkpoint "
             f"was the best checkpoint in {ck}.", False)])
    if items:
        page.add(RichList(items, "headline"))
    cols = pair_columns(report.pairs)
    headers = [*_key_headers(cols), "ckpts", "layers", "ρ in layer", "range", "τ in layer",
               "best layer", "regret", "best ckpt", "regret", "ρ collapse", "ρ recovery",
               "ρ across layers"]
    body = []
    for s in report.summary:
        body.append([
            *_key_cells(s, cols, page.datasets), _cell(str(s.n_checkpoints), "num"),
            _cell(str(s.n_layers), "num"),
            _rho_cell(s.within_rho_median, n=s.within_n),
            _cell((f"{fmt(s.within_rho_min, signed=True)} … "
                    f"{fmt(s.within_rho_max, signed=True)}"), "num"),
            _num(s.within_tau_median, signed=True),
            _agree_cell(s.best_layer_agreement, s.best_layer_n),
            _num(s.best_layer_regret_mean, 3),
            _agree_cell(s.checkpoint_agreement, s.checkpoint_n),
            _num(s.checkpoint_regret_mean, 3),
            _rho_cell(s.collapse_rho_median, n=s.collapse_n),
            _rho_cell(s.recovery_rho_median, n=s.recovery_n),
            _rho_cell(s.across_rho_median, n=s.across_n),
        ])
    page.add(_table(headers, body))
    page.add(Paragraph("ρ in layer, τ in layer: median Spearman ρ and Kendall τ "
             "across checkpoints over the layers where they are defined (hover: how many), and "
             "the range of ρ. best layer: checkpoints at which the metric's highest layer had "
             "the best score; best ckpt: layers in which the metric's highest checkpoint had the "
             "best score; regret: mean best score minus the picked one's. ρ collapse, ρ "
             "recovery: medians per phase of training; ρ across layers: median over checkpoints "
             "of the correlation across layers.", "muted"))


def _agree_cell(rate: float, n: int) -> Td:
    if not n or not math.isfinite(rate):
        return _cell("–", "num na")
    k = round(rate * n)
    return _cell(f"{k}/{n}", "num good" if k == n else ("num bad" if k == 0 else "num"))


def _scatter_section(page: _Page, report: CorrelationReport, found: SeriesSet,
                     focus: Sequence[tuple[str, str]]) -> None:
    page.section("scatter", "Metric vs probe score, layer by layer",
                 "One panel per layer, one point per checkpoint (colour: training step); ρ is "
                 "the within-layer Spearman correlation of the oriented values.")
    metric_by_key = {(s.key, s.variant): s for s in found.metric}
    score_by_key = {(s.key, s.variant): s for s in found.score}
    within = {(c.pair, c.layer): c for c in report.within_layer}
    for key in report.pairs:
        if (key.metric, key.pooling) not in focus:
            continue
        ms = metric_by_key.get(((key.model, key.metric, key.pooling, key.metric_dataset),
                                key.metric_variant))
        ss = score_by_key.get(((key.model, key.task, key.score, key.domain, key.probe_dataset,
                                key.probe_pooling), key.score_variant))
        if ms is None or ss is None:
            continue
        order = checkpoint_order(found.steps, key.model)
        panels = []
        for layer in sorted({layer for _, layer in ms.points}, key=_layer_key):
            cells = sorted(((c, ms.points[(c, layer)].value, ss.points[(c, layer)].value)
                            for c, lay in ms.points if lay == layer and (c, layer) in ss.points),
                           key=lambda t: order(t[0]))
            cells = [t for t in cells if math.isfinite(t[1]) and math.isfinite(t[2])]
            if not cells:
                continue
            colour = [_step_or_index(found.steps, key.model, c, i)
                      for i, (c, _, _) in enumerate(cells)]
            stat = within.get((key, layer))
            subtitle = (f"ρ={stat.spearman:+.2f} (n={stat.n})" if stat is not None
                        and math.isfinite(stat.spearman) else f"ρ undefined (n={len(cells)})")
            panels.append((layer, [t[1] for t in cells], [t[2] for t in cells], colour,
                           subtitle))
        if not panels:
            continue
        caption = (f"{key.metric}/{key.pooling} vs {key.task}: {key.score} "
                   f"({key.domain or '-'} domain), {key.model}")
        fig = plots.scatter_grid(panels, title=caption, xlabel=key.metric,
                                 ylabel=key.score, colour_label="training step")
        page.add(page.figure(fig, "scatter", [*_astuple(key)], caption))


def _astuple(key: PairKey) -> list[Any]:
    return [getattr(key, f) for f in ("model", "metric", "pooling", "metric_dataset",
                                      "metric_variant", "task", "score", "domain",
                                      "probe_dataset", "probe_pooling", "score_variant")]


def _step_or_index(steps: Mapping[tuple[str, str], int | None], model: str, checkpoint: str,
                   index: int) -> float:
    step = steps.get((model, checkpoint))
    return float(step) if step is not None else float(index)


def _layer_key(layer: str) -> tuple[Any, ...]:
    return (*layer_sort_key(layer), layer)


def _series_section(page: _Page, anchor: str, title: str, series: Sequence[Series],
                    found: SeriesSet, lead: str, *, heatmaps: bool = True) -> None:
    from speechrank.analysis import orientation

    page.section(anchor, title, lead)
    for s in series:
        model = s.key[0]
        checkpoints = s.checkpoints(found.steps)
        layers = s.layers()
        x_axis = _x_axis(checkpoints, found.steps, model)
        lines = _layer_lines(s, checkpoints, x_axis)
        name = s.fields["metric"] if s.kind == "metric" else s.fields["score"]
        caption = _series_name(s, page.datasets)
        short = _short_name(s)
        figures = [page.figure(plots.line_plot(lines, x_axis, title=short, ylabel=name),
                               f"{anchor}-line", [*s.key, s.variant],
                               f"{short} by training step, one line per layer")]
        if heatmaps:
            values = [[s.points[(c, layer)].value if (c, layer) in s.points else math.nan
                       for c in checkpoints] for layer in layers]
            reverse = s.kind == "score" and orientation(name, kind="score") < 0
            fig = plots.heatmap(values, layers, _column_labels(checkpoints, found.steps, model),
                                title=short, colour_label=name, reverse=reverse)
            figures.append(page.figure(fig, f"{anchor}-heat", [*s.key, s.variant],
                                       f"{short}: layers by checkpoints"))
        page.add(FiguresBlock(caption, figures))


def _checkpoint_labels(report: CorrelationReport) -> tuple[dict[tuple[str, str], str], list]:
    steps: dict[tuple[str, str], int | None] = {}
    for s in report.best_layer:
        steps[(s.model, s.checkpoint)] = s.step
    by_model: dict[str, list[str]] = {}
    for (model, c) in steps:
        by_model.setdefault(model, []).append(c)
    labels: dict[tuple[str, str], str] = {}
    for model, cks in by_model.items():
        for c, label in zip(cks, _column_labels(cks, steps, model), strict=True):
            labels[(model, c)] = label
    order = sorted(set(labels.values()), key=lambda lab: min(
        (steps[k] is not None, steps[k] or 0, k[1]) for k, v in labels.items() if v == lab))
    return labels, order


def _selection_sections(page: _Page, report: CorrelationReport) -> None:
    cols = pair_columns(report.pairs)
    labels, order = _checkpoint_labels(report)
    page.section("best-layer", "Best layer: does the highest-metric layer have the best score?",
                 "At each checkpoint the metric picks its highest layer. ✓ L: layer L has the "
                 "best probe score; ✗ a→b: the metric picks a, the best layer is b (hover for "
                 "the regret, the best score minus the picked layer's score).")
    grid: dict[PairKey, dict[str, Selection]] = {}
    for s in report.best_layer:
        grid.setdefault(s.pair, {})[labels[(s.model, s.checkpoint)]] = s
    names = page.datasets
    body = [[*_key_cells(p, cols, names), *[_selection_cell(grid.get(p, {}).get(c), True)
                                            for c in order]] for p in report.pairs]
    page.add(_table([*_key_headers(cols), *order], body, "columns: checkpoints (step)"))

    page.section("checkpoint-selection", "Checkpoint selection within each layer",
                 "In each layer the metric picks the checkpoint where it is highest. ✓: that "
                 "checkpoint has the best probe score; ✗ r: it does not, regret r in score "
                 "units (hover for the checkpoints).")
    layers = sorted({s.layer for s in report.best_checkpoint}, key=_layer_key)
    grid = {}
    for s in report.best_checkpoint:
        grid.setdefault(s.pair, {})[s.layer] = s
    body = [[*_key_cells(p, cols, names), *[_selection_cell(grid.get(p, {}).get(layer), False)
                                            for layer in layers]] for p in report.pairs]
    page.add(_table([*_key_headers(cols), *[f"layer {x}" for x in layers]], body))


def _selection_cell(s: Selection | None, show_pick: bool) -> Td:
    if s is None:
        return _cell("·", "num na")
    if s.agree is None:
        return _cell("–", "num na", s.reason)
    best = ", ".join(s.best)
    title = (f"picked {s.picked} ({fmt(s.picked_score, 4)}), best {best} "
             f"({fmt(s.best_score, 4)}), regret {fmt(s.regret, 4)}"
             + (f", {s.picked_ties} tied picks" if s.picked_ties > 1 else ""))
    if s.agree:
        return _cell("✓" + (f" {s.picked}" if show_pick else ""), "num good", title)
    text = f"✗ {s.picked}→{s.best[0]}" if show_pick else f"✗ {fmt(s.regret, 3)}"
    return _cell(text, "num bad", title)


def _flags(rows: Sequence[ResultRow]) -> tuple[str, str]:
    """``*`` when any of ``rows`` is not converged in N, ``!`` when any is dominated
    by one direction (:mod:`speechrank.analysis.flags`), and a hover text with the counts."""
    unconverged = sum(not_converged(r) for r in rows)
    dom = sum(dominated(r) for r in rows)
    mark = ("*" if unconverged else "") + ("!" if dom else "")
    parts = ([f"{unconverged} of {len(rows)} values not converged in N"] if unconverged
             else []) + ([f"{dom} of {len(rows)} dominated by one direction"] if dom else [])
    return mark, "; ".join(parts)


def _flagged(td: Td, rows: Sequence[ResultRow]) -> Td:
    """``td`` with the flags of the metric values behind it appended (text and title)."""
    mark, why = _flags(rows)
    if not mark:
        return td
    return dataclasses.replace(td, text=f"{td.text} {mark}",
                               title="; ".join(filter(None, [td.title, why])))


def _correlation_detail(page: _Page, report: CorrelationReport, found: SeriesSet) -> None:
    cols = pair_columns(report.pairs)
    metric_by_key = {(s.key, s.variant): s for s in found.metric}

    def layer_rows(pair: PairKey, layer: str) -> list[ResultRow]:
        ms = metric_by_key.get(((pair.model, pair.metric, pair.pooling, pair.metric_dataset),
                                pair.metric_variant))
        return [] if ms is None else [r for (_, lay), r in ms.points.items() if lay == layer]

    page.section("correlations", "Correlations in detail",
                 f"Spearman ρ with its {report.settings.get('confidence', 0.95):.0%} percentile "
                 f"bootstrap interval ({report.settings.get('n_bootstrap')} resamples); hover "
                 "for the p-value and the number of points. – : undefined (fewer than 3 points "
                 "or a constant series; hover for the reason).")
    layers = sorted({c.layer for c in report.within_layer}, key=_layer_key)
    grid: dict[PairKey, dict[str, Any]] = {}
    for c in report.within_layer:
        grid.setdefault(c.pair, {})[c.layer] = c
    marks: list[str] = []
    body = []
    for p in report.pairs:
        cells = []
        for x in layers:
            values = layer_rows(p, x)
            marks.append(_flags(values)[0])
            cells.append(_flagged(_corr_cell(grid.get(p, {}).get(x)), values))
        body.append([*_key_cells(p, cols, page.datasets), *cells])
    caption = legend(marks).replace("\n", "; ")
    page.add(Heading("Within each layer, across checkpoints"))
    page.add(_table([*_key_headers(cols), *[f"layer {x}" for x in layers]], body,
                    caption + (" (among the metric's values in that layer; hover for counts)"
                               if caption else "")))

    labels, order = _checkpoint_labels(report)
    grid = {}
    for c in report.across_layers:
        grid.setdefault(c.pair, {})[labels.get((c.model, c.checkpoint), c.checkpoint)] = c
    body = [[*_key_cells(p, cols, page.datasets),
             *[_corr_cell(grid.get(p, {}).get(x)) for x in order]] for p in report.pairs]
    page.add(Heading("Across layers, at each checkpoint (step)"))
    page.add(_table([*_key_headers(cols), *order], body))

    if report.phases:
        page.add(Heading("Per phase of training: collapse / recovery"))
        page.add(Paragraph(
                 "Within each layer the checkpoints are split where the layer's metric is "
                 "lowest (that checkpoint belongs to both phases): does the score follow the "
                 "metric down, and back up? The split is chosen from the metric itself, so "
                 "read these as descriptions, not tests.", "lead"))
        grid = {}
        for c in report.phases:
            grid.setdefault(c.pair, {}).setdefault(c.layer, {})[c.phase] = c
        body = []
        for p in report.pairs:
            cells = []
            for x in layers:
                ph = grid.get(p, {}).get(x, {})
                col, rec = ph.get("collapse"), ph.get("recovery")
                text = " / ".join(fmt(c.spearman, signed=True) if c else "–"
                                  for c in (col, rec))
                title = "; ".join(f"{c.phase}: n={c.n}, split at step {c.step}"
                                  + (f" ({c.reason})" if c.reason else "")
                                  for c in (col, rec) if c)
                cells.append(_cell(text, "num", title))
            body.append([*_key_cells(p, cols, page.datasets), *cells])
        page.add(_table([*_key_headers(cols), *[f"layer {x}" for x in layers]], body))


def _corr_cell(c: Any) -> Td:
    if c is None:
        return _cell("·", "num na")
    return _rho_cell(c.spearman, c.spearman_low, c.spearman_high, c.spearman_p, c.n, c.reason)


def _values_text(values: Iterable[int]) -> str:
    vals = sorted(set(values))
    if not vals:
        return "–"
    return str(vals[0]) if len(vals) == 1 else f"{vals[0]}–{vals[-1]} ({len(vals)} values)"


def _conventions_text(rows: Sequence[ResultRow]) -> tuple[str, str]:
    keys = sorted(set().union(*(r.conventions.keys() for r in rows))) if rows else []
    constant, varying = [], []
    for k in keys:
        seen = {json.dumps(r.conventions.get(k), sort_keys=True, default=str) for r in rows}
        if len(seen) == 1:
            constant.append(f"{k}={next(iter(seen))}")
        else:
            varying.append(f"{k} ({len(seen)} values)" + (" *" if k in VOLATILE_CONVENTION_KEYS
                                                          else ""))
    return ", ".join(constant), ", ".join(varying)


def _datasets_section(page: _Page, rows: Sequence[ResultRow]) -> None:
    """The datasets by their short names, each with its full spec and what used it."""
    if not page.datasets:
        return
    page.section("datasets", "Datasets",
                 "The short names the figures and tables use, and the DATA spec each stands "
                 "for (paths relative to the results store's folder).")
    used: dict[str, set[str]] = {}
    for r in rows:
        used.setdefault(r.dataset, set()).add(
            f"probe {r.task}" if r.task else ("monitor" if is_monitor_row(r) else "metrics"))
    body = [[_cell(name), _cell(spec, code=True), _cell(", ".join(sorted(used.get(spec, ()))))]
            for spec, name in sorted(page.datasets.items(), key=lambda item: item[1])]
    page.add(_table(["name", "DATA spec", "used by"], body))


def _conventions_section(page: _Page, found: SeriesSet, monitor: Sequence[Series]) -> None:
    page.section("conventions", "Conventions and counts behind every number",
                 "n_rows is the number of embedding rows a metric saw (utterances for sum and "
                 "mean pooling, frames for frames pooling) or the probe's evaluation examples; "
                 "dim the embedding width. Conventions shared by every row of a series are "
                 "listed with their value; those that differ between rows only by name.")
    body = []
    marks = []
    for s in [*found.metric, *found.score]:
        rows = s.rows
        constant, varying = _conventions_text(rows)
        kind = "monitor" if s in monitor else s.kind
        mark, why = _flags(rows)
        marks.append(mark)
        body.append([
            _cell(kind), _cell(_series_name(s, page.datasets)), _cell(str(len(rows)), "num"),
            _cell(str(len({c for c, _ in s.points})), "num"), _cell(str(len(s.layers())), "num"),
            _cell(_values_text(r.n_rows for r in rows), "num"),
            _cell(_values_text(r.dim for r in rows), "num"),
            _cell(constant, code=True) if constant else _cell("–"),
            _cell(varying if varying else "–"),
            _cell(f"{mark} ({why})" if mark else "–", "", why),
        ])
    page.add(_table(["kind", "series", "rows", "checkpoints", "layers", "n_rows", "dim",
                     "conventions", "differ between rows", "flags"], body,
                    legend(marks).replace("\n", "; ")))


def _with_short_names(text: str, datasets: Mapping[str, str]) -> str:
    """``text`` with every dataset spec in it replaced by its short name."""
    for spec in sorted(datasets, key=len, reverse=True):  # a spec may contain a shorter one
        text = text.replace(spec, datasets[spec])
    return text


def _settings_section(page: _Page, report: CorrelationReport, meta: Mapping[str, Any]) -> None:
    page.section("settings", "Analysis settings, notes and sweep metadata")
    s = report.settings
    items = [
        ("probe split", s.get("probe_split")),
        ("bootstrap", f"{s.get('n_bootstrap')} resamples, {s.get('bootstrap', '')}, "
                      f"confidence {s.get('confidence')}, seed {s.get('seed')}"),
        ("orientation", s.get("orientation", {}).get("rule", "")),
        ("negated metrics", ", ".join(k for k, v in s.get("orientation", {})
                                      .get("metrics", {}).items() if v < 0) or "none"),
        ("negated scores", ", ".join(k for k, v in s.get("orientation", {})
                                     .get("scores", {}).items() if v < 0) or "none"),
        ("ties", s.get("ties", "")), ("phases", s.get("phases", "")),
        ("counts", json.dumps(s.get("counts", {}))),
    ]
    page.add(_table(["setting", "value"], [[_cell(k), _cell(v)] for k, v in items]))
    if report.notes:
        page.add(Heading("Notes"))
        page.add(RichList([[(_with_short_names(n, page.datasets), False)]
                           for n in report.notes]))
    if meta:
        page.add(Heading("Sweep metadata"))
        for key, value in meta.items():
            if isinstance(value, str):
                with contextlib.suppress(ValueError):  # a JSON string reads better decoded
                    value = json.loads(value)
            text = value if isinstance(value, str) else json.dumps(value, indent=2,
                                                                   sort_keys=True, default=str)
            if len(text) > _MAX_META_CHARS:
                text = text[:_MAX_META_CHARS] + "\n… (truncated)"
            page.add(Details(key, text))
