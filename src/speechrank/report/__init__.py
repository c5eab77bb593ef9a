"""The HTML report: plots and tables of a results store (:func:`write_report`)."""

from speechrank.report.html import is_monitor_row, write_report

__all__ = ["is_monitor_row", "write_report"]
