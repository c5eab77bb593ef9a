"""Agreement between label-free metrics and downstream probes (see :mod:`.correlate`)."""

from speechrank.analysis.correlate import (
    LOWER_IS_BETTER,
    METRIC_ORIENTATION,
    Correlation,
    CorrelationReport,
    PairKey,
    Selection,
    Summary,
    correlate,
    load_rows,
    orientation,
)
from speechrank.analysis.options import AnalysisOptions
from speechrank.analysis.stats import RankCorrelation, rank_correlation
from speechrank.analysis.tables import render_tables

__all__ = [
    "LOWER_IS_BETTER",
    "METRIC_ORIENTATION",
    "AnalysisOptions",
    "Correlation",
    "CorrelationReport",
    "PairKey",
    "RankCorrelation",
    "Selection",
    "Summary",
    "correlate",
    "load_rows",
    "orientation",
    "rank_correlation",
    "render_tables",
]
