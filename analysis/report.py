"""Fine-tuned vs. from-scratch comparisons from the results table: statistics, figures, tables.

Reads only the trials table (one row per finished unit, the columns of the results contract)
and never imports torch, ray or the training and sweep layers, so a report can be made on a
laptop from a copy of the store.

An *arm* is what a trial's model started from: ``"scratch"``, or
``"pretrained:<upstream>/<pretrain_task>/freeze=<k>"``. A *cell* is one arm on one
(downstream, architecture, data_fraction); its trials are the repeats. A pretrained and a
scratch trial with the same (architecture, downstream, data_fraction, repeat) trained on the
identical subset, so the comparisons here are paired on the repeat.

The tests, effect sizes, adjustments and rankings are computed by ``analysis.stats``; data
efficiency and epochs to match by ``analysis.curves``. Headlines are chosen on validation
numbers only (``select_on_validation``), never on the test split they report.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so
nothing global (backend, open-figure registry) is touched and no display is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter, NullLocator

from analysis._contract import (
    CELL,
    CELL_COLUMNS,
    CONFIDENCE,
    PAIR_KEY,
    REQUIRED_COLUMNS,
    arm_label,
    cell_fields,
    mean_and_interval,
    prepare_trials,
    sort_cells,
)
from analysis.curves import (
    data_efficiency,
    epochs_to_match_scratch,
    summarize_epochs_to_match,
)
from analysis.figures import (
    DPI,
    MARKERS,
    PALETTE,
    architecture_words,
    arm_words,
    dataset_words,
)
from analysis.stats import (
    FriedmanResult,
    adjust_pvalues,
    cohens_dz,
    friedman_ranks,
    min_wilcoxon_p,
    rank_biserial,
    relative_gain,
    signed_rank_test,
)
from study.errors import ConfigError

__all__ = [
    "REQUIRED_COLUMNS",
    "SELECTION_METRICS",
    "arm_label",
    "paired_differences",
    "rankings",
    "select_on_validation",
    "summarize",
    "write_report",
    "metric_label",
    "report_tables",
    "write_tables",
    "ReportTables",
    "BOOTSTRAP_COLUMNS",
]

_METRIC_LABELS = {
    "test_macro_auroc": "AUROC",
    "val_macro_auroc": "val AUROC",
    "test_macro_f1": "macro F1",
    "test_weighted_f1": "weighted F1",
    "test_qrs_f1": "QRS F1",
    "test_qrs_sensitivity": "QRS sensitivity",
    "test_qrs_ppv": "QRS PPV",
    "test_challenge_score": "challenge score",
    "test_cinc2017_score": "CinC 2017 F1",
    "test_accuracy": "accuracy",
    "test_sensitivity": "sensitivity",
    "test_specificity": "specificity",
}
_SUMMARY_COLUMNS = [
    "metric",
    "downstream",
    "architecture",
    "arm",
    "init",
    "upstream",
    "pretrain_task",
    "freeze_depth",
    "trained_layers",
    "data_fraction",
    "n",
    "n_nan",
    "mean",
    "std",
    "ci_low",
    "ci_high",
]
_PAIRED_COLUMNS = [
    *CELL_COLUMNS,
    "n_pairs",
    "n_unpaired",
    "n_nan",
    "mean_diff",
    "std_diff",
    "ci_low",
    "ci_high",
    "scratch_mean",
    "relative_gain",
    "cohens_dz",
    "rank_biserial",
    "wilcoxon_p",
    "p_method",
    "n_nonzero",
    "min_p",
    "n_tests",
    "holm_p",
    "bh_p",
    "n_wins",
    "win_fraction",
]
# Okabe-Ito colours (analysis.figures.PALETTE) without black (the scratch line) and yellow.
_CB_COLOURS = [c for name, c in PALETTE.items() if name not in ("black", "yellow")]
SIGNIFICANCE = 0.05  # the level below which a cell is flagged as unable to reach it
# Validation numbers a selection may use, in order of preference: (column, higher is better).
SELECTION_METRICS: tuple[tuple[str, bool], ...] = (("val_macro_auroc", True), ("val_loss", False))
_SELECTION_WORDS = {"val_macro_auroc": "AUROC", "val_loss": "loss"}
_HEADLINE_BY = ("downstream", "architecture", "data_fraction")
_FREEZE_BY = ("downstream", "architecture", "upstream", "pretrain_task", "data_fraction")
_SELECTABLE = (
    "downstream",
    "architecture",
    "upstream",
    "pretrain_task",
    "freeze_depth",
    "data_fraction",
)


def summarize(trials: pd.DataFrame, metric: str = "test_macro_auroc") -> pd.DataFrame:
    """Mean and 95% interval of ``metric`` over repeats, per cell.

    Trials whose metric is NaN are left out of every statistic and counted in ``n_nan``.
    ``std`` is the sample standard deviation (ddof=1); ``ci_low``/``ci_high`` is the two-sided
    95% t-interval of the mean, ``mean +- t(0.975, n-1) * std / sqrt(n)``. With ``n < 2`` there
    is no spread to estimate, so ``std`` and the interval are NaN (and ``mean`` is NaN at
    ``n == 0``).

    Args:
        trials: The results table, one row per finished unit.
        metric: Column to summarize.

    Returns:
        One row per (downstream, architecture, arm, data_fraction), with the columns
        metric, downstream, architecture, arm, init, upstream, pretrain_task, freeze_depth,
        data_fraction, n, n_nan, mean, std, ci_low, ci_high; sorted by downstream,
        architecture, scratch first then pretrained arms, data_fraction.

    Raises:
        DataError: If there are no trials, columns are missing, or values break the contract.
    """
    frame = prepare_trials(trials, (metric,))
    rows = []
    for cell, group in frame.groupby(CELL, sort=False):
        values = group[metric].to_numpy(dtype=float)
        finite = values[~np.isnan(values)]
        mean, std, low, high = mean_and_interval(finite)
        first = group.iloc[0]
        rows.append(
            {
                **cell_fields(metric, cell, group),
                "init": first["init"],
                # what trained in this arm (rows written before the column: unknown)
                "trained_layers": first.get("trained_layers"),
                "n": int(finite.size),
                "n_nan": int(values.size - finite.size),
                "mean": mean,
                "std": std,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return sort_cells(pd.DataFrame(rows, columns=_SUMMARY_COLUMNS))


def paired_differences(trials: pd.DataFrame, metric: str = "test_macro_auroc") -> pd.DataFrame:
    """Pretrained minus scratch, paired on the repeat, for every pretrained cell.

    A pretrained trial is paired with the scratch trial of the same (architecture, downstream,
    data_fraction, repeat): both trained on the identical subset. Trials of either side with
    no partner are not used and are counted in ``n_unpaired``; pairs where either side's
    metric is NaN are not used and are counted in ``n_nan``. On the ``n_pairs`` differences
    that remain:

    - ``mean_diff``, ``std_diff`` (ddof=1) and ``ci_low``/``ci_high``, the 95% t-interval of
      the mean difference (NaN when ``n_pairs < 2``);
    - ``scratch_mean``: the scratch arm's mean over the same pairs, and ``relative_gain =
      mean_diff / scratch_mean`` (NaN when that is 0);
    - ``cohens_dz = mean_diff / std_diff``, Cohen's d for paired samples (NaN when
      ``n_pairs < 2`` or the differences do not vary);
    - ``rank_biserial``: the matched-pairs rank-biserial correlation ``(W+ - W-) / (W+ + W-)``
      over the non-zero differences ranked by ``|d|`` (NaN when none is non-zero);
    - ``wilcoxon_p``: the two-sided Wilcoxon signed-rank p-value, zero differences dropped
      (``zero_method="wilcox"``), NaN when fewer than 2 differences are non-zero (which
      includes all pairs being equal). ``p_method`` names its null distribution: ``"exact"``
      (scipy's exact signed-rank distribution: at most 50 non-zero differences, no tied
      ``|d|``; every small study is here), ``"exact (tied ranks, all sign flips)"`` (tied
      ``|d|``, at most 13 differences) or ``"normal approximation"`` (otherwise); see
      ``analysis.stats.signed_rank_test``;
    - ``n_nonzero``: the non-zero differences the test used, and ``min_p = min(1, 2 /
      2**n_nonzero)``, the smallest p-value the exact test can give with them: with
      ``min_p > 0.05`` (five non-zero pairs or fewer) the cell cannot come out significant at
      0.05, whatever the effect;
    - ``n_tests``, ``holm_p``, ``bh_p``: the whole table returned here (one metric, every
      pretrained cell) is one family of ``n_tests`` tests, its rows with a ``wilcoxon_p``;
      ``holm_p`` is Holm's step-down adjustment (family-wise error rate), ``bh_p`` the
      Benjamini-Hochberg one (false discovery rate), both NaN where ``wilcoxon_p`` is;
    - ``n_wins`` (pairs where pretrained is strictly higher; ties are not wins) and
      ``win_fraction = n_wins / n_pairs``.

    Args:
        trials: The results table, one row per finished unit.
        metric: Column to compare; higher is taken to be better for the win count.

    Returns:
        One row per pretrained (downstream, architecture, arm, data_fraction), with the columns
        metric, downstream, architecture, arm, upstream, pretrain_task, freeze_depth,
        data_fraction, n_pairs, n_unpaired, n_nan, mean_diff, std_diff, ci_low, ci_high,
        scratch_mean, relative_gain, cohens_dz, rank_biserial, wilcoxon_p, p_method,
        n_nonzero, min_p, n_tests, holm_p, bh_p, n_wins, win_fraction. A cell with no scratch
        counterpart at all has a row with ``n_pairs == 0`` and NaN statistics.

    Raises:
        DataError: If there are no trials, columns are missing, or values break the contract.
    """
    frame = prepare_trials(trials, (metric,))
    scratch_by_cell = {
        key: group.set_index("repeat")[metric]
        for key, group in frame[frame["init"] == "scratch"].groupby(PAIR_KEY, sort=False)
    }
    empty = pd.Series(dtype=float, index=pd.Index([], name="repeat"))
    rows = []
    pretrained = frame[frame["init"] == "pretrained"]
    for cell, group in pretrained.groupby(CELL, sort=False):
        downstream, architecture, _, fraction = cell
        ours = group.set_index("repeat")[metric]
        theirs = scratch_by_cell.get((architecture, downstream, fraction), empty)
        common = ours.index.intersection(theirs.index)
        n_unpaired = len(ours) + len(theirs) - 2 * len(common)
        a = ours.loc[common].to_numpy(dtype=float)
        b = theirs.loc[common].to_numpy(dtype=float)
        diffs = a - b
        kept = ~np.isnan(diffs)
        finite = diffs[kept]
        mean, std, low, high = mean_and_interval(finite)
        test = signed_rank_test(finite)
        n_wins = int(np.count_nonzero(finite > 0))
        rows.append(
            {
                **cell_fields(metric, cell, group),
                "n_pairs": int(finite.size),
                "n_unpaired": int(n_unpaired),
                "n_nan": int(diffs.size - finite.size),
                "mean_diff": mean,
                "std_diff": std,
                "ci_low": low,
                "ci_high": high,
                "scratch_mean": float(b[kept].mean()) if finite.size else math.nan,
                "relative_gain": relative_gain(a[kept], b[kept]),
                "cohens_dz": cohens_dz(finite),
                "rank_biserial": rank_biserial(finite),
                "wilcoxon_p": test.p,
                "p_method": test.method,
                "n_nonzero": test.n_nonzero,
                "min_p": min_wilcoxon_p(test.n_nonzero),
                "n_wins": n_wins,
                "win_fraction": n_wins / finite.size if finite.size else math.nan,
            }
        )
    table = pd.DataFrame(rows, columns=_PAIRED_COLUMNS)
    holm, bh, n_tests = adjust_pvalues(table["wilcoxon_p"])
    table["n_tests"] = n_tests
    table["holm_p"] = holm
    table["bh_p"] = bh
    return sort_cells(table)


def select_on_validation(trials: pd.DataFrame, by: Sequence[str] = _HEADLINE_BY) -> pd.DataFrame:
    """The pretrained arm with the best mean paired validation difference, per group.

    For every group of pretrained cells sharing the ``by`` values, each candidate arm's mean
    paired difference to scratch (``paired_differences`` on a validation column) is compared
    and the best one chosen: on ``val_macro_auroc`` (higher is better) when the group's
    pairs have it, otherwise on ``val_loss`` (lower is better). Only arms with validation
    pairs compete; a tie goes to the first arm in report order (upstream, task, then the
    smaller freeze depth). The test split plays no part, so the chosen arm's test difference
    is not inflated by being the largest of several test numbers.

    Args:
        trials: The results table, one row per finished unit.
        by: Columns of a group; they must include downstream, architecture and
            data_fraction (one scratch reference per group) and may add upstream,
            pretrain_task and freeze_depth. The default picks one arm per cell of the
            fraction curve; add upstream and pretrain_task to pick a freeze depth per source.

    Returns:
        One row per group, sorted by the ``by`` columns: those columns, then arm, upstream,
        pretrain_task and freeze_depth of the chosen arm (those not already in ``by``),
        ``selected_on`` (the validation column used), ``val_mean_diff`` (the chosen arm's
        mean paired validation difference), ``val_n_pairs`` (its pairs), ``n_candidates``
        (pretrained arms in the group) and ``n_compared`` (those with validation pairs). A
        group without any validation number has arm and selected_on None.

    Raises:
        ConfigError: If ``by`` names an unknown column or leaves out a pairing column.
        DataError: If there are no trials, columns are missing, or values break the contract.
    """
    by = list(by)
    unknown = [c for c in by if c not in _SELECTABLE]
    lacking = [c for c in _HEADLINE_BY if c not in by]
    if unknown or lacking:
        raise ConfigError(
            f"by must be drawn from {', '.join(_SELECTABLE)} and include "
            f"{', '.join(_HEADLINE_BY)}; got {', '.join(by) or 'nothing'}"
        )
    frame = prepare_trials(trials, ())
    tables = {
        column: paired_differences(trials, column)
        for column, _ in SELECTION_METRICS
        if column in trials.columns
    }
    chosen_columns = [
        c for c in ("arm", "upstream", "pretrain_task", "freeze_depth") if c not in by
    ]
    columns = [
        *by,
        *chosen_columns,
        "selected_on",
        "val_mean_diff",
        "val_n_pairs",
        "n_candidates",
        "n_compared",
    ]
    rows = []
    pretrained = frame[frame["init"] == "pretrained"]
    for key, group in pretrained.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, object] = dict(zip(by, key, strict=True))
        row.update({c: None for c in chosen_columns})
        row.update(
            selected_on=None,
            val_mean_diff=math.nan,
            val_n_pairs=0,
            n_candidates=int(group["arm"].nunique()),
            n_compared=0,
        )
        for column, higher_is_better in SELECTION_METRICS:
            if column not in tables:
                continue
            table = tables[column]
            mask = table["n_pairs"] > 0
            for c, value in zip(by, key, strict=True):
                mask &= table[c] == value
            candidates = table[mask]
            if candidates.empty:
                continue
            diff = candidates["mean_diff"]
            best = candidates.loc[diff.idxmax() if higher_is_better else diff.idxmin()]
            row.update({c: best[c] for c in chosen_columns})
            row.update(
                selected_on=column,
                val_mean_diff=float(best["mean_diff"]),
                val_n_pairs=int(best["n_pairs"]),
                n_compared=len(candidates),
            )
            break
        rows.append(row)
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(by, kind="mergesort").reset_index(drop=True)


def rankings(
    trials: pd.DataFrame, metric: str = "test_macro_auroc", alpha: float = 0.05
) -> dict[str, FriedmanResult]:
    """Rank architectures and arms across cells on ``metric``'s cell means (``summarize``).

    - ``"architectures"``: treatments the architectures, blocks the (downstream, arm,
      data_fraction) cells;
    - ``"arms"``: treatments scratch and every pretrained arm, blocks the (downstream,
      architecture, data_fraction) cells.

    Each is ``analysis.stats.friedman_ranks`` (higher is better; blocks lacking a treatment
    are dropped and counted): the Friedman test, average ranks, the Nemenyi critical
    difference at ``alpha`` and pairwise Wilcoxon tests with Holm's correction, ready for a
    critical-difference diagram (``avg_ranks``, ``cd``).

    Args:
        trials: The results table, one row per finished unit.
        metric: Column to rank on.
        alpha: Level of the critical difference.

    Returns:
        The results keyed ``"architectures"`` and ``"arms"``; a key is absent when there are
        fewer than two of its treatments.

    Raises:
        DataError: If there are no trials, columns are missing, or values break the contract.
    """
    return _rankings(summarize(trials, metric), alpha)


def _rankings(summary: pd.DataFrame, alpha: float = 0.05) -> dict[str, FriedmanResult]:
    out: dict[str, FriedmanResult] = {}
    for name, treatment, blocks in (
        ("architectures", "architecture", ["downstream", "arm", "data_fraction"]),
        ("arms", "arm", ["downstream", "architecture", "data_fraction"]),
    ):
        if summary[treatment].nunique() >= 2:
            out[name] = friedman_ranks(summary, blocks, treatment, "mean", alpha)
    return out


#: Columns of analysis.uncertainty.bootstrap_table merged into the primary metric's paired
#: table when a report has the bootstrap.
BOOTSTRAP_COLUMNS = ("boot_gain", "boot_low", "boot_high", "boot_p", "delong_p", "boot_note")


@dataclass
class ReportTables:
    """Everything a report shows, computed once (`report_tables`): per metric the summary,
    paired and data-efficiency tables; for the primary (first) metric the rankings, the
    choices made on validation and the epochs to match."""

    metrics: tuple[str, ...]
    summaries: dict[str, pd.DataFrame]
    paired: dict[str, pd.DataFrame]
    efficiency: dict[str, pd.DataFrame]
    ranked: dict[str, FriedmanResult]
    selected: dict[str, pd.DataFrame]
    matched: pd.DataFrame | None
    has_pretrained: bool

    @property
    def primary(self) -> str:
        return self.metrics[0]


def report_tables(
    trials: pd.DataFrame,
    metrics: Sequence[str] = ("test_macro_auroc", "test_macro_f1", "test_weighted_f1"),
    epochs: pd.DataFrame | None = None,
    bootstrap: pd.DataFrame | None = None,
) -> ReportTables:
    """Compute the tables of a report (see `write_report` for each).

    Args:
        trials: The results table, one row per finished unit.
        metrics: Metric columns to report; the first is the primary one.
        epochs: The per-epoch records, for epochs to match (None leaves that out).
        bootstrap: analysis.uncertainty.bootstrap_table of the primary metric: its
            BOOTSTRAP_COLUMNS are merged into the primary metric's paired table by cell.

    Raises:
        DataError: If there are no trials, columns are missing, or values break the contract.
        ConfigError: If ``metrics`` is empty.
    """
    metrics = tuple(metrics)
    if not metrics:
        raise ConfigError("metrics must name at least one metric column, got none")
    prepare_trials(trials, metrics)  # fail on every missing column at once
    summaries = {metric: summarize(trials, metric) for metric in metrics}
    paired = {metric: paired_differences(trials, metric) for metric in metrics}
    primary = metrics[0]
    if bootstrap is not None and len(paired[primary]):
        extra = [c for c in BOOTSTRAP_COLUMNS if c in bootstrap.columns]
        paired[primary] = paired[primary].merge(
            bootstrap[[*CELL, *extra]], on=CELL, how="left", validate="one_to_one"
        )
    has_pretrained = bool((summaries[primary]["init"] == "pretrained").any())
    matched = None
    if epochs is not None and has_pretrained:
        matched = epochs_to_match_scratch(trials, epochs)
    return ReportTables(
        metrics=metrics,
        summaries=summaries,
        paired=paired,
        efficiency={metric: data_efficiency(summaries[metric]) for metric in metrics},
        ranked=_rankings(summaries[primary]),
        selected={
            "arm": select_on_validation(trials, _HEADLINE_BY),
            "freeze": select_on_validation(trials, _FREEZE_BY),
        },
        matched=matched,
        has_pretrained=has_pretrained,
    )


def write_report(
    trials: pd.DataFrame,
    out_dir: str | Path,
    metrics: Sequence[str] = ("test_macro_auroc", "test_macro_f1", "test_weighted_f1"),
    epochs: pd.DataFrame | None = None,
    bootstrap: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Write the comparison figures and tables for a results table.

    Per metric: ``finetune_vs_scratch_<metric>.png`` and, when there are pretrained trials,
    ``freeze_depth_<metric>.png``. Once: ``summary.csv`` and ``paired.csv`` (summarize() and
    paired_differences() for every metric, stacked, told apart by their ``metric`` column;
    with ``bootstrap``, the primary metric's rows carry its interval and p-values too),
    and ``summary.md`` for the first, primary, metric: the methods, headlines (the arm and
    the freeze depth chosen on validation, see select_on_validation, with their test
    difference), the paired-difference table, the rankings, data efficiency, epochs to match
    and the per-arm summary. When there are pretrained trials: ``data_efficiency.csv``
    (analysis.curves.data_efficiency for every metric, stacked). For each ranking of
    rankings() on the primary metric (``architectures``, ``arms``; only those with two or
    more treatments): ``friedman_<what>.csv`` (one row per treatment: avg_rank best first,
    with the test, statistic, p, k, n_blocks, n_dropped, alpha and cd of the whole ranking)
    and ``friedman_<what>_pairwise.csv`` (its pairwise Wilcoxon tests with Holm's
    correction). With ``epochs`` and pretrained trials: ``epochs_to_match.csv``
    (analysis.curves.epochs_to_match_scratch) and ``epochs_to_match_summary.csv``
    (summarize_epochs_to_match).

    Args:
        trials: The results table, one row per finished unit.
        out_dir: Local directory to write into; created if missing, files in it overwritten.
        metrics: Metric columns to report; the first is the primary one.
        epochs: The per-epoch records (``analysis.load_epochs``), for epochs to match; None
            leaves that part out.
        bootstrap: as `report_tables`.

    Returns:
        The written paths, keyed by file name (e.g. ``"summary.md"``).

    Raises:
        DataError: If there are no trials, columns are missing, or values break the contract.
        ConfigError: If ``metrics`` is empty.
    """
    tables = report_tables(trials, metrics, epochs, bootstrap)
    return write_tables(tables, trials, out_dir)


