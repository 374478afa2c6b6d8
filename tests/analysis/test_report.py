"""analysis.report: numbers checked against hand computation, files, errors, NaN handling."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analysis.report import (
    paired_differences,
    rankings,
    select_on_validation,
    summarize,
    write_report,
)
from study.errors import ConfigError, DataError

# Two-sided 95% t quantiles, t(0.975, df), from a table: independent of the code under test.
T_DF1 = 12.706204736174705
T_DF2 = 4.302652729749464

# Scratch trial r scores BASE + 0.02 r; a pretrained trial scores its scratch partner + DELTA[r].
BASE = {("down_a", 0.1): 0.60, ("down_a", 1.0): 0.80, ("down_b", 0.1): 0.50, ("down_b", 1.0): 0.70}
DELTA = {0: [0.05, 0.07, 0.09], 2: [-0.01, 0.02, 0.05]}  # freeze depth -> per-repeat difference
METRICS = ("test_macro_auroc", "test_macro_f1", "test_weighted_f1")


def _row(arch: str, down: str, fraction: float, repeat: int, freeze: int | None, auroc: float):
    pretrained = freeze is not None
    arm = f"ft{freeze}" if pretrained else "scratch"
    return {
        "unit_id": f"{arch}-{down}-{fraction}-{arm}-{repeat}",
        "architecture": arch,
        "init": "pretrained" if pretrained else "scratch",
        "upstream": "up_a" if pretrained else None,
        "pretrain_task": "task_x" if pretrained else None,
        "downstream": down,
        "freeze_depth": freeze if pretrained else 0,
        "data_fraction": fraction,
        "repeat": repeat,
        "seed": 1000 + repeat,
        "test_macro_auroc": auroc,
        "test_macro_f1": auroc - 0.2,
        "test_weighted_f1": auroc - 0.1,
        "val_macro_auroc": auroc,
        "best_epoch": 3,
        "epochs": 5,
        "train_seconds": 1.5,
        "n_train": int(100 * fraction),
        "hardware": "cpu",
        "code_version": "test",
    }


def make_trials(architectures: tuple[str, ...] = ("tiny",)) -> pd.DataFrame:
    """2 downstreams x 2 fractions x 3 repeats x (scratch, freeze 0, freeze 2) per architecture."""
    rows = []
    for arch in architectures:
        for (down, fraction), base in BASE.items():
            for repeat in range(3):
                scratch = base + 0.02 * repeat
                rows.append(_row(arch, down, fraction, repeat, None, scratch))
                for freeze, deltas in DELTA.items():
                    rows.append(
                        _row(arch, down, fraction, repeat, freeze, scratch + deltas[repeat])
                    )
    return pd.DataFrame(rows)


def _one(table: pd.DataFrame, **where: object) -> pd.Series:
    mask = np.ones(len(table), dtype=bool)
    for column, value in where.items():
        mask &= (table[column] == value).to_numpy()
    assert mask.sum() == 1, f"expected one row for {where}, got {mask.sum()}"
    return table[mask].iloc[0]


ARM0 = "pretrained:up_a/task_x/freeze=0"
ARM2 = "pretrained:up_a/task_x/freeze=2"


def test_summarize_mean_std_and_t_interval_by_hand() -> None:
    summary = summarize(make_trials())

    assert len(summary) == 2 * 2 * 3  # downstream x fraction x arm
    assert list(summary["arm"][:6]) == ["scratch", "scratch", ARM0, ARM0, ARM2, ARM2]
    assert list(summary["data_fraction"][:2]) == [0.1, 1.0]

    # scratch at down_a, 0.1: 0.60, 0.62, 0.64 -> mean 0.62, std 0.02
    row = _one(summary, downstream="down_a", arm="scratch", data_fraction=0.1)
    half = T_DF2 * 0.02 / math.sqrt(3)
    assert (row["n"], row["n_nan"]) == (3, 0)
    assert row["mean"] == pytest.approx(0.62)
    assert row["std"] == pytest.approx(0.02)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.62 - half, 0.62 + half))

    # freeze 0 at down_b, 1.0: 0.70 + [0.05, 0.09, 0.13] -> mean 0.79, std 0.04
    row = _one(summary, downstream="down_b", arm=ARM0, data_fraction=1.0)
    half = T_DF2 * 0.04 / math.sqrt(3)
    assert row["mean"] == pytest.approx(0.79)
    assert row["std"] == pytest.approx(0.04)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.79 - half, 0.79 + half))
    assert (row["upstream"], row["pretrain_task"], row["freeze_depth"]) == ("up_a", "task_x", 0)

    # freeze 2 at down_a, 1.0: 0.80 + [-0.01, 0.04, 0.09] -> mean 0.84, std 0.05
    row = _one(summary, downstream="down_a", arm=ARM2, data_fraction=1.0)
    assert row["mean"] == pytest.approx(0.84)
    assert row["std"] == pytest.approx(0.05)


def test_summarize_other_metric() -> None:
    summary = summarize(make_trials(), metric="test_macro_f1")
    row = _one(summary, downstream="down_a", arm="scratch", data_fraction=0.1)
    assert row["metric"] == "test_macro_f1"
    assert row["mean"] == pytest.approx(0.42)


@pytest.mark.parametrize(
    ("arm", "mean", "std", "p", "wins"),
    [
        # diffs 0.05, 0.07, 0.09: all 3 signed ranks positive -> exact p = 2 * 1/8
        (ARM0, 0.07, 0.02, 0.25, 3),
        # diffs -0.01, 0.02, 0.05: W- = 1 -> exact p = 2 * P(W <= 1) = 2 * 2/8
        (ARM2, 0.02, 0.03, 0.5, 2),
    ],
)
def test_paired_differences_by_hand(arm: str, mean: float, std: float, p: float, wins: int):
    paired = paired_differences(make_trials())
    assert len(paired) == 2 * 2 * 2  # downstream x fraction x pretrained arm
    half = T_DF2 * std / math.sqrt(3)
    for down, fraction in BASE:
        row = _one(paired, downstream=down, data_fraction=fraction, arm=arm)
        assert (row["n_pairs"], row["n_unpaired"], row["n_nan"]) == (3, 0, 0)
        assert row["mean_diff"] == pytest.approx(mean)
        assert row["std_diff"] == pytest.approx(std)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((mean - half, mean + half))
        assert row["wilcoxon_p"] == pytest.approx(p)
        assert row["n_wins"] == wins
        assert row["win_fraction"] == pytest.approx(wins / 3)


def test_nan_metric_is_excluded_and_counted() -> None:
    trials = make_trials()
    hit = (trials["unit_id"] == "tiny-down_a-0.1-ft0-1").to_numpy()
    assert hit.sum() == 1
    trials.loc[hit, "test_macro_auroc"] = np.nan

    row = _one(summarize(trials), downstream="down_a", arm=ARM0, data_fraction=0.1)
    # left: 0.65, 0.73 -> mean 0.69, std 0.08 / sqrt(2), t with 1 degree of freedom
    std = 0.08 / math.sqrt(2)
    half = T_DF1 * std / math.sqrt(2)
    assert (row["n"], row["n_nan"]) == (2, 1)
    assert row["mean"] == pytest.approx(0.69)
    assert row["std"] == pytest.approx(std)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.69 - half, 0.69 + half))

    row = _one(paired_differences(trials), downstream="down_a", arm=ARM0, data_fraction=0.1)
    # pairs left: diffs 0.05, 0.09 -> mean 0.07; both positive -> exact p = 2 * 1/4
    assert (row["n_pairs"], row["n_nan"], row["n_unpaired"]) == (2, 1, 0)
    assert row["mean_diff"] == pytest.approx(0.07)
    assert row["std_diff"] == pytest.approx(0.04 / math.sqrt(2))
    assert row["wilcoxon_p"] == pytest.approx(0.5)
    assert (row["n_wins"], row["win_fraction"]) == (2, 1.0)

    # The other metrics of that trial are still there.
    row = _one(summarize(trials, "test_macro_f1"), downstream="down_a", arm=ARM0, data_fraction=0.1)
    assert (row["n"], row["n_nan"]) == (3, 0)


def test_all_nan_cell_has_nan_statistics() -> None:
    trials = make_trials()
    cell = (trials["freeze_depth"] == 2) & (trials["downstream"] == "down_b")
    trials.loc[cell.to_numpy(), "test_macro_auroc"] = np.nan
    row = _one(summarize(trials), downstream="down_b", arm=ARM2, data_fraction=0.1)
    assert (row["n"], row["n_nan"]) == (0, 3)
    assert all(math.isnan(row[c]) for c in ("mean", "std", "ci_low", "ci_high"))
    row = _one(paired_differences(trials), downstream="down_b", arm=ARM2, data_fraction=0.1)
    assert (row["n_pairs"], row["n_nan"]) == (0, 3)
    assert math.isnan(row["mean_diff"]) and math.isnan(row["win_fraction"])


def test_unpaired_trials_are_not_used_and_counted() -> None:
    trials = make_trials()
    drop = trials["unit_id"].isin(["tiny-down_b-1.0-scratch-2", "tiny-down_a-0.1-ft2-0"])
    paired = paired_differences(trials[~drop.to_numpy()])

    # No scratch for repeat 2 at down_b / 1.0: both arms lose that pair.
    for arm, mean in ((ARM0, 0.06), (ARM2, 0.005)):
        row = _one(paired, downstream="down_b", arm=arm, data_fraction=1.0)
        assert (row["n_pairs"], row["n_unpaired"]) == (2, 1)
        assert row["mean_diff"] == pytest.approx(mean)
    # No freeze-2 trial for repeat 0 at down_a / 0.1: the scratch trial of repeat 0 is unpaired.
    row = _one(paired, downstream="down_a", arm=ARM2, data_fraction=0.1)
    assert (row["n_pairs"], row["n_unpaired"]) == (2, 1)
    assert row["mean_diff"] == pytest.approx(0.035)
    assert _one(paired, downstream="down_a", arm=ARM0, data_fraction=0.1)["n_unpaired"] == 0


def test_pretrained_cell_without_any_scratch() -> None:
    trials = make_trials()
    trials = trials[~((trials["init"] == "scratch") & (trials["downstream"] == "down_a"))]
    row = _one(paired_differences(trials), downstream="down_a", arm=ARM0, data_fraction=0.1)
    assert (row["n_pairs"], row["n_unpaired"]) == (0, 3)
    assert math.isnan(row["mean_diff"]) and math.isnan(row["wilcoxon_p"])


def test_wilcoxon_is_nan_below_two_nonzero_differences() -> None:
    trials = make_trials()
    scratch = trials[trials["init"] == "scratch"].set_index(
        ["downstream", "data_fraction", "repeat"]
    )["test_macro_auroc"]
    freeze0 = (trials["init"] == "pretrained") & (trials["freeze_depth"] == 0)
    keys = list(zip(trials["downstream"], trials["data_fraction"], trials["repeat"], strict=True))
    # freeze 0 equals scratch exactly everywhere; at down_a / 0.1 repeat 2 it is 0.01 higher.
    equal = np.array([scratch[k] for k in keys])
    equal = np.where((trials["unit_id"] == "tiny-down_a-0.1-ft0-2").to_numpy(), equal + 0.01, equal)
    trials.loc[freeze0.to_numpy(), "test_macro_auroc"] = equal[freeze0.to_numpy()]
    paired = paired_differences(trials)

    row = _one(paired, downstream="down_b", arm=ARM0, data_fraction=0.1)  # all pairs equal
    assert row["n_pairs"] == 3 and math.isnan(row["wilcoxon_p"])
    assert (row["mean_diff"], row["ci_low"], row["ci_high"]) == pytest.approx((0, 0, 0))
    assert row["n_wins"] == 0  # ties are not wins
    row = _one(paired, downstream="down_a", arm=ARM0, data_fraction=0.1)  # one non-zero pair
    assert math.isnan(row["wilcoxon_p"])
    assert row["mean_diff"] == pytest.approx(0.01 / 3)
    assert row["n_wins"] == 1


def test_single_repeat_has_no_interval() -> None:
    trials = make_trials()
    trials = trials[trials["repeat"] == 0]
    row = _one(summarize(trials), downstream="down_a", arm="scratch", data_fraction=0.1)
    assert (row["n"], row["mean"]) == (1, pytest.approx(0.60))
    assert all(math.isnan(row[c]) for c in ("std", "ci_low", "ci_high"))
    row = _one(paired_differences(trials), downstream="down_a", arm=ARM0, data_fraction=0.1)
    assert (row["n_pairs"], row["mean_diff"]) == (1, pytest.approx(0.05))
    assert math.isnan(row["ci_low"]) and math.isnan(row["wilcoxon_p"])


def _drop(*columns: str) -> pd.DataFrame:
    return make_trials().drop(columns=list(columns))


def _with(column: str, index: int, value: object) -> pd.DataFrame:
    trials = make_trials()
    trials[column] = trials[column].astype(object)
    trials.loc[index, column] = value
    return trials


@pytest.mark.parametrize(
    ("trials", "metric", "message"),
    [
        (pd.DataFrame(), "test_macro_auroc", "no finished trials"),
        (make_trials().iloc[:0], "test_macro_auroc", "no finished trials"),
        (_drop("repeat", "downstream"), "test_macro_auroc", r"column\(s\) downstream, repeat;"),
        (_drop("test_macro_auroc"), "test_macro_auroc", r"column\(s\) test_macro_auroc;"),
        (make_trials(), "test_auprc", r"column\(s\) test_auprc;"),
        (
            _with("init", 0, "linear_probe"),
            "test_macro_auroc",
            "init must be one of .*linear_probe",
        ),
        (_with("upstream", 1, None), "test_macro_auroc", "upstream must be set for pretrained"),
        (_with("data_fraction", 0, 1.5), "test_macro_auroc", r"data_fraction must be in \(0, 1\]"),
        (_with("test_macro_auroc", 0, "high"), "test_macro_auroc", "must be numeric"),
        (
            _with("repeat", 3, 0),  # a second scratch trial for repeat 0 of down_a / 0.1
            "test_macro_auroc",
            "must hold one trial; 2 trials share .* tiny-down_a-0.1-scratch-0, "
            "tiny-down_a-0.1-scratch-1",
        ),
    ],
)
def test_bad_tables_raise_data_error(trials: pd.DataFrame, metric: str, message: str) -> None:
    for function in (summarize, paired_differences):
        with pytest.raises(DataError, match=message):
            function(trials, metric=metric)
    assert issubclass(DataError, ValueError)


def test_write_report_files_and_numbers(tmp_path) -> None:
    trials = make_trials()
    trials.loc[(trials["unit_id"] == "tiny-down_b-0.1-scratch-0").to_numpy(), "test_macro_f1"] = (
        np.nan
    )
    written = write_report(trials, tmp_path / "report")

    pngs = [f"{kind}_{m}.png" for m in METRICS for kind in ("finetune_vs_scratch", "freeze_depth")]
    tables = {"summary.csv", "summary.md", "paired.csv", "data_efficiency.csv"}
    tables |= {"friedman_arms.csv", "friedman_arms_pairwise.csv"}  # one architecture: no ranking
    assert set(written) == {*pngs, *tables}
    for name in pngs:
        data = written[name].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, name

    summary = pd.read_csv(written["summary.csv"])
    assert len(summary) == 12 * len(METRICS)
    for metric in METRICS:
        expected = summarize(trials, metric)
        got = summary[summary["metric"] == metric].reset_index(drop=True)
        np.testing.assert_allclose(got["mean"], expected["mean"])
        np.testing.assert_allclose(got["ci_high"], expected["ci_high"])
        assert list(got["n_nan"]) == list(expected["n_nan"])
    assert summary["n_nan"].sum() == 1
    paired = pd.read_csv(written["paired.csv"])
    assert len(paired) == 8 * len(METRICS)
    auroc = paired[paired["metric"] == "test_macro_auroc"]
    np.testing.assert_allclose(auroc["mean_diff"], [0.07, 0.07, 0.02, 0.02] * 2, atol=1e-12)

    text = written["summary.md"].read_text()
    # 0.07 +- 4.3027 * 0.02 / sqrt(3) = [0.020, 0.120]; 0.07 / 0.62 = +11.3%; 8 p-values of
    # 0.25 and 0.5: Holm min(1, 8 * 0.25) = 1, BH 0.5 * 8 / 8 = 0.5
    assert (
        "- at data fraction 0.1 on down_a (tiny), pretrained (up_a/task_x, freeze=0) - scratch = "
        "+0.070 AUROC (+11.3% of scratch) [95% CI 0.020, 0.120], 3/3 pairs won (Wilcoxon p = "
        "0.25, Holm p = 1, BH p = 0.5 of 8 tests; cannot reach p < 0.05 with 3 pairs) - chosen "
        "on validation AUROC of 2 arms: validation AUROC - scratch = +0.070"
    ) in text
    headlines = text.split("## Headlines")[1].split("### Best freeze depth")[0]
    assert headlines.count("pairs won") == 4  # one headline per downstream x fraction
    assert "| down_a | tiny | scratch | 0.1 | 3 | 0 | 0.620 | 0.020 | 0.570 | 0.670 |" in text
    assert f"| down_b | tiny | {ARM2} | 1 | 3 | 0 | 0 | +0.020 |" in text
    assert "36 finished trials" in text


def test_write_report_grid_of_architectures_and_scratch_only(tmp_path) -> None:
    trials = make_trials(("tiny", "small"))
    written = write_report(trials, tmp_path / "grid", metrics=["test_macro_auroc"])
    assert written["finetune_vs_scratch_test_macro_auroc.png"].stat().st_size > 5_000
    assert "(small)" in written["summary.md"].read_text()

    scratch_only = trials[trials["init"] == "scratch"]
    written = write_report(scratch_only, tmp_path / "scratch", metrics=["test_macro_auroc"])
    assert set(written) == {
        "finetune_vs_scratch_test_macro_auroc.png",
        "summary.csv",
        "summary.md",
        "paired.csv",
        "friedman_architectures.csv",  # two architectures are still ranked
        "friedman_architectures_pairwise.csv",
    }
    text = written["summary.md"].read_text()
    assert "no paired comparison" in text and "no freeze-depth figure" in text


def test_write_report_rejects_before_writing(tmp_path) -> None:
    with pytest.raises(DataError, match="no finished trials"):
        write_report(pd.DataFrame(), tmp_path / "empty")
    with pytest.raises(DataError, match=r"column\(s\) test_macro_f1, test_weighted_f1;"):
        write_report(_drop("test_macro_f1", "test_weighted_f1"), tmp_path / "missing")
    with pytest.raises(ConfigError, match="at least one metric"):
        write_report(make_trials(), tmp_path / "none", metrics=())
    assert not any(tmp_path.iterdir())


def test_import_pulls_in_neither_torch_nor_ray() -> None:
    code = (
        "import sys, analysis.report\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray')\n"
        "             or m.startswith(('study.training', 'study.sweep')))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_study_reports_the_metrics_its_task_has():
    import numpy as np
    import pandas as pd

    from analysis import default_metrics

    qrs = pd.DataFrame({"test_macro_auroc": [np.nan], "test_qrs_f1": [0.9], "test_qrs_ppv": [0.8]})
    assert default_metrics(qrs) == ["test_qrs_f1", "test_qrs_ppv"]
    cls = pd.DataFrame(
        {
            "test_macro_auroc": [0.8],
            "test_macro_f1": [0.5],
            "test_cinc2017_score": [0.7],
            "test_qrs_f1": [None],
        }
    )
    assert default_metrics(cls) == ["test_macro_auroc", "test_macro_f1", "test_cinc2017_score"]


def test_epochs_to_match_scratch_by_hand():
    import numpy as np
    import pandas as pd

    from analysis.curves import epochs_to_match_scratch

    common = {"architecture": "r", "downstream": "d", "data_fraction": 0.5, "repeat": 0}
    trials = pd.DataFrame(
        [
            {
                **common,
                "unit_id": "sc",
                "init": "scratch",
                "upstream": None,
                "pretrain_task": None,
                "freeze_depth": 0,
            },
            {
                **common,
                "unit_id": "ft",
                "init": "pretrained",
                "upstream": "u",
                "pretrain_task": "classification",
                "freeze_depth": 0,
            },
            {
                **common,
                "unit_id": "ft2",
                "init": "pretrained",
                "upstream": "v",
                "pretrain_task": "classification",
                "freeze_depth": 0,
            },
        ]
    )
    epochs = pd.DataFrame(
        {
            "unit_id": ["sc"] * 4 + ["ft"] * 3 + ["ft2"] * 2,
            "epoch": [1, 2, 3, 4, 1, 2, 3, 1, 2],
            # scratch's best: 0.5 at epoch 3; ft reaches it at epoch 2; ft2 never
            "val_loss": [0.9, 0.7, 0.5, 0.6, 0.8, 0.45, 0.4, 0.9, 0.8],
        }
    )
    out = epochs_to_match_scratch(trials, epochs).set_index("unit_id")
    assert out.loc["ft", "scratch_best_epoch"] == 3
    assert out.loc["ft", "epochs_to_match"] == 2
    assert np.isnan(out.loc["ft2", "epochs_to_match"])


# --- effect sizes, the floor of the test, multiple comparisons ------------------------------


@pytest.mark.parametrize(
    ("arm", "dz", "rank_biserial"),
    [
        # diffs 0.05, 0.07, 0.09: d_z = 0.07 / 0.02; every pair positive
        (ARM0, 3.5, 1.0),
        # diffs -0.01, 0.02, 0.05: d_z = 0.02 / 0.03; ranks 1, 2, 3 -> (5 - 1) / 6
        (ARM2, 2 / 3, 2 / 3),
    ],
)
def test_paired_effect_sizes_by_hand(arm: str, dz: float, rank_biserial: float) -> None:
    paired = paired_differences(make_trials())
    mean = DELTA[0 if arm == ARM0 else 2]
    for (down, fraction), base in BASE.items():
        row = _one(paired, downstream=down, data_fraction=fraction, arm=arm)
        scratch_mean = base + 0.02  # scratch: base, base + 0.02, base + 0.04
        assert row["scratch_mean"] == pytest.approx(scratch_mean)
        assert row["relative_gain"] == pytest.approx(np.mean(mean) / scratch_mean)
        assert row["cohens_dz"] == pytest.approx(dz)
        assert row["rank_biserial"] == pytest.approx(rank_biserial)
        # three non-zero pairs: the exact test cannot go below 2 / 2**3
        assert (row["n_nonzero"], row["min_p"], row["p_method"]) == (3, 0.25, "exact")


def test_paired_p_values_are_adjusted_over_the_metrics_table() -> None:
    trials = make_trials()
    # freeze 0 equals its scratch partner everywhere: no test there (NaN p), not in the family
    scratch = trials[trials["init"] == "scratch"].set_index(
        ["downstream", "data_fraction", "repeat"]
    )
    freeze0 = ((trials["init"] == "pretrained") & (trials["freeze_depth"] == 0)).to_numpy()
    keys = zip(trials["downstream"], trials["data_fraction"], trials["repeat"], strict=True)
    partner = np.array([scratch.loc[k, "test_macro_auroc"] for k in keys])
    trials.loc[freeze0, "test_macro_auroc"] = partner[freeze0]
    paired = paired_differences(trials)

    zero = paired[paired["arm"] == ARM0]
    assert zero["wilcoxon_p"].isna().all() and zero["holm_p"].isna().all()
    assert zero["bh_p"].isna().all()
    assert (zero["n_nonzero"] == 0).all() and (zero["min_p"] == 1.0).all()
    assert zero["rank_biserial"].isna().all() and zero["cohens_dz"].isna().all()
    tested = paired[paired["arm"] == ARM2]
    # four p-values of 0.5: Holm min(1, 4 * 0.5) = 1; BH 0.5 * 4 / 4 = 0.5
    assert (paired["n_tests"] == 4).all()
    np.testing.assert_allclose(tested["wilcoxon_p"], 0.5)
    np.testing.assert_allclose(tested["holm_p"], 1.0)
    np.testing.assert_allclose(tested["bh_p"], 0.5)


def _six_pairs(diffs: list[float]) -> pd.DataFrame:
    """One cell of len(diffs) repeats: scratch 0.6 + 0.01 r, freeze 0 = scratch + diffs[r]."""
    rows = []
    for repeat, diff in enumerate(diffs):
        scratch = 0.6 + 0.01 * repeat
        rows.append(_row("tiny", "down_a", 0.5, repeat, None, scratch))
        rows.append(_row("tiny", "down_a", 0.5, repeat, 0, scratch + diff))
    return pd.DataFrame(rows)


def test_markdown_flags_cells_that_cannot_reach_significance(tmp_path) -> None:
    six = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    text = write_report(_six_pairs(six), tmp_path / "six", ["test_macro_auroc"])["summary.md"]
    text = text.read_text()
    # six positive pairs: exact p = 2 / 2**6 = 0.03125, reachable: no flag
    assert "| 0.0312 | 0.0312 | 0.0312 |" in text
    assert "cannot reach p < 0.05 with 6" not in text
    assert "below 6 pairs a cell cannot reach p < 0.05" in text  # the methods paragraph

    five = [0.0, 0.02, 0.03, 0.04, 0.05, 0.06]  # one tie with scratch: five non-zero pairs
    text = write_report(_six_pairs(five), tmp_path / "five", ["test_macro_auroc"])["summary.md"]
    text = text.read_text()
    assert "| 0.0625 (cannot reach p < 0.05 with 5 non-zero pairs) |" in text


# --- headlines chosen on validation ---------------------------------------------------------


def test_headline_arm_is_chosen_on_validation_not_on_test(tmp_path) -> None:
    trials = make_trials()
    # On test freeze 0 is best (+0.07 vs +0.02); on validation freeze 2 is (+0.12 vs +0.07).
    freeze2 = ((trials["init"] == "pretrained") & (trials["freeze_depth"] == 2)).to_numpy()
    trials.loc[freeze2, "val_macro_auroc"] += 0.1

    chosen = select_on_validation(trials)
    assert len(chosen) == 4 and (chosen["arm"] == ARM2).all()
    assert (chosen["selected_on"] == "val_macro_auroc").all()
    np.testing.assert_allclose(chosen["val_mean_diff"], 0.12)
    assert (chosen["n_candidates"] == 2).all() and (chosen["val_n_pairs"] == 3).all()
    assert list(chosen["downstream"]) == ["down_a", "down_a", "down_b", "down_b"]

    text = write_report(trials, tmp_path, ["test_macro_auroc"])["summary.md"].read_text()
    headlines = text.split("## Headlines")[1].split("### Best freeze depth")[0]
    # freeze 2's test difference: 0.02 +- 4.3027 * 0.03 / sqrt(3) = [-0.055, 0.095]
    assert (
        "- at data fraction 0.1 on down_a (tiny), pretrained (up_a/task_x, freeze=2) - scratch = "
        "+0.020 AUROC (+3.2% of scratch) [95% CI -0.055, 0.095], 2/3 pairs won"
    ) in headlines
    assert "chosen on validation AUROC of 2 arms: validation AUROC - scratch = +0.120" in headlines
    assert "freeze=0" not in headlines  # the test-best arm is not a headline
    assert headlines.count("chosen on validation AUROC") == 4
    depths = text.split("### Best freeze depth")[1].split("## Paired differences")[0]
    assert depths.count("freeze=2) - scratch") == 4 and "of 2 depths" in depths


def test_selection_falls_back_to_validation_loss_lower_is_better(tmp_path) -> None:
    trials = make_trials()
    loss = {"scratch": 0.50, 0: 0.45, 2: 0.40}  # freeze 2 has the lowest validation loss
    trials["val_loss"] = [
        loss["scratch"] if init == "scratch" else loss[depth]
        for init, depth in zip(trials["init"], trials["freeze_depth"], strict=True)
    ]
    # down_b's trials have no validation AUROC (a task without one): loss decides there
    trials.loc[(trials["downstream"] == "down_b").to_numpy(), "val_macro_auroc"] = np.nan

    chosen = select_on_validation(trials).set_index(["downstream", "data_fraction"])
    assert chosen.loc[("down_a", 0.1), "selected_on"] == "val_macro_auroc"
    assert chosen.loc[("down_a", 0.1), "arm"] == ARM0
    assert chosen.loc[("down_b", 0.1), "selected_on"] == "val_loss"
    assert chosen.loc[("down_b", 0.1), "arm"] == ARM2
    assert chosen.loc[("down_b", 0.1), "val_mean_diff"] == pytest.approx(-0.10)

    text = write_report(trials, tmp_path, ["test_macro_auroc"])["summary.md"].read_text()
    assert "chosen on validation loss of 2 arms: validation loss - scratch = -0.100" in text


def test_selection_per_source_picks_a_freeze_depth() -> None:
    trials = make_trials()
    by = ("downstream", "architecture", "upstream", "pretrain_task", "data_fraction")
    chosen = select_on_validation(trials, by)
    assert list(chosen.columns[: len(by)]) == list(by)
    assert (chosen["freeze_depth"] == 0).all() and (chosen["upstream"] == "up_a").all()
    assert "arm" in chosen and "pretrain_task" in chosen


def test_selection_without_validation_numbers(tmp_path) -> None:
    trials = make_trials().drop(columns="val_macro_auroc")
    chosen = select_on_validation(trials)
    assert chosen["selected_on"].isna().all() and chosen["arm"].isna().all()
    text = write_report(trials, tmp_path, ["test_macro_auroc"])["summary.md"].read_text()
    assert "- downstream down_a, architecture tiny, data_fraction 0.1: no validation number" in text


@pytest.mark.parametrize(
    "by", [("downstream", "architecture"), ("downstream", "architecture", "data_fraction", "seed")]
)
def test_selection_rejects_bad_groups(by: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError, match="by must be drawn from .* and include"):
        select_on_validation(make_trials(), by)


# --- rankings across cells ------------------------------------------------------------------


def test_rankings_by_hand() -> None:
    trials = make_trials(("tiny", "small"))
    ranked = rankings(trials)

    # In every (downstream, architecture, fraction) block freeze 0 > freeze 2 > scratch:
    # rank sums 8, 16, 24 over N = 8 blocks, chi2 = 12 / (8 * 3 * 4) * 896 - 3 * 8 * 4 = 16
    arms = ranked["arms"]
    assert (arms.test, arms.k, arms.n_blocks, arms.n_dropped) == ("friedman", 3, 8, 0)
    assert list(arms.avg_ranks.index) == [ARM0, ARM2, "scratch"]
    np.testing.assert_allclose(arms.avg_ranks, [1, 2, 3])
    assert arms.statistic == pytest.approx(16.0)
    assert arms.p == pytest.approx(math.exp(-8))  # chi-square with 2 df
    assert arms.cd == pytest.approx(2.343 * math.sqrt(3 * 4 / (6 * 8)), rel=5e-4)  # Demsar q

    # Two identical architectures: Wilcoxon instead of Friedman, no non-zero difference
    architectures = ranked["architectures"]
    assert (architectures.test, architectures.k, architectures.n_blocks) == ("wilcoxon", 2, 12)
    np.testing.assert_allclose(architectures.avg_ranks, [1.5, 1.5])
    assert math.isnan(architectures.p)

    # One architecture, scratch only: nothing to rank
    assert rankings(make_trials()[lambda t: t["init"] == "scratch"]) == {}


def test_rankings_drop_blocks_lacking_a_treatment() -> None:
    trials = make_trials(("tiny", "small"))
    gone = (
        (trials["init"] == "scratch")
        & (trials["architecture"] == "small")
        & (trials["downstream"] == "down_b")
        & (trials["data_fraction"] == 1.0)
    )
    ranked = rankings(trials[~gone.to_numpy()])
    assert (ranked["arms"].n_blocks, ranked["arms"].n_dropped) == (7, 1)
    assert (ranked["architectures"].n_blocks, ranked["architectures"].n_dropped) == (11, 1)


def test_write_report_rankings_and_data_efficiency(tmp_path) -> None:
    written = write_report(make_trials(("tiny", "small")), tmp_path, ["test_macro_auroc"])
    table = pd.read_csv(written["friedman_arms.csv"])
    assert list(table["treatment"]) == [ARM0, ARM2, "scratch"]
    np.testing.assert_allclose(table["avg_rank"], [1, 2, 3])
    np.testing.assert_allclose(table["p"], math.exp(-8))
    assert table["cd"].iloc[0] == pytest.approx(2.343 / 2, rel=5e-4)
    assert set(table["test"]) == {"friedman"} and set(table["n_blocks"]) == {8}
    pairwise = pd.read_csv(written["friedman_arms_pairwise.csv"])
    assert list(zip(pairwise["a"], pairwise["b"], strict=True)) == [
        (ARM0, ARM2),
        (ARM0, "scratch"),
        (ARM2, "scratch"),
    ]
    # 8 blocks, all one sign: exact p = 2 / 2**8 each, Holm 3 * that
    np.testing.assert_allclose(pairwise["wilcoxon_p"], 2 / 2**8)
    np.testing.assert_allclose(pairwise["holm_p"], 3 * 2 / 2**8)
    assert "friedman_architectures.csv" in written

    efficiency = pd.read_csv(written["data_efficiency.csv"])
    assert len(efficiency) == 16 and efficiency["reached"].sum() == 8

    text = written["summary.md"].read_text()
    assert "3 arms over 8 complete block(s). Friedman chi2 = 16.000, p = 0.000335." in text
    assert "With two architectures the Friedman test does not apply" in text
    assert (
        "| down_a | tiny | pretrained:up_a/task_x/freeze=0 | 0.1 | 0.690 | 0.224 | 2.24x |" in text
    )
    assert "| not reached within the measured fractions | n/a |" in text


# --- epochs to match ------------------------------------------------------------------------


def test_write_report_summarizes_epochs_to_match(tmp_path) -> None:
    trials = make_trials()
    curves = {
        "scratch": [0.9, 0.7, 0.5, 0.6],  # best 0.5 at epoch 3
        "ft0": [0.8, 0.45, 0.4],  # reaches it at epoch 2
        "ft2": [0.9, 0.8],  # never
    }
    rows = []
    for unit in trials["unit_id"]:
        curve = curves[unit.split("-")[3]]
        rows += [{"unit_id": unit, "epoch": e + 1, "val_loss": v} for e, v in enumerate(curve)]
    written = write_report(trials, tmp_path, ["test_macro_auroc"], epochs=pd.DataFrame(rows))

    matched = pd.read_csv(written["epochs_to_match.csv"])
    assert len(matched) == 24 and matched["epochs_to_match"].isna().sum() == 12
    summary = pd.read_csv(written["epochs_to_match_summary.csv"])
    assert len(summary) == 4  # downstream x arm
    row = _one(summary, downstream="down_a", arm=ARM0)
    assert (row["n_trials"], row["n_matched"], row["n_never"]) == (6, 6, 0)
    assert (row["median_epochs_to_match"], row["median_scratch_best_epoch"]) == (2, 3)
    row = _one(summary, downstream="down_b", arm=ARM2)
    assert (row["n_matched"], row["n_never"]) == (0, 6)
    text = written["summary.md"].read_text()
    assert f"| down_a | tiny | {ARM0} | 6 | 6 | 0 | 2 | 3 |" in text
    assert f"| down_b | tiny | {ARM2} | 6 | 0 | 6 | n/a | 3 |" in text
    # without epochs: no such part
    assert "epochs_to_match.csv" not in write_report(trials, tmp_path / "plain")
