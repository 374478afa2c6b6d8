"""Publication figures of a transfer study, from plain DataFrames (no store, no training code).

Every figure is labelled in words a reader of the paper understands: metrics by the label the
caller gives ("macro AUROC"), datasets, architectures, pretraining tasks and arms by name
("pretrained on PTB-XL (classification), 2 stages frozen", "from scratch"), never by unit id
or column name. Text is at least 9 pt at 100% of the saved size (saved at DPI), panels are
capped per file (further panels go to ``<stem>_2.png``, ...), colours come from the Okabe-Ito
palette (colour-blind safe), and every series also has its own marker or line style, so the
figures read in greyscale.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot.
Each ``*_figure(s)`` builder returns the Figure(s) without saving (tests walk their texts with
``figure_texts``); each ``plot_*`` saves them and returns the written paths.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator, NullFormatter, NullLocator

from analysis._contract import CONFIDENCE
from study.errors import DataError

__all__ = [
    "DPI",
    "PALETTE",
    "DIVERGING_CMAP",
    "arm_words",
    "treatment_words",
    "architecture_words",
    "dataset_words",
    "task_words",
    "figure_texts",
    "save_figure",
    "gain_vs_fraction_figures",
    "gain_vs_freeze_figures",
    "gain_heatmap_figures",
    "critical_difference_figure",
    "learning_curve_figures",
    "plot_gain_vs_fraction",
    "plot_gain_vs_freeze",
    "plot_gain_heatmap",
    "plot_critical_difference",
    "plot_learning_curves",
]

DPI = 150  # of every saved PNG; text sizes below are in points at this 100% size
# Okabe & Ito (2008), "Color Universal Design": distinguishable under every common colour-
# vision deficiency. Ordered for lines on white: yellow last (weak contrast on white).
PALETTE: dict[str, str] = {
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "bluish green": "#009E73",
    "reddish purple": "#CC79A7",
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "black": "#000000",
    "yellow": "#F0E442",
}
_SOURCE_COLOURS = [c for name, c in PALETTE.items() if name != "black"]  # black = from scratch
_SCRATCH_COLOUR = PALETTE["black"]
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (1, 3)))
_GREY = "#666666"  # neutral: reference lines, legend keys for line style only
# ColorBrewer's RdBu: rated colour-blind safe (its two ends differ in lightness and in a
# blue/red hue axis that deuteranopes, protanopes and tritanopes all keep apart), the most
# familiar diverging map to readers, white at 0 (no gain), blue = pretraining helps. A
# diverging map loses the sign in greyscale, so every cell also prints its signed value.
DIVERGING_CMAP = "RdBu"
_STYLE = {
    "font.size": 10.0,
    "axes.titlesize": 11.0,
    "axes.labelsize": 10.0,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "legend.fontsize": 9.5,
    "legend.title_fontsize": 10.0,
    "figure.titlesize": 12.0,
    "lines.linewidth": 1.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_PANEL = (4.6, 3.4)  # inches per panel of a grid
_COLUMNS = 2  # panels side by side: at DPI a figure stays under ~1400 px wide

_PAIRED_COLUMNS = (
    "downstream",
    "architecture",
    "upstream",
    "pretrain_task",
    "freeze_depth",
    "data_fraction",
    "mean_diff",
    "ci_low",
    "ci_high",
)
_TRIAL_COLUMNS = (
    "unit_id",
    "init",
    "upstream",
    "pretrain_task",
    "freeze_depth",
    "architecture",
    "downstream",
    "data_fraction",
    "repeat",
)
_EPOCH_COLUMNS = ("unit_id", "epoch", "val_loss")


# --- names in words ------------------------------------------------------------------------

_DATASETS = {
    "ptbxl": "PTB-XL",
    "ptb": "PTB",
    "cinc2017": "CinC 2017",
    "icentia11k": "Icentia11k",
    "code15_test": "CODE test set",
    "cpsc2018": "CPSC 2018",
    "cpsc2018_original": "CPSC 2018 (original release)",
    "georgia": "Georgia 12-lead",
    "chapman": "Chapman-Shaoxing",
    "cpsc2019": "CPSC 2019",
    "cpsc2021": "CPSC 2021",
    "synth_tiny": "synthetic (tiny)",
}
_TASKS = {
    "classification": "classification",
    "beat": "beat classification",
    "rhythm": "rhythm classification",
    "heart_rate": "heart-rate classification",
    "future": "future prediction, CPC",
    "autoencoder": "autoencoder",
    "qrs": "QRS detection",
}
_ARCHITECTURES = {
    "resnet1d18": "1-D ResNet-18",
    "resnet1d50": "1-D ResNet-50",
    "resnet1d101": "1-D ResNet-101",
    "resnet18v2": "ResNet-18 (v2)",
    "resnet34v2": "ResNet-34 (v2)",
    "resnet50v2": "ResNet-50 (v2)",
    "alexnet2d": "AlexNet (2-D)",
    "cae": "convolutional autoencoder",
    "gru": "GRU",
    "lstm": "LSTM",
    "bilstm": "BiLSTM",
    "unet1d": "1-D U-Net",
}
_ARM = re.compile(r"^pretrained:(?P<upstream>[^/]+)/(?P<task>[^/]+)/freeze=(?P<freeze>\d+)$")


def dataset_words(name: object) -> str:
    """A dataset's name as a paper writes it ("ptbxl" -> "PTB-XL"); unknown names unchanged."""
    name = str(name)
    if name in _DATASETS:
        return _DATASETS[name]
    synthetic = re.fullmatch(r"synth_(up|down)_(\w+)", name)
    if synthetic:
        role = "upstream" if synthetic[1] == "up" else "downstream"
        return f"synthetic {role} {synthetic[2].upper()}"
    return name