def write_tables(
    tables: ReportTables, trials: pd.DataFrame, out_dir: str | Path
) -> dict[str, Path]:
    """Write the files of `write_report` from tables computed by `report_tables`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics, primary = tables.metrics, tables.primary
    summaries, paired = tables.summaries, tables.paired
    written: dict[str, Path] = {}

    def _keep(path: Path) -> None:
        written[path.name] = path

    for metric in metrics:
        path = out / f"finetune_vs_scratch_{metric}.png"
        _plot_finetune_vs_scratch(summaries[metric], metric, path)
        _keep(path)
        if (summaries[metric]["init"] == "pretrained").any():
            path = out / f"freeze_depth_{metric}.png"
            _plot_freeze_depth(summaries[metric], metric, path)
            _keep(path)

    path = out / "summary.csv"
    pd.concat(summaries.values(), ignore_index=True).to_csv(path, index=False)
    _keep(path)
    path = out / "paired.csv"
    pd.concat(paired.values(), ignore_index=True).to_csv(path, index=False)
    _keep(path)
    if tables.has_pretrained:
        path = out / "data_efficiency.csv"
        pd.concat(tables.efficiency.values(), ignore_index=True).to_csv(path, index=False)
        _keep(path)
    for what, result in tables.ranked.items():
        path = out / f"friedman_{what}.csv"
        _friedman_table(result, primary).to_csv(path, index=False)
        _keep(path)
        path = out / f"friedman_{what}_pairwise.csv"
        result.pairwise.assign(metric=primary).to_csv(path, index=False)
        _keep(path)
    if tables.matched is not None:
        path = out / "epochs_to_match.csv"
        tables.matched.to_csv(path, index=False)
        _keep(path)
        path = out / "epochs_to_match_summary.csv"
        summarize_epochs_to_match(tables.matched).to_csv(path, index=False)
        _keep(path)
    path = out / "summary.md"
    path.write_text(
        _markdown(
            trials,
            summaries[primary],
            paired[primary],
            primary,
            metrics,
            selected=tables.selected,
            ranked=tables.ranked,
            efficiency=tables.efficiency[primary],
            matched=tables.matched,
        ),
        encoding="utf-8",
    )
    _keep(path)
    return written


def _friedman_table(result: FriedmanResult, metric: str) -> pd.DataFrame:
    """One row per treatment, best first, with the ranking's numbers repeated on each."""
    return pd.DataFrame(
        {
            "metric": metric,
            "treatment": result.avg_ranks.index,
            "avg_rank": result.avg_ranks.to_numpy(),
            "test": result.test,
            "statistic": result.statistic,
            "p": result.p,
            "k": result.k,
            "n_blocks": result.n_blocks,
            "n_dropped": result.n_dropped,
            "alpha": result.alpha,
            "cd": result.cd,
        }
    )


