"""A study's whole report from its store: the tables and summary (analysis.report), the
uncertainty from the stored test predictions (analysis.uncertainty), the figures
(analysis.figures) and the self-contained page, index.html (analysis.page).

Reads the store only (results, plan.parquet, spec.yaml, the run markers), never the
training code, so a report is made anywhere a copy of the store can be read.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from analysis._contract import CONFIDENCE
from analysis.figures import (
    architecture_words,
    dataset_words,
    plot_critical_difference,
    plot_gain_heatmap,
    plot_gain_vs_fraction,
    plot_gain_vs_freeze,
    plot_learning_curves,
    treatment_words,
)
from analysis.load import load_epochs, load_trials
from analysis.page import PageFigure, PageTable, Section, write_page
from analysis.report import ReportTables, metric_label, report_tables, write_tables
from analysis.search import load_search, search_section
from analysis.uncertainty import bootstrap_table, supported_metrics
from study.errors import DataError, StorageError
from study.schema import run_marker_path
from study.store import Store

__all__ = ["report_study", "REPORT_METRICS", "default_metrics", "DEFAULT_BOOTSTRAP"]

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
#: Bootstrap replicates per cell of the primary metric (`study report --bootstrap`).
DEFAULT_BOOTSTRAP = 2000


def default_metrics(trials: pd.DataFrame) -> list[str]:
    """The metric columns of `trials` that hold at least one number, in REPORT_METRICS order."""
    return [m for m in REPORT_METRICS if m in trials and trials[m].notna().any()]


def report_study(
    uri: str,
    out_dir: str | Path,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Write the report of the study at `uri` into `out_dir`: every file of
    analysis.report.write_report for each metric the trials have, ``bootstrap.csv`` (the
    paired bootstrap and DeLong tests of the primary metric from the stored predictions),
    the figures, and ``index.html``; when the study has results/search, the hyperparameter
    searches too (analysis.search: a history figure per group and a section of the page).

    Args:
        uri: the study (a local folder or s3://bucket/prefix).
        out_dir: a local folder; created if missing, its files overwritten.
        n_boot: bootstrap replicates per cell (0: no bootstrap; intervals then are the
            t-intervals over repeats only).
        seed: the bootstrap's seed.
        log: where progress lines go (default: stderr).

    Returns:
        The written paths, keyed by file name.

    Raises:
        DataError: the study has no finished trial, or its results break the contract.
    """
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    store = Store(uri)
    trials = load_trials(uri)
    metrics = default_metrics(trials) or ["test_macro_auroc"]
    primary = metrics[0]
    epochs = _epochs(uri)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    has_pretrained = bool((trials["init"] == "pretrained").any())
    bootstrap, problem = None, None
    if n_boot > 0 and has_pretrained and primary in supported_metrics():
        say(f"report: paired bootstrap of {primary} ({n_boot} replicates per cell)")
        try:
            bootstrap = bootstrap_table(trials, store, primary, n_boot=n_boot, seed=seed)
        except DataError as e:  # e.g. an unreadable predictions file: named, not fatal
            problem = f"no bootstrap: {e}"
            say(f"report: {problem}")
    tables = report_tables(trials, metrics, epochs, bootstrap)
    written = write_tables(tables, trials, out)
    if bootstrap is not None:
        path = out / "bootstrap.csv"
        bootstrap.to_csv(path, index=False)
        written[path.name] = path
    say("report: figures")
    figures = _figures(tables, trials, epochs, out)
    for group in figures.values():
        for figure in group:
            written[Path(figure.path).name] = Path(figure.path)
    search = None
    searches = load_search(store)
    if searches:  # results/search exists: the hyperparameter searches (issue 11)
        say(f"report: hyperparameter search ({len(searches)} groups)")
        search, search_files = search_section(searches, out, seed=seed)
        written.update((p.name, p) for p in search_files)
    page = write_page(
        out,
        title=f"Study {_study_name(store, trials)}: fine-tuned vs. from scratch",
        provenance=_provenance(store, trials),
        sections=_sections(
            tables, trials, figures, bootstrap, _spec_text(store), n_boot, problem, search
        ),
    )
    written[page.name] = page
    return written


def _epochs(uri: str) -> pd.DataFrame | None:
    try:
        return load_epochs(uri)
    except DataError:
        return None


# --- figures ---------------------------------------------------------------------------------