def task_words(name: object) -> str:
    """A pretraining task in words ("heart_rate" -> "heart-rate classification")."""
    return _TASKS.get(str(name), str(name).replace("_", " "))


def architecture_words(label: object) -> str:
    """An architecture label in words: "resnet1d18[base_width=16]" -> "1-D ResNet-18 (base
    width 16)"."""
    match = re.fullmatch(r"([^\[]+)(?:\[(.*)\])?", str(label))
    if match is None:  # pragma: no cover - the pattern matches every non-empty string
        return str(label)
    name = _ARCHITECTURES.get(match[1], match[1])
    if not match[2]:
        return name
    options = ", ".join(
        f"{key.replace('_', ' ')} {value}"
        for key, _, value in (part.partition("=") for part in match[2].split(","))
    )
    return f"{name} ({options})"


def _freeze_words(depth: int) -> str:
    if depth == 0:
        return "all layers fine-tuned"
    return f"{depth} stage{'s' if depth != 1 else ''} frozen"


def arm_words(upstream: object, pretrain_task: object, freeze_depth: object = None) -> str:
    """An arm in words: "pretrained on PTB-XL (classification), 2 stages frozen", or "from
    scratch" when `upstream` is missing. Without `freeze_depth` the pretraining source alone."""
    if upstream is None or (isinstance(upstream, float) and math.isnan(upstream)):
        return "from scratch"
    words = f"pretrained on {dataset_words(upstream)} ({task_words(pretrain_task)})"
    if freeze_depth is None or (isinstance(freeze_depth, float) and math.isnan(freeze_depth)):
        return words
    return f"{words}, {_freeze_words(int(freeze_depth))}"


def treatment_words(name: object) -> str:
    """A treatment of a rank comparison: arm labels of analysis.report in words."""
    text = str(name)
    if text == "scratch":
        return "from scratch"
    match = _ARM.match(text)
    if match:
        return arm_words(match["upstream"], match["task"], int(match["freeze"]))
    return text


def _percent(fraction: float) -> str:
    return f"{100 * float(fraction):g}%"


# --- shared machinery ----------------------------------------------------------------------


def figure_texts(figure: Figure) -> list[Text]:
    """Every visible, non-empty text of `figure` (titles, labels, tick labels, legends,
    annotations), after a draw so that tick labels exist."""
    figure.canvas.draw()
    return [
        artist
        for artist in figure.findobj(Text)
        if artist.get_visible() and artist.get_text().strip()
    ]


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Save `figure` as a PNG at DPI (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.1)  # keep outside legends
    return path


def _save_all(figures: list[Figure], path: str | Path) -> list[Path]:
    """The first figure to `path`, further ones to `<stem>_2<suffix>`, `<stem>_3<suffix>`..."""
    path = Path(path)
    return [
        save_figure(figure, path if i == 0 else path.with_name(f"{path.stem}_{i + 1}{path.suffix}"))
        for i, figure in enumerate(figures)
    ]


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _check(frame: object, columns: Iterable[str], what: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
    if frame.empty:
        raise DataError(f"{what} is empty: nothing to plot")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{what} lacks column(s) {', '.join(missing)}; it has {', '.join(map(str, frame))}"
        )
    return frame


def _check_max_panels(max_panels: int) -> None:
    if int(max_panels) < 1:
        raise DataError(f"max_panels must be >= 1, got {max_panels}")


def _paired(paired: object) -> pd.DataFrame:
    """The rows of a paired-differences table that have a gain, with typed axes."""
    frame = _check(paired, _PAIRED_COLUMNS, "paired").copy()
    frame["freeze_depth"] = frame["freeze_depth"].astype(int)
    frame["data_fraction"] = frame["data_fraction"].astype(float)
    frame = frame[frame["mean_diff"].notna()]
    if frame.empty:
        raise DataError("paired has no row with a mean gain (no pretrained trial has a partner)")
    return frame


