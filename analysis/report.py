"""Fine-tuned vs. from-scratch comparisons from the results table: statistics, figures, tables.

Reads only the trials table (one row per finished unit, the columns of the results contract)
and never imports torch, ray or the training and sweep layers, so a report can be made on a
laptop from a copy of the store.

An *arm* is what a trial's model started from: ``"scratch"``, or
``"pretrained:<upstream>/<pretrain_task>/freeze=<k>"``. A *cell* is one arm on one
(downstream, architecture, data_fraction); its trials are the repeats. A pretrained and a
scratch trial with the same (architecture, downstream, data_fraction, repeat) trained on the
identical subset, so the comparisons here are paired on the repeat.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so
nothing global (backend, open-figure registry) is touched and no display is needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter, NullLocator
from scipy import stats

from study.errors import ConfigError, DataError

__all__ = ["REQUIRED_COLUMNS", "arm_label", "paired_differences", "summarize", "write_report"]

# The axes every analysis here needs; a metric column is required on top of these.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "unit_id",
    "architecture",
    "init",
    "upstream",
    "pretrain_task",
    "downstream",
    "freeze_depth",
    "data_fraction",
    "repeat",
)
CONFIDENCE = 0.95  # of every interval reported here (two-sided t-interval)
_INITS = ("pretrained", "scratch")
_CELL = ["downstream", "architecture", "arm", "data_fraction"]
_PAIR_KEY = ["architecture", "downstream", "data_fraction"]  # + repeat
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
    "metric",
    "downstream",
    "architecture",
    "arm",
    "upstream",
    "pretrain_task",
    "freeze_depth",
    "data_fraction",
    "n_pairs",
    "n_unpaired",
    "n_nan",
    "mean_diff",
    "std_diff",
    "ci_low",
    "ci_high",
    "wilcoxon_p",
    "n_wins",
    "win_fraction",
]


def arm_label(init: str, upstream: object, pretrain_task: object, freeze_depth: object) -> str:
    """The arm a trial belongs to.

    Args:
        init: ``"pretrained"`` or ``"scratch"``.
        upstream: Upstream dataset (ignored for scratch).
        pretrain_task: Pretext task (ignored for scratch).
        freeze_depth: Number of frozen stages (ignored for scratch).

    Returns:
        ``"scratch"`` or ``"pretrained:<upstream>/<pretrain_task>/freeze=<k>"``.
    """
    if init == "scratch":
        return "scratch"
    return f"pretrained:{upstream}/{pretrain_task}/freeze={int(freeze_depth)}"


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
    frame = _prepare(trials, (metric,))
    rows = []
    for (downstream, architecture, arm, fraction), group in frame.groupby(_CELL, sort=False):
        values = group[metric].to_numpy(dtype=float)
        finite = values[~np.isnan(values)]
        mean, std, low, high = _mean_and_interval(finite)
        first = group.iloc[0]
        rows.append(
            {
                "metric": metric,
                "downstream": downstream,
                "architecture": architecture,
                "arm": arm,
                "init": first["init"],
                "upstream": first["upstream"],
                "pretrain_task": first["pretrain_task"],
                "freeze_depth": int(first["freeze_depth"]),
                # what trained in this arm (rows written before the column: unknown)
                "trained_layers": first.get("trained_layers"),
                "data_fraction": float(fraction),
                "n": int(finite.size),
                "n_nan": int(values.size - finite.size),
                "mean": mean,
                "std": std,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return _sorted(pd.DataFrame(rows, columns=_SUMMARY_COLUMNS))


def paired_differences(trials: pd.DataFrame, metric: str = "test_macro_auroc") -> pd.DataFrame:
    """Pretrained minus scratch, paired on the repeat, for every pretrained cell.

    A pretrained trial is paired with the scratch trial of the same (architecture, downstream,
    data_fraction, repeat): both trained on the identical subset. Trials of either side with
    no partner are not used and are counted in ``n_unpaired``; pairs where either side's
    metric is NaN are not used and are counted in ``n_nan``. On the ``n_pairs`` differences
    that remain: ``mean_diff``, ``std_diff`` (ddof=1), the 95% t-interval of the mean
    difference (NaN when ``n_pairs < 2``), the two-sided Wilcoxon signed-rank p-value (zero
    differences dropped, as ``zero_method="wilcox"``; NaN when fewer than 2 differences are
    non-zero, which includes all pairs being equal), ``n_wins`` (pairs where pretrained is
    strictly higher; ties are not wins) and ``win_fraction = n_wins / n_pairs``.

    Args:
        trials: The results table, one row per finished unit.
        metric: Column to compare; higher is taken to be better for the win count.

    Returns:
        One row per pretrained (downstream, architecture, arm, data_fraction), with the columns
        metric, downstream, architecture, arm, upstream, pretrain_task, freeze_depth,
        data_fraction, n_pairs, n_unpaired, n_nan, mean_diff, std_diff, ci_low, ci_high,
        wilcoxon_p, n_wins, win_fraction. A cell with no scratch counterpart at all has a row
        with ``n_pairs == 0`` and NaN statistics.

    Raises:
        DataError: If there are no trials, columns are missing, or values break the contract.
    """
    frame = _prepare(trials, (metric,))
    scratch_by_cell = {
        key: group.set_index("repeat")[metric]
        for key, group in frame[frame["init"] == "scratch"].groupby(_PAIR_KEY, sort=False)
    }
    empty = pd.Series(dtype=float, index=pd.Index([], name="repeat"))
    rows = []
    pretrained = frame[frame["init"] == "pretrained"]
    for (downstream, architecture, arm, fraction), group in pretrained.groupby(_CELL, sort=False):
        ours = group.set_index("repeat")[metric]
        theirs = scratch_by_cell.get((architecture, downstream, fraction), empty)
        common = ours.index.intersection(theirs.index)
        n_unpaired = len(ours) + len(theirs) - 2 * len(common)
        diffs = (ours.loc[common] - theirs.loc[common]).to_numpy(dtype=float)
        finite = diffs[~np.isnan(diffs)]
        mean, std, low, high = _mean_and_interval(finite)
        n_wins = int(np.count_nonzero(finite > 0))
        first = group.iloc[0]
        rows.append(
            {
                "metric": metric,
                "downstream": downstream,
                "architecture": architecture,
                "arm": arm,
                "upstream": first["upstream"],
                "pretrain_task": first["pretrain_task"],
                "freeze_depth": int(first["freeze_depth"]),
                "data_fraction": float(fraction),
                "n_pairs": int(finite.size),
                "n_unpaired": int(n_unpaired),
                "n_nan": int(diffs.size - finite.size),
                "mean_diff": mean,
                "std_diff": std,
                "ci_low": low,
                "ci_high": high,
                "wilcoxon_p": _wilcoxon_p(finite),
                "n_wins": n_wins,
                "win_fraction": n_wins / finite.size if finite.size else math.nan,
            }
        )
    return _sorted(pd.DataFrame(rows, columns=_PAIRED_COLUMNS))


def write_report(
    trials: pd.DataFrame,
    out_dir: str | Path,
    metrics: Sequence[str] = ("test_macro_auroc", "test_macro_f1", "test_weighted_f1"),
) -> dict[str, Path]:
    """Write the comparison figures and tables for a results table.

    Per metric: ``finetune_vs_scratch_<metric>.png`` and, when there are pretrained trials,
    ``freeze_depth_<metric>.png``. Once: ``summary.csv`` and ``paired.csv`` (summarize() and
    paired_differences() for every metric, stacked, told apart by their ``metric`` column)
    and ``summary.md`` (headlines, the paired-difference table and the summary table for the
    first, primary, metric).

    Args:
        trials: The results table, one row per finished unit.
        out_dir: Local directory to write into; created if missing, files in it overwritten.
        metrics: Metric columns to report; the first is the primary one.

    Returns:
        The written paths, keyed by file name (e.g. ``"summary.md"``).

    Raises:
        DataError: If there are no trials, columns are missing, or values break the contract.
        ConfigError: If ``metrics`` is empty.
    """
    metrics = tuple(metrics)
    if not metrics:
        raise ConfigError("metrics must name at least one metric column, got none")
    _prepare(trials, metrics)  # fail on every missing column at once, before writing anything
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = {metric: summarize(trials, metric) for metric in metrics}
    paired = {metric: paired_differences(trials, metric) for metric in metrics}

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
    primary = metrics[0]
    path = out / "summary.md"
    path.write_text(
        _markdown(trials, summaries[primary], paired[primary], primary, metrics), encoding="utf-8"
    )
    _keep(path)
    return written


# --- validation and statistics -------------------------------------------------------------


def _prepare(trials: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
    """Check the table against the contract; return a copy with an ``arm`` column."""
    metrics = list(metrics)
    if not isinstance(trials, pd.DataFrame):
        raise DataError(f"trials must be a pandas DataFrame, got {type(trials).__name__}")
    if len(trials) == 0:
        raise DataError("no finished trials: the results table is empty, nothing to report")
    needed = list(REQUIRED_COLUMNS) + [m for m in metrics if m not in REQUIRED_COLUMNS]
    missing = [column for column in needed if column not in trials.columns]
    if missing:
        raise DataError(
            f"the results table lacks required column(s) {', '.join(missing)}; "
            f"it has {', '.join(map(str, trials.columns))}"
        )
    frame = trials.copy()

    bad_init = sorted(set(frame["init"].astype(str)) - set(_INITS))
    if bad_init:
        raise DataError(f"init must be one of {', '.join(_INITS)}, got {', '.join(bad_init)}")
    pretrained = frame["init"] == "pretrained"
    for column in ("upstream", "pretrain_task", "freeze_depth"):
        nulls = frame.loc[pretrained & frame[column].isna(), "unit_id"]
        if len(nulls):
            raise DataError(
                f"{column} must be set for pretrained trials; {len(nulls)} lack it, "
                f"e.g. unit {nulls.iloc[0]}"
            )
    for column in ("architecture", "downstream", "data_fraction", "repeat"):
        nulls = frame.loc[frame[column].isna(), "unit_id"]
        if len(nulls):
            raise DataError(
                f"{column} must be set for every trial; {len(nulls)} lack it, "
                f"e.g. unit {nulls.iloc[0]}"
            )
    frame["freeze_depth"] = frame["freeze_depth"].fillna(0).astype(int)
    frame["data_fraction"] = frame["data_fraction"].astype(float)
    outside = frame.loc[~frame["data_fraction"].between(0, 1, inclusive="right"), "data_fraction"]
    if len(outside):
        raise DataError(f"data_fraction must be in (0, 1], got {outside.iloc[0]!r}")
    for metric in metrics:
        try:
            frame[metric] = pd.to_numeric(frame[metric]).astype(float)
        except (TypeError, ValueError) as error:
            raise DataError(f"metric column {metric} must be numeric: {error}") from error

    frame["arm"] = [
        arm_label(*row)
        for row in zip(
            frame["init"],
            frame["upstream"],
            frame["pretrain_task"],
            frame["freeze_depth"],
            strict=True,
        )
    ]
    duplicated = frame.duplicated([*_CELL, "repeat"], keep=False)
    if duplicated.any():
        clash = frame[duplicated].sort_values([*_CELL, "repeat"]).iloc[0]
        units = frame.loc[
            duplicated
            & (frame["arm"] == clash["arm"])
            & (frame["downstream"] == clash["downstream"])
            & (frame["architecture"] == clash["architecture"])
            & (frame["data_fraction"] == clash["data_fraction"])
            & (frame["repeat"] == clash["repeat"]),
            "unit_id",
        ]
        raise DataError(
            "each (downstream, architecture, arm, data_fraction, repeat) must hold one trial; "
            f"{int(duplicated.sum())} trials share one with another, e.g. units "
            f"{', '.join(map(str, units))} at ({clash['downstream']}, {clash['architecture']}, "
            f"{clash['arm']}, {clash['data_fraction']:g}, repeat {clash['repeat']}); "
            "filter the table to one protocol before reporting"
        )
    return frame


def _mean_and_interval(values: np.ndarray) -> tuple[float, float, float, float]:
    """Mean, sample std and two-sided t-interval of the mean; NaN where undefined (n < 2)."""
    n = values.size
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = float(values.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def _wilcoxon_p(diffs: np.ndarray) -> float:
    """Two-sided signed-rank p-value with zeros dropped; NaN below 2 non-zero differences."""
    nonzero = diffs[diffs != 0]
    if nonzero.size < 2:
        return math.nan
    return float(stats.wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided").pvalue)


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    """Downstream, architecture, scratch before pretrained arms (by source, depth), fraction."""
    if table.empty:
        return table.reset_index(drop=True)
    order = table.assign(
        _scratch_last=table["arm"] != "scratch",
        _upstream=table["upstream"].astype(object).where(table["upstream"].notna(), ""),
        _task=table["pretrain_task"].astype(object).where(table["pretrain_task"].notna(), ""),
    ).sort_values(
        [
            "downstream",
            "architecture",
            "_scratch_last",
            "_upstream",
            "_task",
            "freeze_depth",
            "data_fraction",
        ],
        kind="mergesort",
    )
    return table.loc[order.index].reset_index(drop=True)


# --- figures -----------------------------------------------------------------------------


def _label(metric: str) -> str:
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
    colours = _colours(len(arms), "tab10" if len(arms) <= 10 else "viridis")
    colour = dict(zip(arms, colours, strict=True))
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
                marker="o",
                ms=4,
                lw=1.3,
                capsize=3,
            )
            handles.setdefault(arm, container)
        _log_ticks(ax, fractions)
        ax.set_title(f"{downstream} - {architecture}")
        ax.set_xlabel("training data fraction")
        ax.set_ylabel(f"{_label(metric)} (mean, {CONFIDENCE:.0%} CI)")
        ax.grid(True, alpha=0.3)
    if handles:
        figure.legend(
            list(handles.values()),
            [arm.removeprefix("pretrained:") for arm in handles],
            loc="outside lower center",
            ncols=min(4, len(handles)),
            fontsize="small",
        )
    figure.suptitle(f"Fine-tuned vs. from scratch: test {_label(metric)}")
    figure.savefig(path, dpi=110, bbox_inches="tight")  # keep the outside legend


def _plot_freeze_depth(summary: pd.DataFrame, metric: str, path: Path) -> None:
    figure, panels = _grid(summary)
    fractions = sorted(summary["data_fraction"].unique())
    colour = dict(zip(fractions, _colours(len(fractions), "viridis"), strict=True))
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
        ax.set_title(f"{downstream} - {architecture}")
        ax.set_xlabel(_freeze_axis_words(cell))
        ax.set_ylabel(f"{_label(metric)} (mean, {CONFIDENCE:.0%} CI)")
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=colour[f], lw=2, label=f"fraction {f:g}") for f in fractions]
    handles += [
        Line2D(
            [],
            [],
            color="grey",
            linestyle=styles[s % len(styles)],
            marker=markers[s % len(markers)],
            label=f"pretrained: {upstream}/{task}",
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
        fontsize="small",
    )
    figure.suptitle(f"Freeze depth: test {_label(metric)}, scratch as dotted reference")
    figure.savefig(path, dpi=110, bbox_inches="tight")  # keep the outside legend


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


def _colours(n: int, name: str) -> list[tuple[float, float, float, float]]:
    cmap = colormaps[name]
    if name == "tab10":
        return [cmap(i) for i in range(n)]
    return [cmap(x) for x in np.linspace(0.0, 0.85, n)] if n > 1 else [cmap(0.0)]


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
    p = "n/a" if math.isnan(row["wilcoxon_p"]) else f"{row['wilcoxon_p']:.3g}"
    return (
        f"at data fraction {row['data_fraction']:g} on {row['downstream']} "
        f"({row['architecture']}), {_arm_words(row)} - scratch = "
        f"{row['mean_diff']:+.3f} {_label(metric)} {interval}, "
        f"{row['n_wins']}/{row['n_pairs']} pairs won (Wilcoxon p = {p})"
    )


def _markdown(
    trials: pd.DataFrame,
    summary: pd.DataFrame,
    paired: pd.DataFrame,
    metric: str,
    metrics: Sequence[str],
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
        f"- Primary metric: `{metric}` ({_label(metric)}). Trials without a value for it: "
        f"{n_nan} (left out of every statistic).",
        f"- Pairs: a pretrained and a scratch trial with the same architecture, downstream, "
        f"data fraction and repeat (same training subset). Unpaired trials: "
        f"{int(paired['n_unpaired'].sum()) if len(paired) else 0} (not used).",
        f"- Intervals are {CONFIDENCE:.0%} t-intervals over repeats; p-values are two-sided "
        "Wilcoxon signed-rank on the paired differences.",
        f"- Every metric ({', '.join(f'`{m}`' for m in metrics)}) is in `summary.csv` and "
        "`paired.csv`; figures: `finetune_vs_scratch_<metric>.png`, "
        "`freeze_depth_<metric>.png`.",
        "",
        "## Headlines",
        "",
    ]
    usable = paired[paired["n_pairs"] > 0]
    if usable.empty:
        lines.append("No pretrained trial has a scratch partner yet: no paired comparison.")
    else:
        lines += [
            "The best pretrained arm (highest mean paired difference) for each downstream, "
            "architecture and data fraction. It is picked after the fact (out of the number "
            "of arms given at the end of the line), so read its interval with that in mind.",
            "",
        ]
        for _, group in usable.groupby(_PAIR_KEY, sort=False):
            best = group.loc[group["mean_diff"].idxmax()]
            suffix = f" (best of {len(group)} arms)" if len(group) > 1 else ""
            lines.append(f"- {_headline(best, metric)}{suffix}")
    if not arms:
        lines += ["", "No pretrained trials yet: no freeze-depth figure."]
    lines += [
        "",
        f"## Paired differences, pretrained - scratch ({_label(metric)})",
        "",
        _markdown_table(
            paired,
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
                "wilcoxon_p": ".3g",
                "n_wins": "",
                "win_fraction": ".2f",
            },
        )
        if len(paired)
        else "(no pretrained trials)",
        "",
        f"## Per arm, mean over repeats ({_label(metric)})",
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