# --- validation and statistics -------------------------------------------------------------


# --- figures -----------------------------------------------------------------------------


def metric_label(metric: str) -> str:
    return _METRIC_LABELS.get(metric, metric)


def _grid(
    summary: pd.DataFrame, width: float = 4.4, height: float = 3.3
) -> tuple[Figure, list[tuple[Axes, str, str]]]:
    """A figure with one panel per (architecture row, downstream column)."""
    downstreams = list(dict.fromkeys(summary["downstream"]))
    architectures = list(dict.fromkeys(summary["architecture"]))
    figure = Figure(
        figsize=(width * len(downstreams), height * len(architectures) + 1.0),
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(architectures), len(downstreams), squeeze=False)
    panels = [
        (axes[i][j], architecture, downstream)
        for i, architecture in enumerate(architectures)
        for j, downstream in enumerate(downstreams)
    ]
    return figure, panels


def _error(rows: pd.DataFrame) -> np.ndarray:
    """Asymmetric error-bar lengths; zero where the interval is undefined (n < 2)."""
    below = (rows["mean"] - rows["ci_low"]).to_numpy(dtype=float)
    above = (rows["ci_high"] - rows["mean"]).to_numpy(dtype=float)
    return np.nan_to_num(np.vstack([below, above]), nan=0.0)