def _interval(paired: pd.DataFrame) -> tuple[str, str, str]:
    """The interval columns to draw and their words. The bootstrap interval (it also resamples
    the test set) is preferred when the table has it."""
    boot = {"boot_low", "boot_high"} <= set(paired.columns)
    if boot and paired[["boot_low", "boot_high"]].notna().any().any():
        return (
            "boot_low",
            "boot_high",
            f"{CONFIDENCE:.0%} bootstrap interval (resamples repeats and test set)",
        )
    return (
        "ci_low",
        "ci_high",
        f"{CONFIDENCE:.0%} t-interval over repeats (test-set sampling not included)",
    )


def _sources(frame: pd.DataFrame) -> dict[tuple[str, str], tuple[str, str]]:
    """(upstream, pretrain_task) -> (colour, marker), in a stable (sorted) order."""
    rows = frame[frame["upstream"].notna()]
    keys = sorted(
        set(zip(rows["upstream"].astype(str), rows["pretrain_task"].astype(str), strict=True))
    )
    return {
        key: (_SOURCE_COLOURS[i % len(_SOURCE_COLOURS)], MARKERS[i % len(MARKERS)])
        for i, key in enumerate(keys)
    }


def _panel_pages(keys: list, max_panels: int) -> list[list]:
    return [keys[i : i + max_panels] for i in range(0, len(keys), max_panels)]


def _grid(n: int, footer_lines: int = 2) -> tuple[Figure, list[Axes]]:
    """A figure of `n` panels, _COLUMNS wide, with room below for a legend and a note."""
    columns = min(_COLUMNS, n)
    rows = math.ceil(n / columns)
    figure = _new_figure(_PANEL[0] * columns, _PANEL[1] * rows + 0.35 * footer_lines + 0.6)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return figure, list(axes[:n])


def _log_fraction_axis(ax: Axes, fractions: Sequence[float]) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(list(fractions), [_percent(f) for f in fractions])
    low, high = min(fractions), max(fractions)
    ax.set_xlim(low / 1.5, high * 1.5)


def _errors(rows: pd.DataFrame, low: str, high: str) -> np.ndarray:
    """Asymmetric error-bar lengths; 0 where the interval is undefined."""
    below = (rows["mean_diff"] - rows[low]).to_numpy(dtype=float)
    above = (rows[high] - rows["mean_diff"]).to_numpy(dtype=float)
    return np.clip(np.nan_to_num(np.vstack([below, above]), nan=0.0), 0.0, None)


def _zero_line(ax: Axes) -> None:
    ax.axhline(0.0, color=_SCRATCH_COLOUR, lw=1.0, zorder=1)


def _footer(figure: Figure, handles: list, note: str, columns: int = 2) -> None:
    """A legend under the panels, headed by `note` (wrapped to the figure's width).

    The note is the legend's title so that constrained layout makes room for both: a free
    figure.text would not be laid out, and an outside legend does not move with it when the
    figure is saved with a tight bounding box.
    """
    width_chars = int(figure.get_figwidth() * 72 / (0.55 * _STYLE["legend.title_fontsize"]))
    figure.legend(
        handles=handles,
        loc="outside lower center",
        ncols=max(1, columns),
        frameon=False,
        title=textwrap.fill(note, width_chars),
        alignment="center",
    )


def _panel_title(*parts: str) -> str:
    return "\n".join(textwrap.fill(p, 46) for p in parts)


def _gain_label(metric_label: str) -> str:
    return f"gain in {metric_label}\n(pretrained \u2212 from scratch)"


# --- gain vs. data fraction ----------------------------------------------------------------


