"""Analysis: reads only a study's Parquet results; never imports training or Ray."""

from __future__ import annotations

from analysis.curves import data_efficiency, epochs_to_match_scratch
from analysis.load import load_epochs, load_trials
from analysis.report import (
    paired_differences,
    rankings,
    report_tables,
    select_on_validation,
    summarize,
    write_report,
)
from analysis.study_report import REPORT_METRICS, default_metrics, report_study
from analysis.uncertainty import (
    bootstrap_table,
    delong_macro,
    delong_test,
    load_predictions,
    paired_bootstrap_gain,
)

__all__ = [
    "load_trials",
    "load_epochs",
    "load_predictions",
    "summarize",
    "paired_differences",
    "select_on_validation",
    "rankings",
    "report_tables",
    "write_report",
    "report_study",
    "default_metrics",
    "data_efficiency",
    "epochs_to_match_scratch",
    "bootstrap_table",
    "paired_bootstrap_gain",
    "delong_test",
    "delong_macro",
    "REPORT_METRICS",
]