def _log_ticks(ax: Axes, fractions: Sequence[float]) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(list(fractions), [f"{f:g}" for f in fractions])
    if len(fractions) == 1:  # a log axis around one point needs explicit room
        ax.set_xlim(fractions[0] / 2, fractions[0] * 2)


def _plot_finetune_vs_scratch(summary: pd.DataFrame, metric: str, path: Path) -> None:
    figure, panels = _grid(summary)
    arms = [arm for arm in dict.fromkeys(summary["arm"]) if arm != "scratch"]
    colour = {arm: _CB_COLOURS[i % len(_CB_COLOURS)] for i, arm in enumerate(arms)}
    marker = {arm: MARKERS[i % len(MARKERS)] for i, arm in enumerate(arms)}
    # Dodge the pretrained arms a little along the log axis so their error bars do not overlap.
    dodge = {arm: 10 ** (0.012 * (i - (len(arms) - 1) / 2)) for i, arm in enumerate(arms)}
    fractions = sorted(summary["data_fraction"].unique())
    handles: dict[str, object] = {}
    for ax, architecture, downstream in panels:
        cell = summary[
            (summary["architecture"] == architecture) & (summary["downstream"] == downstream)
        ]
        scratch = cell[(cell["arm"] == "scratch") & cell["mean"].notna()]
        if len(scratch):
            x = scratch["data_fraction"].to_numpy(dtype=float)
            ax.fill_between(
                x, scratch["ci_low"], scratch["ci_high"], color="black", alpha=0.12, lw=0
            )
            (line,) = ax.plot(x, scratch["mean"], color="black", linestyle="--", marker="s", lw=1.8)
            handles.setdefault("scratch", line)
        for arm in arms:
            rows = cell[(cell["arm"] == arm) & cell["mean"].notna()]
            if rows.empty:
                continue
            container = ax.errorbar(
                rows["data_fraction"].to_numpy(dtype=float) * dodge[arm],
                rows["mean"],
                yerr=_error(rows),
                color=colour[arm],
                marker=marker[arm],
                ms=5,
                lw=1.5,
                capsize=3,
            )
            handles.setdefault(arm, container)
        _log_ticks(ax, fractions)
        ax.set_title(f"{dataset_words(downstream)}\n{architecture_words(architecture)}")
        ax.set_xlabel("share of the downstream training set")
        ax.set_ylabel(f"{metric_label(metric)} (mean, {CONFIDENCE:.0%} CI)")
        ax.grid(True, alpha=0.3)
    if handles:
        figure.legend(
            list(handles.values()),
            [_arm_legend(summary, arm) for arm in handles],
            loc="outside lower center",
            ncols=min(2, len(handles)),
            fontsize=9.5,
        )
    figure.suptitle(f"Fine-tuned vs. from scratch: test {metric_label(metric)}")
    figure.savefig(path, dpi=DPI, bbox_inches="tight")  # keep the outside legend