def gain_vs_fraction_figures(
    paired: pd.DataFrame, metric_label: str, *, max_panels: int = 6
) -> list[Figure]:
    """The figures of plot_gain_vs_fraction, unsaved (one per `max_panels` panels)."""
    _check_max_panels(max_panels)
    frame = _paired(paired)
    low, high, interval = _interval(frame)
    sources = _sources(frame)
    arms = sorted(
        set(zip(frame["upstream"], frame["pretrain_task"], frame["freeze_depth"], strict=True))
    )
    depths = sorted({depth for *_, depth in arms})
    style = {depth: _LINESTYLES[i % len(_LINESTYLES)] for i, depth in enumerate(depths)}
    dodge = {arm: 10 ** (0.03 * (i - (len(arms) - 1) / 2)) for i, arm in enumerate(arms)}
    fractions = sorted(frame["data_fraction"].unique())
    panels = list(dict.fromkeys(zip(frame["architecture"], frame["downstream"], strict=True)))
    figures = []
    with matplotlib.rc_context(_STYLE):
        for page in _panel_pages(panels, max_panels):
            figure, axes = _grid(len(page))
            handles: dict[tuple, Line2D] = {}
            for ax, (architecture, downstream) in zip(axes, page, strict=True):
                cell = frame[
                    (frame["architecture"] == architecture) & (frame["downstream"] == downstream)
                ]
                _zero_line(ax)
                for arm in arms:
                    rows = cell[
                        (cell["upstream"] == arm[0])
                        & (cell["pretrain_task"] == arm[1])
                        & (cell["freeze_depth"] == arm[2])
                    ].sort_values("data_fraction")
                    if rows.empty:
                        continue
                    colour, marker = sources[(str(arm[0]), str(arm[1]))]
                    ax.errorbar(
                        rows["data_fraction"].to_numpy(dtype=float) * dodge[arm],
                        rows["mean_diff"],
                        yerr=_errors(rows, low, high),
                        color=colour,
                        marker=marker,
                        linestyle=style[arm[2]],
                        ms=6,
                        capsize=3,
                    )
                    handles.setdefault(
                        arm,
                        Line2D([], [], color=colour, marker=marker, linestyle=style[arm[2]], ms=6),
                    )
                _log_fraction_axis(ax, fractions)
                ax.set_title(
                    _panel_title(dataset_words(downstream), architecture_words(architecture))
                )
                ax.set_xlabel("share of the downstream training set (log scale)")
                ax.set_ylabel(_gain_label(metric_label))
                ax.grid(True, alpha=0.3)
            for arm, handle in handles.items():
                handle.set_label(arm_words(*arm))
            _footer(
                figure,
                list(handles.values()),
                f"Points: mean paired gain over repeats; bars: {interval}. "
                "Above 0: pretraining helps.",
                columns=1 if len(handles) > 4 or len(page) == 1 else 2,
            )
            figures.append(figure)
    return figures


def plot_gain_vs_fraction(
    paired: pd.DataFrame, metric_label: str, path: str | Path, *, max_panels: int = 6
) -> list[Path]:
    """Gain of each pretrained arm over from-scratch against the share of training data.

    One panel per (architecture, downstream); a line per arm (colour and marker: pretraining
    source; line style: freeze depth); a zero line; log-scaled fraction axis. Error bars are
    the bootstrap interval (``boot_low``/``boot_high``, which includes test-set sampling)
    when the table has them, else the t-interval over repeats (``ci_low``/``ci_high``); the
    note under the figure says which.

    Args:
        paired: Rows of analysis.report.paired_differences (one metric): downstream,
            architecture, upstream, pretrain_task, freeze_depth, data_fraction, mean_diff,
            ci_low, ci_high; optional boot_low, boot_high. Rows without a mean are skipped.
        metric_label: The metric in words, e.g. "macro AUROC".
        path: The PNG to write; panels beyond `max_panels` go to ``<stem>_2.png``, ...
        max_panels: Panels per file.

    Returns:
        The written paths, `path` first.

    Raises:
        DataError: An empty table, missing columns, or no row with a gain.
    """
    return _save_all(gain_vs_fraction_figures(paired, metric_label, max_panels=max_panels), path)


# --- gain vs. freeze depth -----------------------------------------------------------------