def _figures(
    tables: ReportTables, trials: pd.DataFrame, epochs: pd.DataFrame | None, out: Path
) -> dict[str, list[PageFigure]]:
    """Every figure of the page, by section, with captions in words."""
    primary = tables.primary
    label = metric_label(primary)
    paired = tables.paired[primary]
    paired = paired[paired["n_pairs"] > 0]
    interval = (
        f"the {CONFIDENCE:.0%} paired bootstrap interval (repeats and test patients resampled)"
        if "boot_low" in paired and paired["boot_low"].notna().any()
        else f"the {CONFIDENCE:.0%} t-interval over repeats"
    )
    out_figs: dict[str, list[PageFigure]] = {}

    def add(section: str, paths: list[Path], caption: str, alt: str) -> None:
        many = len(paths) > 1
        out_figs.setdefault(section, []).extend(
            PageFigure(p, f"{caption}{f' (part {i + 1} of {len(paths)})' if many else ''}", alt)
            for i, p in enumerate(paths)
        )

    for metric in tables.metrics:
        add(
            "metric",
            [out / f"finetune_vs_scratch_{metric}.png"],
            f"Test {metric_label(metric)} against the share of the training set, from scratch "
            f"(black, dashed, shaded {CONFIDENCE:.0%} interval) and each pretrained arm "
            "(mean over repeats with its t-interval).",
            f"test {metric_label(metric)} by data fraction",
        )
    if not paired.empty:
        add(
            "gain",
            plot_gain_vs_fraction(paired, label, out / "gain_vs_fraction.png"),
            f"Gain in test {label} (pretrained minus from scratch, paired on the repeat) "
            f"against the share of the training set; bars are {interval}.",
            f"gain in {label} by data fraction",
        )
        add(
            "gain",
            plot_gain_vs_freeze(paired, label, out / "gain_vs_freeze_depth.png"),
            f"Gain in test {label} against the number of frozen stages (0: the whole network "
            f"fine-tuned); bars are {interval}.",
            f"gain in {label} by freeze depth",
        )
        fraction = float(paired["data_fraction"].max())
        depth = int(paired["freeze_depth"].min())
        add(
            "gain",
            plot_gain_heatmap(
                paired,
                label,
                out / "gain_heatmap.png",
                data_fraction=fraction,
                freeze_depth=depth,
            ),
            f"Mean gain in test {label} per pretraining source (rows) and downstream dataset "
            f"(columns) at {fraction:.0%} of the training set and {depth} frozen stages; * "
            "marks a Holm-adjusted Wilcoxon p below 0.05 over the whole paired table.",
            f"heatmap of the gain in {label}",
        )
    for what, result in tables.ranked.items():
        words = {"architectures": "architectures", "arms": "arms (from scratch and pretrained)"}
        path = plot_critical_difference(
            result.avg_ranks,
            result.cd,
            out / f"critical_difference_{what}.png",
            f"Average rank of the {words[what]} by test {label}",
        )
        add(
            "ranks",
            [path],
            f"Critical-difference diagram of the {words[what]}: average rank over "
            f"{result.n_blocks} blocks (1 = best); a bar joins those within the Nemenyi "
            f"critical difference ({result.cd:.2f}), which the data do not tell apart. "
            f"{result.test.capitalize()} test p = {result.p:.3g}.",
            f"critical-difference diagram of the {what}",
        )
    if epochs is not None and tables.has_pretrained:
        with_curves = trials[trials["unit_id"].isin(set(epochs["unit_id"]))]
        if not with_curves.empty:
            add(
                "curves",
                plot_learning_curves(with_curves, epochs, out / "learning_curves.png"),
                "Validation loss per epoch of each pretrained arm and of its from-scratch "
                "partner (same training subset and seed): mean over repeats, band +-1 "
                "standard deviation.",
                "learning curves",
            )
    return out_figs


# --- the page --------------------------------------------------------------------------------


def _readable(frame: pd.DataFrame, formats: dict[str, str]) -> tuple:
    """The columns of `formats` that `frame` has, names in words (datasets, architectures,
    arms), as (frame, formats) for a PageTable."""
    shown = frame[[c for c in formats if c in frame]].copy()
    if "arm" in shown:
        shown["arm"] = [treatment_words(a) for a in shown["arm"]]
    for column in ("downstream", "upstream"):
        if column in shown:
            shown[column] = [dataset_words(v) if isinstance(v, str) else v for v in shown[column]]
    if "architecture" in shown:
        shown["architecture"] = [architecture_words(v) for v in shown["architecture"]]
    return shown, {c: f for c, f in formats.items() if c in shown}


def _table(caption: str, frame: pd.DataFrame, formats: dict[str, str]) -> PageTable:
    return PageTable(caption, *_readable(frame, formats))