def _plot_freeze_depth(summary: pd.DataFrame, metric: str, path: Path) -> None:
    figure, panels = _grid(summary)
    fractions = sorted(summary["data_fraction"].unique())
    colour = {f: _CB_COLOURS[i % len(_CB_COLOURS)] for i, f in enumerate(fractions)}
    pretrained = summary[summary["init"] == "pretrained"]
    sources = list(
        dict.fromkeys(zip(pretrained["upstream"], pretrained["pretrain_task"], strict=True))
    )
    styles = ["-", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1))]
    markers = ["o", "^", "D", "v", "P", "X"]
    depths = sorted(pretrained["freeze_depth"].unique())
    for ax, architecture, downstream in panels:
        cell = summary[
            (summary["architecture"] == architecture) & (summary["downstream"] == downstream)
        ]
        for k, fraction in enumerate(fractions):
            at_fraction = cell[(cell["data_fraction"] == fraction) & cell["mean"].notna()]
            scratch = at_fraction[at_fraction["arm"] == "scratch"]
            for _, row in scratch.iterrows():
                ax.axhline(row["mean"], color=colour[fraction], linestyle=":", lw=1.4)
            for s, (upstream, task) in enumerate(sources):
                rows = at_fraction[
                    (at_fraction["init"] == "pretrained")
                    & (at_fraction["upstream"] == upstream)
                    & (at_fraction["pretrain_task"] == task)
                ].sort_values("freeze_depth")
                if rows.empty:
                    continue
                offset = 0.06 * (k - (len(fractions) - 1) / 2)  # keep error bars apart
                ax.errorbar(
                    rows["freeze_depth"].to_numpy(dtype=float) + offset,
                    rows["mean"],
                    yerr=_error(rows),
                    color=colour[fraction],
                    linestyle=styles[s % len(styles)],
                    marker=markers[s % len(markers)],
                    ms=4,
                    lw=1.3,
                    capsize=3,
                )
        ax.set_xticks([int(d) for d in depths])
        ax.set_title(f"{dataset_words(downstream)}\n{architecture_words(architecture)}")
        ax.set_xlabel(_freeze_axis_words(cell))
        ax.set_ylabel(f"{metric_label(metric)} (mean, {CONFIDENCE:.0%} CI)")
        ax.grid(True, alpha=0.3)
    handles = [
        Line2D([], [], color=colour[f], lw=2, label=f"{f:.0%} of the training set")
        for f in fractions
    ]
    handles += [
        Line2D(
            [],
            [],
            color="grey",
            linestyle=styles[s % len(styles)],
            marker=markers[s % len(markers)],
            label=arm_words(upstream, task),
        )
        for s, (upstream, task) in enumerate(sources)
    ]
    handles.append(
        Line2D([], [], color="grey", linestyle=":", label="scratch (colour = same fraction)")
    )
    figure.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(4, len(handles)),
        fontsize=9.5,
    )
    figure.suptitle(f"Freeze depth: test {metric_label(metric)}, scratch as dotted reference")
    figure.savefig(path, dpi=DPI, bbox_inches="tight")  # keep the outside legend