def gain_vs_freeze_figures(
    paired: pd.DataFrame, metric_label: str, *, max_panels: int = 6
) -> list[Figure]:
    """The figures of plot_gain_vs_freeze, unsaved (one per `max_panels` panels)."""
    _check_max_panels(max_panels)
    frame = _paired(paired)
    low, high, interval = _interval(frame)
    sources = _sources(frame)
    fractions = sorted(frame["data_fraction"].unique())
    style = {f: _LINESTYLES[i % len(_LINESTYLES)] for i, f in enumerate(fractions)}
    lines = [(*source, f) for source in sources for f in fractions]
    dodge = {line: 0.05 * (i - (len(lines) - 1) / 2) for i, line in enumerate(lines)}
    depths = sorted(frame["freeze_depth"].unique())
    panels = list(dict.fromkeys(zip(frame["architecture"], frame["downstream"], strict=True)))
    figures = []
    with matplotlib.rc_context(_STYLE):
        for page in _panel_pages(panels, max_panels):
            figure, axes = _grid(len(page), footer_lines=3)
            for ax, (architecture, downstream) in zip(axes, page, strict=True):
                cell = frame[
                    (frame["architecture"] == architecture) & (frame["downstream"] == downstream)
                ]
                _zero_line(ax)
                for upstream, task, fraction in lines:
                    rows = cell[
                        (cell["upstream"].astype(str) == upstream)
                        & (cell["pretrain_task"].astype(str) == task)
                        & (cell["data_fraction"] == fraction)
                    ].sort_values("freeze_depth")
                    if rows.empty:
                        continue
                    colour, marker = sources[(upstream, task)]
                    ax.errorbar(
                        rows["freeze_depth"].to_numpy(dtype=float)
                        + dodge[(upstream, task, fraction)],
                        rows["mean_diff"],
                        yerr=_errors(rows, low, high),
                        color=colour,
                        marker=marker,
                        linestyle=style[fraction],
                        ms=6,
                        capsize=3,
                    )
                ax.set_xticks([int(d) for d in depths])
                ax.set_title(
                    _panel_title(dataset_words(downstream), architecture_words(architecture))
                )
                ax.set_xlabel("stages frozen (0 = all layers fine-tuned)")
                ax.set_ylabel(_gain_label(metric_label))
                ax.grid(True, alpha=0.3)
            # two legend columns: the sources, then the fractions (padded to equal length)
            by_source = [
                Line2D([], [], color=c, marker=m, ms=6, label=arm_words(upstream, task))
                for (upstream, task), (c, m) in sources.items()
            ]
            by_fraction = [
                Line2D([], [], color=_GREY, linestyle=style[f], label=f"{_percent(f)} of the data")
                for f in fractions
            ]
            rows = max(len(by_source), len(by_fraction))
            blank = Line2D([], [], color="#FFFFFF", linestyle="none", label=" ")
            handles = [
                *by_source,
                *[blank] * (rows - len(by_source)),
                *by_fraction,
                *[blank] * (rows - len(by_fraction)),
            ]
            _footer(
                figure,
                handles,
                f"Colour and marker: pretraining source; line style: share of the downstream "
                f"training set. Points: mean paired gain over repeats; bars: {interval}.",
            )
            figures.append(figure)
    return figures


def plot_gain_vs_freeze(
    paired: pd.DataFrame, metric_label: str, path: str | Path, *, max_panels: int = 6
) -> list[Path]:
    """Gain over from-scratch against the number of frozen stages.

    One panel per (architecture, downstream); a line per pretraining source (upstream,
    pretrain_task: colour and marker) and data fraction (line style), with error bars (the
    bootstrap interval when present, as plot_gain_vs_fraction).

    Args:
        paired: As plot_gain_vs_fraction.
        metric_label: The metric in words, e.g. "macro AUROC".
        path: The PNG to write; panels beyond `max_panels` go to ``<stem>_2.png``, ...
        max_panels: Panels per file.

    Returns:
        The written paths, `path` first.

    Raises:
        DataError: An empty table, missing columns, or no row with a gain.
    """
    return _save_all(gain_vs_freeze_figures(paired, metric_label, max_panels=max_panels), path)


# --- gain heatmap ---------------------------------------------------------------------------


def gain_heatmap_figures(
    paired: pd.DataFrame,
    metric_label: str,
    *,
    data_fraction: float | None = None,
    freeze_depth: int = 0,
    p_column: str = "holm_p",
    alpha: float = 0.05,
    max_panels: int = 4,
) -> list[Figure]:
    """The figures of plot_gain_heatmap, unsaved (one per `max_panels` architectures)."""
    _check_max_panels(max_panels)
    frame = _paired(paired)
    if data_fraction is None:
        data_fraction = float(frame["data_fraction"].max())
    chosen = frame[
        np.isclose(frame["data_fraction"], data_fraction) & (frame["freeze_depth"] == freeze_depth)
    ]
    if chosen.empty:
        raise DataError(
            f"paired has no gain at data fraction {data_fraction:g} and freeze depth "
            f"{freeze_depth}; it has fractions "
            f"{', '.join(f'{f:g}' for f in sorted(frame['data_fraction'].unique()))} and depths "
            f"{', '.join(map(str, sorted(frame['freeze_depth'].unique())))}"
        )
    sources = list(_sources(chosen))
    downstreams = sorted(chosen["downstream"].astype(str).unique())
    limit = float(chosen["mean_diff"].abs().max()) or 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    tested = p_column in chosen.columns
    width = 2.6 + 1.25 * len(downstreams)
    height = 1.1 + 0.6 * len(sources)
    architectures = list(dict.fromkeys(chosen["architecture"]))
    figures = []
    with matplotlib.rc_context(_STYLE):
        for page in _panel_pages(architectures, max_panels):
            figure = _new_figure(width + 1.2, height * len(page) + 1.4)
            axes = figure.subplots(len(page), 1, squeeze=False).ravel()
            for ax, architecture in zip(axes, page, strict=True):
                grid = np.full((len(sources), len(downstreams)), np.nan)
                marks = np.zeros(grid.shape, dtype=bool)
                for _, row in chosen[chosen["architecture"] == architecture].iterrows():
                    i = sources.index((str(row["upstream"]), str(row["pretrain_task"])))
                    j = downstreams.index(str(row["downstream"]))
                    grid[i, j] = row["mean_diff"]
                    p = row[p_column] if tested else math.nan
                    marks[i, j] = bool(pd.notna(p) and p < alpha)
                cmap = matplotlib.colormaps[DIVERGING_CMAP].with_extremes(bad="#DDDDDD")
                image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto")
                for (i, j), value in np.ndenumerate(grid):
                    if np.isnan(value):
                        ax.text(j, i, "no data", ha="center", va="center", color=_GREY)
                        continue
                    strong = abs(value) > 0.6 * limit  # dark cell: white text
                    ax.text(
                        j,
                        i,
                        f"{value:+.3f}{'*' if marks[i, j] else ''}",
                        ha="center",
                        va="center",
                        color="#FFFFFF" if strong else "#000000",
                    )
                ax.set_xticks(range(len(downstreams)), [dataset_words(d) for d in downstreams])
                ax.set_yticks(
                    range(len(sources)),
                    [f"{dataset_words(u)}\n({task_words(t)})" for u, t in sources],
                )
                ax.tick_params(length=0)
                for spine in ax.spines.values():
                    spine.set_visible(False)
                ax.set_xlabel("fine-tuned on")
                ax.set_ylabel("pretrained on")
                ax.set_title(architecture_words(architecture))
            figure.colorbar(
                image, ax=list(axes), shrink=0.9, label=_gain_label(metric_label).replace("\n", " ")
            )
            figure.suptitle(
                textwrap.fill(
                    f"Gain in {metric_label} from pretraining, with {_percent(data_fraction)} "
                    f"of the training set, {_freeze_words(freeze_depth)}",
                    70,
                )
            )
            note = (
                f"* Holm-adjusted p < {alpha:g} (Holm-Bonferroni correction for the multiple "
                "comparisons made)."
                if tested
                else "No significance test was given for these cells."
            )
            _footer(figure, [], f"Cells: mean paired gain over repeats. {note}")
            figures.append(figure)
    return figures


