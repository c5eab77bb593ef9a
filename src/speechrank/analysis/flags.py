"""Flags carried by label-free values: not converged in N, dominated by one direction.

``rank`` records ``conventions["convergence"]`` (the value at nested prefixes N/8 .. N; see
:mod:`speechrank.metrics.convergence`) and, on RankMe rows, ``conventions["dominance"]`` (see
:mod:`speechrank.metrics.dominance`). These helpers read them the same way for the CLI table,
``correlate`` and the report.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from speechrank.results import ResultRow


def not_converged(row: ResultRow) -> bool:
    """True when the value moved more than its tolerance over the last doubling of N."""
    record = row.conventions.get("convergence")
    return isinstance(record, dict) and record.get("converged") is False


def dominated(row: ResultRow) -> bool:
    """True when one direction holds more than the threshold share of the spectrum."""
    record = row.conventions.get("dominance")
    return isinstance(record, dict) and record.get("dominated") is True


def marker(row: ResultRow) -> str:
    """``*`` not converged, ``!`` dominated by one direction (both can apply)."""
    return ("*" if not_converged(row) else "") + ("!" if dominated(row) else "")


#: What each marker means, for a table caption.
LEGEND: dict[str, str] = {
    "*": "* not converged (moved > 2 % from N/2 to N rows)",
    "!": "! one direction > 90 % of the spectrum (see rankme_centered, frames)",
}


def legend(markers: Iterable[str]) -> str:
    """The caption for the markers that occur (empty when none)."""
    seen = set("".join(markers))
    return "\n".join(text for mark, text in LEGEND.items() if mark in seen)


def series_flags(label: str, rows: Iterable[ResultRow]) -> tuple[list[str], dict[str, Any]]:
    """Notes and counts of flagged values in one metric series."""
    rows = list(rows)
    unconverged = sum(not_converged(r) for r in rows)
    dom = sum(dominated(r) for r in rows)
    notes = []
    if unconverged:
        notes.append(f"{label}: {unconverged} of {len(rows)} values not converged in N (moved "
                     "more than 2 % over the last doubling of the rows)")
    if dom:
        notes.append(f"{label}: {dom} of {len(rows)} values dominated by one direction "
                     "(first direction > 90 % of the spectrum); read rankme_centered or the "
                     "frames pooling")
    return notes, {"values": len(rows), "not_converged": unconverged, "dominated": dom}
