"""Analysis: reads only a study's Parquet results; never imports training or Ray."""

from __future__ import annotations

from pathlib import Path

from analysis.curves import epochs_to_match_scratch
from analysis.load import load_epochs, load_trials
from analysis.report import paired_differences, summarize, write_report

__all__ = [
    "load_trials",
    "load_epochs",
    "summarize",
    "paired_differences",
    "write_report",
    "report_study",
    "default_metrics",
    "epochs_to_match_scratch",
    "REPORT_METRICS",
]


# Metric columns in report order; a study reports those its trials have numbers for (the
# first present is the primary one): QRS detection first, then the classification scores.
REPORT_METRICS = (
    "test_qrs_f1",
    "test_qrs_sensitivity",
    "test_qrs_ppv",
    "test_macro_auroc",
    "test_macro_f1",
    "test_weighted_f1",
    "test_challenge_score",
    "test_cinc2017_score",
    "test_accuracy",
    "test_sensitivity",
    "test_specificity",
)


def default_metrics(trials) -> list[str]:
    """The metric columns of `trials` that hold at least one number, in REPORT_METRICS order."""
    return [m for m in REPORT_METRICS if m in trials and trials[m].notna().any()]


def report_study(uri: str, out_dir: str | Path) -> dict[str, Path]:
    """Write the figures and tables of the study at `uri` into `out_dir`, for every metric
    its trials have (see REPORT_METRICS)."""
    trials = load_trials(uri)
    paths = write_report(trials, out_dir, metrics=default_metrics(trials) or ("test_macro_auroc",))
    if (trials["init"] == "pretrained").any():
        # epochs until each fine-tuned model reaches its scratch partner's best
        matched = epochs_to_match_scratch(trials, load_epochs(uri))
        path = Path(out_dir) / "epochs_to_match.csv"
        matched.to_csv(path, index=False)
        paths[path.name] = path
    return paths