def plot_gain_heatmap(
    paired: pd.DataFrame,
    metric_label: str,
    path: str | Path,
    *,
    data_fraction: float | None = None,
    freeze_depth: int = 0,
    p_column: str = "holm_p",
    alpha: float = 0.05,
    max_panels: int = 4,
) -> list[Path]:
    """Per architecture, a heatmap of the mean gain: pretraining source (rows) x downstream.

    One arm and fraction is shown (the title says which): by default the largest data
    fraction in the table and freeze depth 0. The colour map is DIVERGING_CMAP centred on 0
    and shared by every panel; each cell prints its signed value, with "*" when `p_column`
    (if the table has it) is below `alpha`.

    Args:
        paired: As plot_gain_vs_fraction, optionally with `p_column`.
        metric_label: The metric in words, e.g. "macro AUROC".
        path: The PNG to write; architectures beyond `max_panels` go to ``<stem>_2.png``, ...
        data_fraction: The fraction to show; None: the largest in the table.
        freeze_depth: The freeze depth to show.
        p_column: The multiplicity-adjusted p-value column (Holm) that marks cells.
        alpha: The significance level of the mark.
        max_panels: Architectures per file.

    Returns:
        The written paths, `path` first.

    Raises:
        DataError: An empty table, missing columns, or no gain at the chosen fraction/depth.
    """
    figures = gain_heatmap_figures(
        paired,
        metric_label,
        data_fraction=data_fraction,
        freeze_depth=freeze_depth,
        p_column=p_column,
        alpha=alpha,
        max_panels=max_panels,
    )
    return _save_all(figures, path)


# --- critical-difference diagram -----------------------------------------------------------


def _cliques(ranks: list[float], cd: float) -> list[tuple[int, int]]:
    """Maximal runs (first, last index into sorted `ranks`) whose ranks differ by < cd."""
    runs = []
    for first in range(len(ranks)):
        last = first
        while last + 1 < len(ranks) and ranks[last + 1] - ranks[first] < cd:
            last += 1
        if last > first and not any(a <= first and last <= b for a, b in runs):
            runs.append((first, last))
    return runs


