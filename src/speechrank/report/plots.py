"""The report's figures, drawn with matplotlib's object API on the Agg canvas.

No pyplot: figures are plain :class:`matplotlib.figure.Figure` objects, so drawing a report
never touches the global backend of the program that calls it. PNGs are written without the
``Software`` metadata, so the same data give byte-identical files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib as mpl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["heatmap", "line_plot", "rank_and_score", "save", "scatter_grid"]

_STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "figure.dpi": 100, "savefig.dpi": 100,
}

XAxis = tuple[list[float], list[str] | None, str]  # positions, tick labels or None, label


def _figure(width: float, height: float) -> Figure:
    # fixed margins rather than constrained layout: several times faster to draw, and the
    # figures are simple enough to lay out by hand
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _margins(fig: Figure, *, left: float, right: float, bottom: float, top: float,
             **kw: float) -> None:
    """Margins in inches, whatever the figure size."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h,
                        **kw)


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG without time- or version-dependent metadata."""
    with mpl.rc_context(_STYLE):
        fig.savefig(path, format="png", metadata={"Software": None})
    return path


def _layer_colours(n: int) -> list[tuple[float, float, float, float]]:
    cmap = mpl.colormaps["viridis"]
    return [cmap(0.9 * i / max(1, n - 1)) for i in range(n)]


def _apply_x(ax, x_axis: XAxis) -> None:
    positions, labels, name = x_axis
    if labels is not None:
        ax.set_xticks(positions, labels, rotation=45 if len(labels) > 6 else 0,
                      ha="right" if len(labels) > 6 else "center")
    else:
        positive = [p for p in positions if p > 0]
        if positive and max(positive) / min(positive) >= 100:
            ax.set_xscale("symlog", linthresh=min(positive))
    ax.set_xlabel(name)


def line_plot(lines: Mapping[str, tuple[list[float], list[float]]], x_axis: XAxis, *,
              title: str, ylabel: str) -> Figure:
    """One line per layer (``lines``: layer -> (x, y)), coloured from the first to the last."""
    with mpl.rc_context(_STYLE):
        fig = _figure(7.2, 3.6)
        rotated = x_axis[1] is not None and len(x_axis[1]) > 6
        _margins(fig, left=0.75, right=1.35 if len(lines) <= 14 else 2.3,
                 bottom=1.0 if rotated else 0.55, top=0.35)
        ax = fig.add_subplot()
        colours = _layer_colours(len(lines))
        for colour, (layer, (x, y)) in zip(colours, lines.items(), strict=True):
            ax.plot(x, y, marker="o", markersize=3, linewidth=1.4, color=colour,
                    label=f"layer {layer}")
        _apply_x(ax, x_axis)
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left")
        if lines:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
                      ncols=1 if len(lines) <= 14 else 2)
    return fig


def rank_and_score(top: Mapping[str, tuple[list[float], list[float]]],
                   bottom: Mapping[str, tuple[list[float], list[float]]], x_axis: XAxis, *,
                   title: str, top_label: str, bottom_label: str) -> Figure:
    """Two aligned panels over one shared x axis (training step): ``top`` (the label-free
    metric) above ``bottom`` (the probe score), one line per layer in the same colour in both
    panels, one legend."""
    with mpl.rc_context(_STYLE):
        layers = list(dict.fromkeys([*top, *bottom]))
        fig = _figure(7.2, 5.4)
        rotated = x_axis[1] is not None and len(x_axis[1]) > 6
        _margins(fig, left=0.75, right=1.35 if len(layers) <= 14 else 2.3,
                 bottom=1.0 if rotated else 0.55, top=0.35, hspace=0.12)
        ax_top = fig.add_subplot(2, 1, 1)
        ax_bottom = fig.add_subplot(2, 1, 2, sharex=ax_top)
        colours = dict(zip(layers, _layer_colours(len(layers)), strict=True))
        for ax, lines in ((ax_top, top), (ax_bottom, bottom)):
            for layer, (x, y) in lines.items():
                ax.plot(x, y, marker="o", markersize=3, linewidth=1.4, color=colours[layer],
                        label=f"layer {layer}")
        _apply_x(ax_bottom, x_axis)
        ax_top.tick_params(labelbottom=False)
        ax_top.set_ylabel(top_label)
        ax_bottom.set_ylabel(bottom_label)
        ax_top.set_title(title, loc="left")
        handles, labels = (ax_top if top else ax_bottom).get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="center left", bbox_to_anchor=(
                1 - 1.3 / fig.get_size_inches()[0], 0.5), frameon=False,
                ncols=1 if len(layers) <= 14 else 2)
    return fig


def heatmap(values: Sequence[Sequence[float]], rows: Sequence[str], columns: Sequence[str], *,
            title: str, colour_label: str, reverse: bool = False) -> Figure:
    """Layers (rows, first at the bottom) by checkpoints (columns); NaN cells are blank.

    ``reverse`` flips the colour map so that "better" has the same colour for a score where
    lower is better. Cells are annotated when the grid is small enough to read.
    """
    import numpy as np

    data = np.asarray(values, dtype=np.float64).reshape(len(rows), len(columns))
    with mpl.rc_context(_STYLE):
        width = min(11.0, 3.0 + 0.55 * len(columns))
        height = min(8.0, 1.6 + 0.32 * len(rows))
        fig = _figure(width, height)
        longest = max((len(c) for c in columns), default=1)
        _margins(fig, left=0.7, right=0.75, top=0.35,
                 bottom=0.55 + (0.065 * longest if len(columns) > 6 else 0.0))
        ax = fig.add_subplot()
        cmap = mpl.colormaps["viridis_r" if reverse else "viridis"].with_extremes(
            bad="#eeeeee")
        masked = np.ma.masked_invalid(data)
        image = ax.imshow(masked, aspect="auto", origin="lower", cmap=cmap,
                          interpolation="nearest")
        ax.set_yticks(range(len(rows)), [f"{r}" for r in rows])
        ax.set_xticks(range(len(columns)), list(columns),
                      rotation=45 if len(columns) > 6 else 0,
                      ha="right" if len(columns) > 6 else "center")
        ax.set_ylabel("layer")
        ax.set_xlabel("checkpoint (step)")
        ax.grid(False)
        ax.set_title(title, loc="left")
        fig.colorbar(image, ax=ax, label=colour_label, fraction=0.05, pad=0.02)
        if len(rows) * len(columns) <= 160 and np.isfinite(data).any():
            finite = data[np.isfinite(data)]
            lo, hi = float(finite.min()), float(finite.max())
            for i in range(len(rows)):
                for j in range(len(columns)):
                    v = data[i, j]
                    if not math.isfinite(v):
                        continue
                    frac = 0.5 if hi == lo else (v - lo) / (hi - lo)
                    if reverse:
                        frac = 1.0 - frac
                    ax.text(j, i, _short(v), ha="center", va="center", fontsize=7,
                            color="black" if frac > 0.55 else "white")
    return fig


def _short(v: float) -> str:
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def scatter_grid(panels: Sequence[tuple[str, list[float], list[float], list[float], str]], *,
                 title: str, xlabel: str, ylabel: str, colour_label: str) -> Figure:
    """One scatter panel per layer: (layer, x, y, colour values, panel subtitle)."""
    n = max(1, len(panels))
    nrows = math.ceil(n / 4)            # at most 4 panels a row, rows filled evenly
    ncols = math.ceil(n / nrows)
    with mpl.rc_context(_STYLE):
        fig = _figure(2.6 * ncols + 1.4, 2.3 * nrows + 0.6)
        _margins(fig, left=0.8, right=0.9, bottom=0.5, top=0.55, wspace=0.3, hspace=0.55)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        mappable = None
        all_c = [c for p in panels for c in p[3]]
        vmin, vmax = (min(all_c), max(all_c)) if all_c else (0.0, 1.0)
        for k, ax in enumerate(axes.flat):
            if k >= len(panels):
                ax.set_visible(False)
                continue
            layer, x, y, c, subtitle = panels[k]
            mappable = ax.scatter(x, y, c=c, cmap="viridis", vmin=vmin, vmax=vmax, s=22,
                                  edgecolors="black", linewidths=0.3)
            ax.set_title(f"layer {layer}: {subtitle}", fontsize=9, loc="left")
            if k % ncols == 0:
                ax.set_ylabel(ylabel)
            if k >= len(panels) - ncols:
                ax.set_xlabel(xlabel)
        fig.suptitle(title, x=0.01, ha="left", fontsize=10)
        if mappable is not None:
            fig.colorbar(mappable, ax=axes.ravel().tolist(), label=colour_label,
                         fraction=0.04, pad=0.02)
    return fig