_HEADLINE_FORMATS = {
    "downstream": "",
    "architecture": "",
    "data_fraction": "g",
    "arm": "",
    "selected_on": "",
    "val_mean_diff": "+.3f",
    "n_candidates": "",
    "mean_diff": "+.3f",
    "ci_low": "+.3f",
    "ci_high": "+.3f",
    "boot_low": "+.3f",
    "boot_high": "+.3f",
    "holm_p": ".3g",
}
_SUMMARY_FORMATS = {
    "downstream": "",
    "architecture": "",
    "arm": "",
    "data_fraction": "g",
    "n": "",
    "mean": ".3f",
    "std": ".3f",
    "ci_low": ".3f",
    "ci_high": ".3f",
}
_EFFICIENCY_FORMATS = {
    "downstream": "",
    "architecture": "",
    "arm": "",
    "data_fraction": "g",
    "mean": ".3f",
    "reached": "",
    "scratch_fraction_needed": ".3g",
    "data_multiplier": ".2f",
}
_MATCHED_FORMATS = {
    "downstream": "",
    "architecture": "",
    "arm": "",
    "n_trials": "",
    "n_matched": "",
    "n_never": "",
    "median_epochs_to_match": ".1f",
    "median_scratch_best_epoch": ".1f",
}

_PAIRED_FORMATS = {
    "downstream": "",
    "architecture": "",
    "arm": "",
    "data_fraction": "g",
    "n_pairs": "",
    "mean_diff": "+.3f",
    "ci_low": "+.3f",
    "ci_high": "+.3f",
    "boot_low": "+.3f",
    "boot_high": "+.3f",
    "boot_p": ".3g",
    "delong_p": ".3g",
    "relative_gain": "+.1%",
    "cohens_dz": "+.2f",
    "rank_biserial": "+.2f",
    "wilcoxon_p": ".3g",
    "min_p": ".3g",
    "holm_p": ".3g",
    "bh_p": ".3g",
    "n_tests": "",
}


def _sections(
    tables: ReportTables,
    trials: pd.DataFrame,
    figures: dict[str, list[PageFigure]],
    bootstrap: pd.DataFrame | None,
    spec: str | None,
    n_boot: int,
    problem: str | None = None,
    search: Section | None = None,
) -> list[Section]:
    primary = tables.primary
    label = metric_label(primary)
    paired = tables.paired[primary]
    summary = tables.summaries[primary]
    n_pre = int((trials["init"] == "pretrained").sum())
    sections = [
        Section(
            "What was compared",
            paragraphs=(
                f"{len(trials)} finished trials ({n_pre} fine-tuned from a pretrained model, "
                f"{len(trials) - n_pre} from scratch) on "
                f"{', '.join(dict.fromkeys(trials['downstream']))}, with "
                f"{', '.join(dict.fromkeys(trials['architecture']))}. The primary metric is "
                f"test {label}; every metric is in summary.csv and paired.csv.",
                "A pretrained trial is paired with the from-scratch trial of the same "
                "architecture, downstream dataset, data fraction and repeat: both trained on "
                "the identical training subset with the same seed, and were tested on the "
                "same test split. 'Gain' is pretrained minus from scratch.",
                "Which arm and which freeze depth are shown as best is chosen on validation "
                "numbers, never on the test split they report.",
            ),
        )
    ]
    selected = tables.selected["arm"]
    if not selected.empty:
        sections.append(
            Section(
                "Headlines (chosen on validation)",
                paragraphs=(
                    "Per downstream dataset, architecture and data fraction: the pretrained "
                    "arm with the best mean paired validation difference, and its test gain.",
                ),
                tables=(
                    _table(
                        f"The arm chosen on validation per cell, and its test gain in {label}",
                        selected.merge(
                            paired.drop(columns=["upstream", "pretrain_task", "freeze_depth"]),
                            on=["downstream", "architecture", "data_fraction", "arm"],
                            how="left",
                        ),
                        _HEADLINE_FORMATS,
                    ),
                ),
            )
        )
    if "gain" in figures:
        sections.append(Section("Gain from pretraining", figures=figures["gain"]))
    sections.append(Section(f"Test {label} per arm", figures=figures.get("metric", [])))
    if len(paired):
        notes = [
            "Wilcoxon signed-rank p-values over the repeats, with Holm (family-wise) and "
            "Benjamini-Hochberg (false discovery) adjustments over the whole table "
            "(n_tests); min_p is the smallest p the test can reach with that many pairs "
            "(with 3 pairs, 0.25): a cell whose min_p is above 0.05 cannot be significant "
            "whatever the effect.",
        ]
        if problem:
            notes.append(f"The bootstrap could not be computed ({problem}).")
        if bootstrap is not None:
            notes.append(
                f"boot_low/boot_high: the {CONFIDENCE:.0%} paired bootstrap interval of the "
                f"gain ({n_boot} replicates resampling repeats and test patients together, "
                "from the stored test predictions); delong_p: DeLong's test of the paired "
                "AUROCs where one repeat pair is compared."
            )
        sections.append(
            Section(
                "Paired differences",
                paragraphs=tuple(notes),
                tables=(
                    _table(f"Pretrained minus from scratch, test {label}", paired, _PAIRED_FORMATS),
                ),
            )
        )
    if "ranks" in figures:
        sections.append(Section("Rankings across datasets", figures=figures["ranks"]))
    efficiency = tables.efficiency[primary]
    if tables.has_pretrained and not efficiency.empty:
        matched_rows = []
        if tables.matched is not None and not tables.matched.empty:
            from analysis.curves import summarize_epochs_to_match

            matched_rows = [
                _table(
                    "Epochs until a fine-tuned model reaches its from-scratch partner's best "
                    "validation loss",
                    summarize_epochs_to_match(tables.matched),
                    _MATCHED_FORMATS,
                )
            ]
        sections.append(
            Section(
                "Data efficiency",
                paragraphs=(
                    "The share of the training set the from-scratch arm needs to reach each "
                    "pretrained cell's mean (interpolated in log fraction between measured "
                    "fractions, never extrapolated), and that share over the cell's own.",
                ),
                tables=(
                    _table(
                        "From-scratch share of the training set that reaches each pretrained "
                        "cell's mean",
                        efficiency,
                        _EFFICIENCY_FORMATS,
                    ),
                    *matched_rows,
                ),
            )
        )
    if "curves" in figures:
        sections.append(Section("Learning curves", figures=figures["curves"]))
    sections.append(
        Section(
            "Per arm",
            tables=(_table(f"Test {label}, mean over repeats", summary, _SUMMARY_FORMATS),),
        )
    )
    if search is not None:
        sections.append(search)
    if spec:
        sections.append(
            Section(
                "The study's spec",
                preformatted=spec,
                preformatted_caption="spec.yaml as stored with the study (defaults filled in)",
            )
        )
    return sections


