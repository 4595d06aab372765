"""Self-contained HTML reports of an evaluation folder (``robustgsl report``)."""

from robustgsl.report.render import render_report, write_report

__all__ = ["render_report", "write_report"]
