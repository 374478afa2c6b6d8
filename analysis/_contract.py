"""The results contract the analyses share: the columns a trials table must have, what an
arm and a cell are, and the checks every analysis runs first (one definition, imported by
report, curves, uncertainty and figures, so none of them imports another for it).

An *arm* is what a trial's model started from: ``"scratch"``, or
``"pretrained:<upstream>/<pretrain_task>/freeze=<k>"``. A *cell* is one arm on one
(downstream, architecture, data_fraction); its trials are the repeats. A pretrained and a
scratch trial with the same (architecture, downstream, data_fraction, repeat) trained on the
identical subset, so comparisons are paired on the repeat.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import stats

from study.errors import DataError

__all__ = [
    "REQUIRED_COLUMNS",
    "CONFIDENCE",
    "INITS",
    "CELL",
    "CELL_COLUMNS",
    "PAIR_KEY",
    "arm_label",
    "cell_fields",
    "prepare_trials",
    "mean_and_interval",
    "sort_cells",
]

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
CONFIDENCE = 0.95  # of every interval reported (two-sided)
INITS = ("pretrained", "scratch")
CELL = ["downstream", "architecture", "arm", "data_fraction"]
#: The leading columns of every per-cell table (paired, data efficiency, bootstrap): the
#: metric, the cell, and what its arm is made of.
CELL_COLUMNS = (
    "metric",
    "downstream",
    "architecture",
    "arm",
    "upstream",
    "pretrain_task",
    "freeze_depth",
    "data_fraction",
)
PAIR_KEY = ["architecture", "downstream", "data_fraction"]  # + repeat


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


def prepare_trials(trials: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
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

    bad_init = sorted(set(frame["init"].astype(str)) - set(INITS))
    if bad_init:
        raise DataError(f"init must be one of {', '.join(INITS)}, got {', '.join(bad_init)}")
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
    duplicated = frame.duplicated([*CELL, "repeat"], keep=False)
    if duplicated.any():
        clash = frame[duplicated].sort_values([*CELL, "repeat"]).iloc[0]
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


def mean_and_interval(values: np.ndarray) -> tuple[float, float, float, float]:
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


def sort_cells(table: pd.DataFrame) -> pd.DataFrame:
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


def cell_fields(metric: str, cell: tuple, group: pd.DataFrame) -> dict:
    """The CELL_COLUMNS of one per-cell table row: `cell` is a (downstream, architecture,
    arm, data_fraction) key of a groupby over CELL, `group` its trials (the arm's parts are
    read from its first row)."""
    downstream, architecture, arm, fraction = cell
    first = group.iloc[0]
    return {
        "metric": metric,
        "downstream": downstream,
        "architecture": architecture,
        "arm": arm,
        "upstream": first["upstream"],
        "pretrain_task": first["pretrain_task"],
        "freeze_depth": int(first["freeze_depth"]),
        "data_fraction": float(fraction),
    }