# --- provenance ------------------------------------------------------------------------------


def _study_name(store: Store, trials: pd.DataFrame) -> str:
    return Path(store.uri.rstrip("/")).name


def _spec_text(store: Store) -> str | None:
    try:
        return store.read_bytes("spec.yaml").decode("utf-8", errors="replace")
    except StorageError:
        return None


def _provenance(store: Store, trials: pd.DataFrame) -> dict:
    """Code version, hardware, dates and unit counts from the store."""
    planned = None
    stages: dict[str, int] = {}
    if store.exists("plan.parquet"):
        plan = pq.read_table(
            io.BytesIO(store.read_bytes("plan.parquet")), columns=["stage"], use_threads=False
        )
        stages = plan.to_pandas()["stage"].value_counts().to_dict()
        planned = int(sum(stages.values()))
    pretrain_done = len(store.list_names("results/pretrain", ".parquet"))
    done = set(trials["unit_id"])
    failures = []
    for name in store.list_names("runs", ".json"):
        uid = name.removesuffix(".json")
        if uid in done:
            continue
        try:
            marker = store.read_json(run_marker_path(uid))
        except StorageError:
            continue
        if marker.get("state") == "failed":
            failures.append(
                {
                    "unit": uid,
                    "host": marker.get("host"),
                    "when": marker.get("updated_at"),
                    "error": str(marker.get("error", ""))[:300],
                }
            )
    finished = pd.to_datetime(trials.get("finished_at"), utc=True, errors="coerce")
    words = ", ".join(f"{n} {stage}" for stage, n in sorted(stages.items()))
    return {
        "study": store.uri,
        "code_version": ", ".join(sorted(set(trials.get("code_version", pd.Series()).dropna())))
        or None,
        "hardware": ", ".join(sorted(set(trials.get("hardware", pd.Series()).dropna()))) or None,
        "started": None if finished.isna().all() else f"{finished.min():%Y-%m-%d %H:%M UTC}",
        "finished": None if finished.isna().all() else f"{finished.max():%Y-%m-%d %H:%M UTC}",
        "units_planned": f"{planned} ({words})" if planned is not None else None,
        "units_done": f"{len(done) + pretrain_done} ({len(done)} fine-tune / scratch, "
        f"{pretrain_done} pretrain)",
        "units_failed": len(failures),
        "failures": failures,
    }
