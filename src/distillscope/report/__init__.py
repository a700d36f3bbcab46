"""One self-contained HTML page from a results dataset: figures, headline numbers, definitions."""

from .page import render_report, write_report

__all__ = ["render_report", "write_report"]
