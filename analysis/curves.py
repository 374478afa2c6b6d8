"""Learning curves: how many epochs a fine-tuned model needs to reach its scratch partner's
best, from the per-epoch records (results/epochs) every unit writes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.report import _prepare

__all__ = ["epochs_to_match_scratch"]

_PAIR = ["architecture", "downstream", "data_fraction", "repeat"]


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
    frame = _prepare(trials, ())
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
    return pd.DataFrame(rows)