def critical_difference_figure(avg_ranks: pd.Series, cd: float, title: str) -> Figure:
    """The figure of plot_critical_difference, unsaved."""
    if not isinstance(avg_ranks, pd.Series):
        raise DataError(f"avg_ranks must be a pandas Series, got {type(avg_ranks).__name__}")
    if avg_ranks.empty:
        raise DataError("avg_ranks is empty: nothing to plot")
    ranks = pd.to_numeric(avg_ranks, errors="coerce").astype(float).sort_values(kind="mergesort")
    if len(ranks) < 2:
        raise DataError(f"a critical-difference diagram needs >= 2 treatments, got {len(ranks)}")
    if not np.isfinite(ranks).all() or (ranks < 1).any():
        raise DataError(f"average ranks must be finite and >= 1, got {ranks.to_dict()}")
    if not (math.isfinite(cd) and cd > 0):
        raise DataError(f"cd must be a positive number, got {cd!r}")
    k = len(ranks)
    values = ranks.tolist()
    names = [textwrap.fill(f"{treatment_words(n)} ({r:.2f})", 32) for n, r in ranks.items()]
    lines = max(name.count("\n") + 1 for name in names)
    high = max(k, math.ceil(values[-1]))
    text_w, axis_w = 2.6, 4.4  # inches: a name column each side, the rank axis between
    width = 2 * text_w + axis_w + 0.4
    row_h = 0.1 + 0.19 * lines
    cliques = _cliques(values, cd)
    axis_y = 1.05
    clique_top = axis_y + 0.2
    names_top = clique_top + 0.14 * len(cliques) + 0.2
    left = math.ceil(k / 2)
    height = names_top + row_h * max(left, k - left) + 0.75

    def x(rank: float) -> float:
        return text_w + 0.2 + (rank - 1) / (high - 1) * axis_w

    with matplotlib.rc_context(_STYLE):
        figure = _new_figure(width, height)
        figure.set_layout_engine("none")
        ax = figure.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)  # y in inches from the top
        ax.axis("off")
        black = _SCRATCH_COLOUR
        ax.text(width / 2, 0.12, title, ha="center", va="top", fontsize=12)
        # the critical difference, above the axis at its left end
        cd_y = 0.6
        ax.plot([x(1), x(1 + cd)], [cd_y, cd_y], color=black, lw=1.6, clip_on=False)
        for end in (1, 1 + cd):
            ax.plot([x(end)] * 2, [cd_y - 0.05, cd_y + 0.05], color=black, lw=1.6, clip_on=False)
        ax.text(x(1 + cd / 2), cd_y - 0.08, f"CD = {cd:.2f}", ha="center", va="bottom")
        # the rank axis
        ax.plot([x(1), x(high)], [axis_y, axis_y], color=black, lw=1.2)
        for tick in np.arange(1, high + 0.01, 0.5):
            major = float(tick).is_integer()
            ax.plot([x(tick)] * 2, [axis_y, axis_y - (0.1 if major else 0.05)], color=black, lw=1)
            if major:
                ax.text(x(tick), axis_y - 0.14, f"{int(tick)}", ha="center", va="bottom")
        # treatments that do not differ: thick bars under the axis
        for c, (first, last) in enumerate(cliques):
            y = clique_top + 0.14 * c
            ax.plot(
                [x(values[first]) - 0.05, x(values[last]) + 0.05],
                [y, y],
                color=black,
                lw=3.5,
                solid_capstyle="round",
            )
        # leader lines: the best half to the left, the rest to the right, so none cross
        for i, (rank, name) in enumerate(zip(values, names, strict=True)):
            on_left = i < left
            row = i if on_left else k - 1 - i
            y = names_top + row_h * (row + 0.5)
            end = text_w if on_left else width - text_w
            ax.plot([x(rank), x(rank), end], [axis_y, y, y], color=black, lw=1)
            ax.plot([x(rank)], [axis_y], marker="o", ms=4, color=black)
            ax.text(
                end + (-0.08 if on_left else 0.08),
                y,
                name,
                ha="right" if on_left else "left",
                va="center",
            )
        ax.text(
            width / 2,
            height - 0.1,
            textwrap.fill(
                "Average rank (1 = best). Treatments joined by a thick bar differ in average "
                "rank by less than the critical difference (CD): their difference is not "
                "significant.",
                110,
            ),
            ha="center",
            va="bottom",
        )
    return figure


def plot_critical_difference(avg_ranks: pd.Series, cd: float, path: str | Path, title: str) -> Path:
    """Demsar's (2006) critical-difference diagram.

    A rank axis (1 = best, on the left), each treatment a point on it with a leader line to
    its name (the better half on the left), thick bars joining treatments whose average ranks
    differ by less than `cd` (maximal groups only), and the CD interval drawn at the top. Arm
    labels of analysis.report ("scratch", "pretrained:<up>/<task>/freeze=<k>") are written in
    words; other names are shown as given. Works for 2 to ~12 treatments.

    Args:
        avg_ranks: Treatment name -> average rank over the datasets (1 = best).
        cd: The critical difference (e.g. Nemenyi's) at the chosen level.
        path: The PNG to write.
        title: The figure's title.

    Returns:
        `path`.

    Raises:
        DataError: Fewer than 2 treatments, ranks not finite or below 1, or cd not positive.
    """
    return save_figure(critical_difference_figure(avg_ranks, cd, title), path)


# --- learning curves -----------------------------------------------------------------------