def _freeze_axis_words(cell: pd.DataFrame) -> str:
    """The freeze-depth axis in words, saying what trains at the deepest depth shown."""
    words = "freeze depth k (the first k stages frozen; 0 = full fine-tune)"
    pretrained = cell[cell["init"] == "pretrained"]
    if pretrained.empty or "trained_layers" not in pretrained:
        return words
    deepest = pretrained[pretrained["freeze_depth"] == pretrained["freeze_depth"].max()]
    layers = deepest["trained_layers"].dropna()
    if layers.empty:
        return words
    return f"{words}\nat k={int(deepest['freeze_depth'].iloc[0])} only {layers.iloc[0]} train"


def _arm_legend(summary: pd.DataFrame, arm: str) -> str:
    """An arm of the summary table in words, for a legend."""
    if arm == "scratch":
        return "from scratch"
    row = summary[summary["arm"] == arm].iloc[0]
    return arm_words(row["upstream"], row["pretrain_task"], row["freeze_depth"])


# --- Markdown ------------------------------------------------------------------------------


def _fmt(value: object, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format(float(value), spec)
    return str(value).replace("|", "\\|")


def _markdown_table(table: pd.DataFrame, formats: dict[str, str]) -> str:
    columns = list(formats)
    lines = [
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c], formats[c]) for c in columns) + " |")
    return "\n".join(lines)


def _arm_words(row: pd.Series) -> str:
    layers = row.get("trained_layers")
    trains = f"; trains {layers}" if isinstance(layers, str) and layers else ""
    return (
        f"pretrained ({row['upstream']}/{row['pretrain_task']}, "
        f"freeze={row['freeze_depth']}{trains})"
    )


def _cannot_reach(row: pd.Series) -> str:
    """The flag of a paired row whose test cannot reach SIGNIFICANCE; "" when it can."""
    if not row["min_p"] > SIGNIFICANCE:
        return ""
    zeros = row["n_pairs"] - row["n_nonzero"]
    pairs = "non-zero pairs" if zeros else "pairs"
    return f"cannot reach p < {SIGNIFICANCE:g} with {row['n_nonzero']} {pairs}"


def _p_words(row: pd.Series) -> str:
    """Wilcoxon p, its flag and the adjusted p-values of a paired row, in words."""
    if math.isnan(row["wilcoxon_p"]):
        words = "Wilcoxon p = n/a"
    else:
        words = (
            f"Wilcoxon p = {row['wilcoxon_p']:.3g}, Holm p = {row['holm_p']:.3g}, "
            f"BH p = {row['bh_p']:.3g} of {row['n_tests']} tests"
        )
    flag = _cannot_reach(row)
    return f"{words}; {flag}" if flag else words


def _headline(row: pd.Series, metric: str) -> str:
    """One readable sentence for a paired_differences() row."""
    if row["n_pairs"] == 0:
        return (
            f"at data fraction {row['data_fraction']:g} on {row['downstream']} "
            f"({row['architecture']}), {_arm_words(row)}: no scratch partner yet "
            f"({row['n_unpaired']} unpaired trials)"
        )
    interval = (
        f"[{CONFIDENCE:.0%} CI {row['ci_low']:.3f}, {row['ci_high']:.3f}]"
        if row["n_pairs"] >= 2
        else "[no CI: one pair]"
    )
    gain = "" if math.isnan(row["relative_gain"]) else f" ({row['relative_gain']:+.1%} of scratch)"
    return (
        f"at data fraction {row['data_fraction']:g} on {row['downstream']} "
        f"({row['architecture']}), {_arm_words(row)} - scratch = "
        f"{row['mean_diff']:+.3f} {metric_label(metric)}{gain} {interval}, "
        f"{row['n_wins']}/{row['n_pairs']} pairs won ({_p_words(row)})"
    )


def _chosen_words(choice: pd.Series, what: str) -> str:
    """How a select_on_validation() row was chosen, e.g. "chosen on validation AUROC"."""
    column = choice["selected_on"]
    of = f" of {choice['n_compared']} {what}" if choice["n_compared"] > 1 else " (the only one)"
    return (
        f"chosen on validation {_SELECTION_WORDS[column]}{of}: validation "
        f"{_SELECTION_WORDS[column]} - scratch = {choice['val_mean_diff']:+.3f}"
    )


