"""analysis.curves: data efficiency and the epochs-to-match summary, against hand computation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.curves import data_efficiency, epochs_to_match_scratch, summarize_epochs_to_match
from analysis.report import summarize
from study.errors import DataError
from tests.analysis.test_report import ARM0, ARM2, make_trials


def _cell(down: str, arm: str, fraction: float, mean: float, arch: str = "net") -> dict:
    pretrained = arm != "scratch"
    return {
        "metric": "test_macro_auroc",
        "downstream": down,
        "architecture": arch,
        "arm": arm,
        "init": "pretrained" if pretrained else "scratch",
        "upstream": "up" if pretrained else None,
        "pretrain_task": "task" if pretrained else None,
        "freeze_depth": 0,
        "data_fraction": fraction,
        "mean": mean,
    }


PT = "pretrained:up/task/freeze=0"


def _summary(scratch: dict[float, float], pretrained: dict[float, float]) -> pd.DataFrame:
    rows = [_cell("d", "scratch", f, m) for f, m in scratch.items()]
    rows += [_cell("d", PT, f, m) for f, m in pretrained.items()]
    return pd.DataFrame(rows)


def test_data_efficiency_interpolates_in_log_fraction() -> None:
    scratch = {0.1: 0.60, 0.3: 0.70, 1.0: 0.80}
    out = data_efficiency(_summary(scratch, {0.1: 0.65, 0.3: 0.85, 1.0: 0.55})).set_index(
        "data_fraction"
    )

    # 0.65 is half way from 0.60 (at 0.1) to 0.70 (at 0.3): log f = (log 0.1 + log 0.3) / 2
    row = out.loc[0.1]
    assert bool(row["reached"]) and not bool(row["at_smallest_fraction"])
    assert row["scratch_fraction_needed"] == pytest.approx(math.sqrt(0.03))
    assert row["data_multiplier"] == pytest.approx(math.sqrt(0.03) / 0.1)
    assert row["scratch_fractions"] == 3

    # 0.85: scratch never gets there within the measured fractions
    row = out.loc[0.3]
    assert not bool(row["reached"])
    assert math.isnan(row["scratch_fraction_needed"]) and math.isnan(row["data_multiplier"])

    # 0.55: scratch is already above it at its smallest fraction: no extrapolation below
    row = out.loc[1.0]
    assert bool(row["reached"]) and bool(row["at_smallest_fraction"])
    assert row["scratch_fraction_needed"] == pytest.approx(0.1)
    assert row["data_multiplier"] == pytest.approx(0.1)


def test_data_efficiency_uses_the_running_maximum_of_scratch() -> None:
    # Scratch dips at 0.3; its running maximum is 0.70, 0.70, 0.80.
    scratch = {0.1: 0.70, 0.3: 0.60, 1.0: 0.80}
    out = data_efficiency(_summary(scratch, {0.1: 0.65, 0.3: 0.75})).set_index("data_fraction")
    # 0.65 is reached at 0.1 already (the dip does not undo it)
    assert out.loc[0.1, "scratch_fraction_needed"] == pytest.approx(0.1)
    # 0.75: half way from the envelope's 0.70 at 0.3 to 0.80 at 1.0 (not from the raw 0.60)
    assert out.loc[0.3, "scratch_fraction_needed"] == pytest.approx(math.sqrt(0.3))
    assert out.loc[0.3, "data_multiplier"] == pytest.approx(math.sqrt(0.3) / 0.3)


def test_data_efficiency_leaves_out_cells_without_a_mean_or_scratch() -> None:
    rows = [
        _cell("d", "scratch", 0.1, 0.6),
        _cell("d", "scratch", 1.0, np.nan),  # a NaN scratch cell is not a measured point
        _cell("d", PT, 0.1, np.nan),  # no mean: left out
        _cell("d", PT, 1.0, 0.7),
        _cell("e", PT, 0.1, 0.7),  # no scratch on e: left out
    ]
    out = data_efficiency(pd.DataFrame(rows))
    assert len(out) == 1
    row = out.iloc[0]
    assert (row["downstream"], row["data_fraction"], row["scratch_fractions"]) == ("d", 1.0, 1)
    assert not bool(row["reached"])


def test_data_efficiency_from_summarize() -> None:
    # scratch at down_a: 0.62 at 0.1, 0.82 at 1.0; freeze 0 at 0.1: 0.69 -> 0.35 of the way
    out = data_efficiency(summarize(make_trials()))
    row = out[
        (out["downstream"] == "down_a") & (out["arm"] == ARM0) & (out["data_fraction"] == 0.1)
    ]
    assert row["scratch_fraction_needed"].item() == pytest.approx(0.1 * 10**0.35)
    assert row["data_multiplier"].item() == pytest.approx(10**0.35)
    assert (row["upstream"].item(), row["freeze_depth"].item()) == ("up_a", 0)
    assert len(out) == 8 and set(out["arm"]) == {ARM0, ARM2}
    # at 1.0 every pretrained mean is above scratch's best: never reached
    assert not out.loc[out["data_fraction"] == 1.0, "reached"].any()


def test_data_efficiency_rejects_other_tables() -> None:
    with pytest.raises(
        DataError, match=r"summarize\(\)'s columns; init, data_fraction, mean missing"
    ):
        data_efficiency(pd.DataFrame(columns=["metric", "downstream", "architecture", "arm"]))


def test_summarize_epochs_to_match_by_hand() -> None:
    matched = pd.DataFrame(
        {
            "unit_id": list("abcdefg"),
            "architecture": "net",
            "downstream": "d",
            "data_fraction": [0.1, 0.1, 1.0, 1.0, 0.1, 0.1, 1.0],
            "repeat": [0, 1, 0, 1, 0, 1, 0],
            "arm": [PT] * 4 + ["other"] * 3,
            "scratch_best_epoch": [3, 5, 7, 9, 3, 5, 7],
            "scratch_best_val_loss": 0.5,
            "epochs_to_match": [2, np.nan, 4, 6, np.nan, np.nan, np.nan],
        }
    )
    out = summarize_epochs_to_match(matched).set_index("arm")
    assert out.loc[PT, ["n_trials", "n_matched", "n_never"]].tolist() == [4, 3, 1]
    assert out.loc[PT, "median_epochs_to_match"] == 4  # of 2, 4, 6: the never-matched left out
    assert out.loc[PT, "median_scratch_best_epoch"] == 6
    assert out.loc["other", ["n_matched", "n_never"]].tolist() == [0, 3]
    assert math.isnan(out.loc["other", "median_epochs_to_match"])


def test_summarize_epochs_to_match_of_nothing() -> None:
    empty = epochs_to_match_scratch(
        make_trials(), pd.DataFrame(columns=["unit_id", "epoch", "val_loss"])
    )
    assert empty.empty and "epochs_to_match" in empty
    assert summarize_epochs_to_match(empty).empty
    with pytest.raises(DataError, match="epochs_to_match missing"):
        summarize_epochs_to_match(empty.drop(columns="epochs_to_match"))
