"""Learning and data curves: how many epochs a fine-tuned model needs to reach its scratch
partner's best (from the per-epoch records, results/epochs), and how much more data the
scratch arm needs to reach a fine-tuned arm's score (from the per-cell means)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis._contract import (
    CELL_COLUMNS,
    prepare_trials,
)
from study.errors import DataError

__all__ = ["data_efficiency", "epochs_to_match_scratch", "summarize_epochs_to_match"]

_PAIR = ["architecture", "downstream", "data_fraction", "repeat"]
_MATCH_COLUMNS = [
    "unit_id",
    *_PAIR,
    "arm",
    "scratch_best_epoch",
    "scratch_best_val_loss",
    "epochs_to_match",
]
_MATCH_SUMMARY_COLUMNS = [
    "downstream",
    "architecture",
    "arm",
    "n_trials",
    "n_matched",
    "n_never",
    "median_epochs_to_match",
    "median_scratch_best_epoch",
]
_EFFICIENCY_COLUMNS = [
    *CELL_COLUMNS,
    "mean",
    "scratch_fractions",
    "reached",
    "at_smallest_fraction",
    "scratch_fraction_needed",
    "data_multiplier",
]


def epochs_to_match_scratch(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per fine-tuned trial, the first epoch whose validation loss is at or below the best
    validation loss of its from-scratch partner (same architecture, downstream, fraction
    and repeat, hence the same training subset and seed).

    Args:
        trials: results/trials (``analysis.load_trials``).
        epochs: results/epochs (``analysis.load_epochs``).

    Returns:
        One row per fine-tuned trial with a partner: unit_id, the pair keys, arm,
        scratch_best_epoch, scratch_best_val_loss and epochs_to_match (NaN when the
        fine-tuned curve never reaches it).
    """
    # analysis.report builds its report from this module, so the contract check it owns
    # is imported here, where it is used, rather than at the top (a cycle otherwise).

    frame = prepare_trials(trials, ())
    curves = {uid: g.sort_values("epoch") for uid, g in epochs.groupby("unit_id")}
    scratch = frame[frame["init"] == "scratch"].set_index(_PAIR)
    rows = []
    for _, t in frame[frame["init"] == "pretrained"].iterrows():
        key = tuple(t[c] for c in _PAIR)
        if key not in scratch.index or t["unit_id"] not in curves:
            continue
        partner = scratch.loc[[key]].iloc[0]
        s_curve = curves.get(partner["unit_id"])
        if s_curve is None:
            continue
        best = s_curve["val_loss"].idxmin()
        target = float(s_curve.loc[best, "val_loss"])
        ft = curves[t["unit_id"]]
        reached = ft.loc[ft["val_loss"] <= target, "epoch"]
        rows.append(
            {
                "unit_id": t["unit_id"],
                **{c: t[c] for c in _PAIR},
                "arm": t["arm"],
                "scratch_best_epoch": int(s_curve.loc[best, "epoch"]),
                "scratch_best_val_loss": target,
                "epochs_to_match": float(reached.iloc[0]) if len(reached) else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=_MATCH_COLUMNS)


def summarize_epochs_to_match(matched: pd.DataFrame) -> pd.DataFrame:
    """Per (downstream, architecture, arm), how fast the fine-tuned trials matched scratch.

    Args:
        matched: ``epochs_to_match_scratch`` output.

    Returns:
        One row per (downstream, architecture, arm) with n_trials, n_matched, n_never (trials
        whose curve never reached the scratch partner's best validation loss),
        median_epochs_to_match (over the matched trials only; NaN when none matched: read it
        with n_never) and median_scratch_best_epoch (the scratch partners' best epochs, the
        yardstick).

    Raises:
        DataError: If columns of ``epochs_to_match_scratch``'s output are missing.
    """
    missing = [c for c in _MATCH_COLUMNS if c not in matched.columns]
    if missing:
        raise DataError(
            f"summarize_epochs_to_match needs epochs_to_match_scratch's columns; "
            f"{', '.join(missing)} missing"
        )
    rows = []
    for (downstream, architecture, arm), group in matched.groupby(
        ["downstream", "architecture", "arm"], sort=False
    ):
        epochs = group["epochs_to_match"].to_numpy(dtype=float)
        hit = epochs[~np.isnan(epochs)]
        rows.append(
            {
                "downstream": downstream,
                "architecture": architecture,
                "arm": arm,
                "n_trials": len(group),
                "n_matched": int(hit.size),
                "n_never": int(epochs.size - hit.size),
                "median_epochs_to_match": float(np.median(hit)) if hit.size else math.nan,
                "median_scratch_best_epoch": float(group["scratch_best_epoch"].median()),
            }
        )
    return pd.DataFrame(rows, columns=_MATCH_SUMMARY_COLUMNS)


def data_efficiency(summary: pd.DataFrame) -> pd.DataFrame:
    """How much training data the scratch arm needs to reach each pretrained cell's mean.

    For each pretrained cell (downstream, architecture, arm, data_fraction f) with mean m,
    the smallest data fraction at which the scratch arm of the same (downstream,
    architecture) reaches m. The scratch means are first made monotone by a running maximum
    over increasing fractions (the best scratch score at this fraction or a smaller one), so
    a dip at a larger fraction cannot undo a level already reached; then the fraction is
    interpolated linearly in log(fraction) between the two measured scratch fractions that
    bracket m. Nothing is extrapolated: when scratch already reaches m at its smallest
    measured fraction, that fraction is reported (``at_smallest_fraction``: the need is at
    most that), and when it never reaches m within the measured fractions, ``reached`` is
    False and the fraction NaN. Higher values are taken to be better.

    Args:
        summary: ``analysis.report.summarize`` output for one metric.

    Returns:
        One row per pretrained cell with a mean and a scratch curve, with metric,
        downstream, architecture, arm, upstream, pretrain_task, freeze_depth, data_fraction,
        mean, scratch_fractions (measured scratch fractions with a mean), reached,
        at_smallest_fraction, scratch_fraction_needed and ``data_multiplier =
        scratch_fraction_needed / data_fraction`` (3.0: scratch needs three times the data;
        below 1: scratch needs less). Cells without a mean, or whose (downstream,
        architecture) has no scratch mean, are left out.

    Raises:
        DataError: If columns of ``summarize``'s output are missing.
    """
    needed = ["metric", "downstream", "architecture", "arm", "init", "data_fraction", "mean"]
    missing = [c for c in needed if c not in summary.columns]
    if missing:
        raise DataError(
            f"data_efficiency needs summarize()'s columns; {', '.join(missing)} missing"
        )
    known = summary[summary["mean"].notna()]
    rows = []
    for (downstream, architecture), cell in known.groupby(
        ["downstream", "architecture"], sort=False
    ):
        scratch = cell[cell["init"] == "scratch"].sort_values("data_fraction")
        if scratch.empty:
            continue
        fractions = scratch["data_fraction"].to_numpy(dtype=float)
        envelope = np.maximum.accumulate(scratch["mean"].to_numpy(dtype=float))
        for _, row in cell[cell["init"] == "pretrained"].iterrows():
            needed_fraction = _fraction_reaching(fractions, envelope, float(row["mean"]))
            reached = not math.isnan(needed_fraction)
            rows.append(
                {
                    "metric": row["metric"],
                    "downstream": downstream,
                    "architecture": architecture,
                    "arm": row["arm"],
                    "upstream": row.get("upstream"),
                    "pretrain_task": row.get("pretrain_task"),
                    "freeze_depth": row.get("freeze_depth"),
                    "data_fraction": float(row["data_fraction"]),
                    "mean": float(row["mean"]),
                    "scratch_fractions": int(fractions.size),
                    "reached": reached,
                    "at_smallest_fraction": bool(reached and envelope[0] >= row["mean"]),
                    "scratch_fraction_needed": needed_fraction,
                    "data_multiplier": needed_fraction / float(row["data_fraction"]),
                }
            )
    return pd.DataFrame(rows, columns=_EFFICIENCY_COLUMNS)


def _fraction_reaching(fractions: np.ndarray, envelope: np.ndarray, target: float) -> float:
    """The smallest fraction where the non-decreasing ``envelope`` reaches ``target``,
    linear in log(fraction) between measured points; NaN when it never does."""
    above = np.flatnonzero(envelope >= target)
    if above.size == 0:
        return math.nan
    i = int(above[0])
    if i == 0:
        return float(fractions[0])
    # envelope[i - 1] < target <= envelope[i], so the step is positive
    t = (target - envelope[i - 1]) / (envelope[i] - envelope[i - 1])
    low, high = math.log(fractions[i - 1]), math.log(fractions[i])
    return math.exp(low + t * (high - low))