def _headline_lines(
    selection: pd.DataFrame,
    by: Sequence[str],
    paired: pd.DataFrame,
    metric: str,
    what: str,
    only_choices: bool,
) -> list[str]:
    """One line per select_on_validation() group: the chosen arm's test difference."""
    lines = []
    for _, choice in selection.iterrows():
        if only_choices and choice["n_candidates"] < 2:
            continue
        if pd.isna(choice["selected_on"]):
            keys = ", ".join(f"{c} {_fmt(choice[c], 'g')}" for c in by)
            lines.append(f"- {keys}: no validation number (val_macro_auroc, val_loss): no choice")
            continue
        mask = np.ones(len(paired), dtype=bool)
        for c in CELL:
            mask &= (paired[c] == choice[c]).to_numpy()
        row = paired[mask].iloc[0]
        lines.append(f"- {_headline(row, metric)} - {_chosen_words(choice, what)}")
    return lines


def _paired_display(paired: pd.DataFrame) -> pd.DataFrame:
    """The paired table with the p-value cell carrying its cannot-reach flag."""
    cells = []
    for _, row in paired.iterrows():
        p, flag = _fmt(row["wilcoxon_p"], ".3g"), _cannot_reach(row)
        cells.append(f"{p} ({flag})" if flag else p)
    return paired.assign(wilcoxon_p=cells)


def _ranking_lines(name: str, result: FriedmanResult) -> list[str]:
    """A ranking of rankings() in words and tables."""
    what = {"architectures": "architecture", "arms": "arm"}[name]
    blocks = {
        "architectures": "(downstream, arm, data fraction)",
        "arms": "(downstream, architecture, data fraction)",
    }[name]
    dropped = (
        f"; {result.n_dropped} block(s) dropped for lacking a {what}" if result.n_dropped else ""
    )
    p = "n/a" if math.isnan(result.p) else f"{result.p:.3g}"
    if result.test == "friedman":
        test = f"Friedman chi2 = {_fmt(result.statistic, '.3f')}, p = {p}"
    else:
        test = (
            f"With two {name} the Friedman test does not apply (it needs three): two-sided "
            f"Wilcoxon signed-rank test on the block differences instead, p = {p}"
        )
    lines = [
        f"### {name.capitalize()} (blocks: {blocks} cells; `friedman_{name}.csv`)",
        "",
        f"{result.k} {name} over {result.n_blocks} complete block(s){dropped}. {test}. "
        f"Critical difference (Nemenyi, alpha {result.alpha:g}) = {_fmt(result.cd, '.3f')} "
        "of average rank (rank 1 = best).",
        "",
        _markdown_table(
            pd.DataFrame({what: result.avg_ranks.index, "avg_rank": result.avg_ranks.to_numpy()}),
            {what: "", "avg_rank": ".2f"},
        ),
        "",
    ]
    if len(result.pairwise):
        lines += [
            "Pairwise (a ranked above b): Wilcoxon signed-rank over the complete blocks, Holm "
            "over the pairs; beyond_cd: average ranks further apart than the critical "
            "difference.",
            "",
            _markdown_table(
                result.pairwise.assign(
                    beyond_cd=result.pairwise["beyond_cd"].map({True: "yes", False: "no"})
                ),
                {
                    "a": "",
                    "b": "",
                    "rank_diff": ".2f",
                    "beyond_cd": "",
                    "wilcoxon_p": ".3g",
                    "holm_p": ".3g",
                },
            ),
            "",
        ]
    return lines


def _efficiency_lines(efficiency: pd.DataFrame) -> list[str]:
    if efficiency.empty:
        return ["No pretrained cell with a scratch curve to compare against.", ""]
    shown = efficiency.copy()
    shown["scratch_fraction_needed"] = [
        "not reached within the measured fractions"
        if not row["reached"]
        else (
            f"<= {row['scratch_fraction_needed']:g} (its smallest)"
            if row["at_smallest_fraction"]
            else f"{row['scratch_fraction_needed']:.3g}"
        )
        for _, row in efficiency.iterrows()
    ]
    shown["data_multiplier"] = [
        "n/a"
        if not row["reached"]
        else f"{'<= ' if row['at_smallest_fraction'] else ''}{row['data_multiplier']:.2f}x"
        for _, row in efficiency.iterrows()
    ]
    return [
        _markdown_table(
            shown,
            {
                "downstream": "",
                "architecture": "",
                "arm": "",
                "data_fraction": "g",
                "mean": ".3f",
                "scratch_fraction_needed": "",
                "data_multiplier": "",
            },
        ),
        "",
    ]


def _matched_lines(matched: pd.DataFrame) -> list[str]:
    summary = summarize_epochs_to_match(matched)
    if summary.empty:
        return ["No fine-tuned trial has a scratch partner with a learning curve.", ""]
    return [
        "Epochs until a fine-tuned model's validation loss is at or below its scratch "
        "partner's best; the median is over the trials that got there, `n_never` counts "
        "those that did not (`epochs_to_match.csv` has every trial).",
        "",
        _markdown_table(
            summary,
            {
                "downstream": "",
                "architecture": "",
                "arm": "",
                "n_trials": "",
                "n_matched": "",
                "n_never": "",
                "median_epochs_to_match": "g",
                "median_scratch_best_epoch": "g",
            },
        ),
        "",
    ]