def learning_curve_figures(
    trials: pd.DataFrame, epochs: pd.DataFrame, *, max_panels: int = 6
) -> list[Figure]:
    """The figures of plot_learning_curves, unsaved (one per `max_panels` panels)."""
    _check_max_panels(max_panels)
    trials = _check(trials, _TRIAL_COLUMNS, "trials").copy()
    epochs = _check(epochs, _EPOCH_COLUMNS, "epochs")
    trials["freeze_depth"] = trials["freeze_depth"].fillna(0).astype(int)
    trials["data_fraction"] = trials["data_fraction"].astype(float)
    # only the trials' axes: a trials table has its own val_loss (of the selected epoch)
    frame = trials[list(_TRIAL_COLUMNS)].merge(
        epochs[list(_EPOCH_COLUMNS)], on="unit_id", how="inner"
    )
    frame = frame[frame["val_loss"].notna()]
    if frame.empty:
        raise DataError("no epoch with a validation loss belongs to the trials given")
    scratch = frame["init"] == "scratch"
    frame["arm"] = [
        None if s else (str(u), str(t), int(d))
        for s, u, t, d in zip(
            scratch, frame["upstream"], frame["pretrain_task"], frame["freeze_depth"], strict=True
        )
    ]
    sources = _sources(frame[~scratch])
    arms = sorted({a for a in frame["arm"] if a is not None})
    depths = sorted({a[2] for a in arms})
    style = {d: _LINESTYLES[i % len(_LINESTYLES)] for i, d in enumerate(depths)}
    panels = sorted(
        set(zip(frame["architecture"], frame["downstream"], frame["data_fraction"], strict=True))
    )
    figures = []
    with matplotlib.rc_context(_STYLE):
        for page in _panel_pages(panels, max_panels):
            figure, axes = _grid(len(page))
            handles: dict[object, Line2D] = {}
            for ax, (architecture, downstream, fraction) in zip(axes, page, strict=True):
                cell = frame[
                    (frame["architecture"] == architecture)
                    & (frame["downstream"] == downstream)
                    & (frame["data_fraction"] == fraction)
                ]
                for arm in [None, *arms]:
                    rows = cell[[a == arm for a in cell["arm"]]]
                    if rows.empty:
                        continue
                    curve = rows.groupby("epoch")["val_loss"].agg(["mean", "std"]).sort_index()
                    if arm is None:
                        colour, marker, linestyle = _SCRATCH_COLOUR, None, (0, (4, 2))
                    else:
                        colour, marker = sources[arm[:2]]
                        linestyle = style[arm[2]]
                    epoch = curve.index.to_numpy(dtype=float)
                    ax.fill_between(
                        epoch,
                        curve["mean"] - curve["std"].fillna(0),
                        curve["mean"] + curve["std"].fillna(0),
                        color=colour,
                        alpha=0.15,
                        lw=0,
                    )
                    (line,) = ax.plot(
                        epoch,
                        curve["mean"],
                        color=colour,
                        marker=marker,
                        markevery=max(1, len(epoch) // 6),
                        ms=6,
                        linestyle=linestyle,
                        label="from scratch" if arm is None else arm_words(*arm),
                    )
                    handles.setdefault(arm, line)
                ax.set_title(
                    _panel_title(
                        f"{dataset_words(downstream)}, {_percent(fraction)} of the training set",
                        architecture_words(architecture),
                    )
                )
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_xlabel("epoch")
                ax.set_ylabel("validation loss")
                ax.grid(True, alpha=0.3)
            _footer(
                figure,
                list(handles.values()),
                "Lines: mean validation loss over repeats (a repeat stopped early leaves the "
                "mean after its last epoch); bands: \u00b11 standard deviation over repeats.",
                columns=1 if len(handles) > 4 or len(page) == 1 else 2,
            )
            figures.append(figure)
    return figures


def plot_learning_curves(
    trials: pd.DataFrame, epochs: pd.DataFrame, path: str | Path, max_panels: int = 6
) -> list[Path]:
    """Validation-loss curves of from-scratch and each pretrained arm, per (architecture,
    downstream, data fraction): mean over repeats with a +-1 SD band.

    Args:
        trials: The results table (analysis.load_trials): unit_id, init, upstream,
            pretrain_task, freeze_depth, architecture, downstream, data_fraction, repeat.
        epochs: The per-epoch records (analysis.load_epochs): unit_id, epoch, val_loss
            (train_loss is not drawn).
        path: The PNG to write; panels beyond `max_panels` go to ``<stem>_2.png``, ...
        max_panels: Panels per file.

    Returns:
        The written paths, `path` first.

    Raises:
        DataError: An empty table, missing columns, or no epoch of the trials given.
    """
    return _save_all(learning_curve_figures(trials, epochs, max_panels=max_panels), path)
