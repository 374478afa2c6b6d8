"""Analysis: reads only a study's Parquet results; never imports training or Ray."""

from __future__ import annotations

from pathlib import Path

from analysis.load import load_epochs, load_trials
from analysis.report import paired_differences, summarize, write_report

__all__ = [
    "load_trials",
    "load_epochs",
    "summarize",
    "paired_differences",
    "write_report",
    "report_study",
]


def report_study(uri: str, out_dir: str | Path) -> dict[str, Path]:
    """Write the figures and tables of the study at `uri` into `out_dir`."""
    return write_report(load_trials(uri), out_dir)