def _methods(metric: str) -> list[str]:
    """The methods paragraph: what every number of the report is."""
    floor = ", ".join(f"{n}: {min_wilcoxon_p(n):.3g}" for n in range(3, 7))
    return [
        "## Methods",
        "",
        f"- Intervals are {CONFIDENCE:.0%} t-intervals over repeats (`ci_low`, `ci_high`: "
        "they leave out test-set sampling). Where the units' stored test predictions were "
        f"read, `boot_low`/`boot_high` is the {CONFIDENCE:.0%} paired bootstrap interval of "
        "the gain that resamples repeats and test patients together, `boot_p` its two-sided "
        "p-value, and `delong_p` DeLong's test of the paired AUROCs where one repeat pair is "
        "compared (`analysis.uncertainty`).",
        "- p-values: two-sided Wilcoxon signed-rank test on the paired differences, zero "
        "differences dropped. Its null distribution is exact (SciPy's exact signed-rank "
        "distribution; with tied differences and at most 13 pairs, all 2^n sign flips) and "
        "the normal approximation only beyond that (`p_method` in `paired.csv`).",
        f"- With n non-zero pairs the smallest attainable p is 2 / 2^n ({floor}): below 6 "
        f"pairs a cell cannot reach p < {SIGNIFICANCE:g} whatever the effect. Such cells are "
        f'flagged "cannot reach p < {SIGNIFICANCE:g} with n pairs"; their p-values say '
        "nothing about the effect, read their intervals and effect sizes.",
        "- Multiple comparisons: the paired table of one metric is one family (`n_tests` "
        "tests: every cell with a p-value). `holm_p` is Holm's adjustment (family-wise "
        "error rate), `bh_p` Benjamini-Hochberg's (false discovery rate).",
        "- Effect sizes: `relative_gain` = mean difference / scratch mean over the same "
        "pairs; `cohens_dz` = mean difference / std of the differences (paired Cohen's d); "
        "`rank_biserial` = (W+ - W-) / (W+ + W-) over the non-zero differences ranked by |d| "
        "(matched-pairs rank-biserial correlation, -1 to 1).",
        "- Headlines are chosen on validation, never on test: per cell, the pretrained arm "
        "(and per pretraining source, the freeze depth) with the best mean paired "
        "validation difference (`val_macro_auroc` where the trials have it, else "
        "`val_loss`), then that arm's test difference is reported.",
        f"- Rankings across cells (`{metric}` cell means, higher is better): Friedman test "
        "with average ranks and the Nemenyi critical difference (Demsar 2006), and pairwise "
        "Wilcoxon signed-rank tests with Holm's correction (Benavoli et al. 2016); blocks "
        "lacking a treatment are dropped and counted.",
        "- Data efficiency: the scratch fraction that reaches a pretrained cell's mean, "
        "interpolated linearly in log(fraction) between measured scratch fractions after "
        "making the scratch means monotone (running maximum); never extrapolated.",
        "",
    ]


def _markdown(
    trials: pd.DataFrame,
    summary: pd.DataFrame,
    paired: pd.DataFrame,
    metric: str,
    metrics: Sequence[str],
    *,
    selected: dict[str, pd.DataFrame],
    ranked: dict[str, FriedmanResult],
    efficiency: pd.DataFrame,
    matched: pd.DataFrame | None,
) -> str:
    n_nan = int(summary["n_nan"].sum())
    arms = [a for a in dict.fromkeys(summary["arm"]) if a != "scratch"]
    fractions = sorted(summary["data_fraction"].unique())
    lines = [
        "# Fine-tuned vs. from scratch",
        "",
        f"- {len(trials)} finished trials; downstream: "
        f"{', '.join(dict.fromkeys(summary['downstream']))}; architectures: "
        f"{', '.join(dict.fromkeys(summary['architecture']))}; data fractions: "
        f"{', '.join(f'{f:g}' for f in fractions)}; {len(arms)} pretrained arm(s) + scratch.",
        f"- Primary metric: `{metric}` ({metric_label(metric)}). Trials without a value for it: "
        f"{n_nan} (left out of every statistic).",
        f"- Pairs: a pretrained and a scratch trial with the same architecture, downstream, "
        f"data fraction and repeat (same training subset). Unpaired trials: "
        f"{int(paired['n_unpaired'].sum()) if len(paired) else 0} (not used).",
        f"- Every metric ({', '.join(f'`{m}`' for m in metrics)}) is in `summary.csv` and "
        "`paired.csv`; figures: `finetune_vs_scratch_<metric>.png`, "
        "`freeze_depth_<metric>.png`.",
        "",
        *_methods(metric),
        "## Headlines",
        "",
    ]
    usable = paired[paired["n_pairs"] > 0]
    if usable.empty:
        lines.append("No pretrained trial has a scratch partner yet: no paired comparison.")
    else:
        lines += [
            "Per downstream, architecture and data fraction, the pretrained arm with the best "
            "mean paired validation difference; its test difference is what is reported.",
            "",
            *_headline_lines(selected["arm"], _HEADLINE_BY, paired, metric, "arms", False),
        ]
        depth_lines = _headline_lines(
            selected["freeze"], _FREEZE_BY, paired, metric, "depths", only_choices=True
        )
        if depth_lines:
            lines += [
                "",
                "### Best freeze depth",
                "",
                "Per downstream, architecture, pretraining source and data fraction, the "
                "freeze depth with the best mean paired validation difference.",
                "",
                *depth_lines,
            ]
    if not arms:
        lines += ["", "No pretrained trials yet: no freeze-depth figure."]
    lines += [
        "",
        f"## Paired differences, pretrained - scratch ({metric_label(metric)})",
        "",
        _markdown_table(
            _paired_display(paired),
            {
                "downstream": "",
                "architecture": "",
                "arm": "",
                "data_fraction": "g",
                "n_pairs": "",
                "n_unpaired": "",
                "n_nan": "",
                "mean_diff": "+.3f",
                "ci_low": "+.3f",
                "ci_high": "+.3f",
                **(
                    {"boot_low": "+.3f", "boot_high": "+.3f", "boot_p": ".3g"}
                    if "boot_low" in paired
                    else {}
                ),
                **({"delong_p": ".3g"} if "delong_p" in paired else {}),
                "relative_gain": "+.1%",
                "cohens_dz": "+.2f",
                "rank_biserial": "+.2f",
                "wilcoxon_p": "",
                "holm_p": ".3g",
                "bh_p": ".3g",
                "n_wins": "",
                "win_fraction": ".2f",
            },
        )
        if len(paired)
        else "(no pretrained trials)",
        "",
    ]
    if ranked:
        lines += ["## Rankings across cells", ""]
        for name, result in ranked.items():
            lines += _ranking_lines(name, result)
    if arms:
        lines += [
            f"## Data efficiency ({metric_label(metric)})",
            "",
            "The scratch data fraction that reaches each pretrained cell's mean "
            "(`data_efficiency.csv`); the multiplier is that fraction over the cell's own.",
            "",
            *_efficiency_lines(efficiency),
        ]
    if matched is not None:
        lines += ["## Epochs to match scratch", "", *_matched_lines(matched)]
    lines += [
        f"## Per arm, mean over repeats ({metric_label(metric)})",
        "",
        _markdown_table(
            summary,
            {
                "downstream": "",
                "architecture": "",
                "arm": "",
                "data_fraction": "g",
                "n": "",
                "n_nan": "",
                "mean": ".3f",
                "std": ".3f",
                "ci_low": ".3f",
                "ci_high": ".3f",
            },
        ),
        "",
    ]
    return "\n".join(lines)
