"""analysis.stats: every number checked against SciPy, statsmodels or a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis.stats import (
    adjust_pvalues,
    cohens_dz,
    friedman_ranks,
    min_wilcoxon_p,
    nemenyi_cd,
    rank_biserial,
    relative_gain,
    signed_rank_test,
)
from study.errors import DataError

# --- the floor of the signed-rank test ------------------------------------------------------


@pytest.mark.parametrize("n", range(1, 11))
def test_min_p_is_scipys_exact_p_of_all_positive_differences(n: int) -> None:
    diffs = np.arange(1, n + 1, dtype=float)  # all one sign, no ties: the most extreme case
    exact = stats.wilcoxon(diffs, method="exact").pvalue
    assert min_wilcoxon_p(n) == pytest.approx(exact, rel=1e-12)


def test_min_p_by_hand() -> None:
    assert min_wilcoxon_p(3) == 0.25
    assert min_wilcoxon_p(5) == 0.0625 and min_wilcoxon_p(6) == 0.03125  # 6 pairs reach 0.05
    assert min_wilcoxon_p(0) == 1.0 and min_wilcoxon_p(1) == 1.0  # capped
    with pytest.raises(DataError, match="n_nonzero must be >= 0, got -1"):
        min_wilcoxon_p(-1)


# --- the signed-rank test -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("diffs", "p", "method"),
    [
        # W- = 1 of ranks 1..3: 2 * P(W+ <= 1) = 2 * 2/8
        ([-0.01, 0.02, 0.05], 0.5, "exact"),
        # zeros dropped first: the same as [1, 2, 3], all positive: 2 / 2**3
        ([0.0, 1.0, 2.0, 3.0, 0.0], 0.25, "exact"),
        # tied |d|: midranks 1.5, 1.5, 3, 4; only the all-positive flip reaches W+ = 10
        ([1.0, 1.0, 2.0, 3.0], 2 / 16, "exact (tied ranks, all sign flips)"),
        # W+ = 8.5; negative rank sums <= 1.5 in 3 of the 16 flips: 2 * 3/16
        ([1.0, -1.0, 2.0, 3.0], 6 / 16, "exact (tied ranks, all sign flips)"),
    ],
)
def test_signed_rank_p_by_hand(diffs: list[float], p: float, method: str) -> None:
    result = signed_rank_test(diffs)
    assert result.p == pytest.approx(p)
    assert result.method == method
    assert result.n_nonzero == sum(d != 0 for d in diffs)


@pytest.mark.parametrize(
    ("n", "ties", "method"),
    [
        (8, False, "exact"),
        (50, False, "exact"),
        (10, True, "exact (tied ranks, all sign flips)"),
        (20, True, "normal approximation"),
        (60, False, "normal approximation"),
    ],
)
def test_signed_rank_p_is_scipys_auto_choice(n: int, ties: bool, method: str) -> None:
    rng = np.random.default_rng(n)
    diffs = rng.normal(0.2, 1.0, n)
    if ties:
        diffs[1] = -diffs[0]
    result = signed_rank_test(diffs)
    expected = stats.wilcoxon(diffs)  # method="auto", zero_method="wilcox"
    assert result.method == method
    assert result.p == pytest.approx(expected.pvalue, rel=1e-9)
    assert result.statistic == pytest.approx(expected.statistic)


def test_signed_rank_is_nan_below_two_nonzero_differences() -> None:
    for diffs in ([], [0.3], [0.0, 0.0, 0.0], [0.0, 0.2, np.nan]):
        result = signed_rank_test(diffs)
        assert math.isnan(result.p) and result.method == ""


# --- multiple comparisons -------------------------------------------------------------------


def test_adjust_pvalues_by_hand_keeps_nan_out_of_the_family() -> None:
    holm, bh, n_tests = adjust_pvalues([0.01, np.nan, 0.04, 0.03])
    assert n_tests == 3
    # Holm: sorted 0.01, 0.03, 0.04 times 3, 2, 1 -> 0.03, 0.06, 0.04 -> running max
    np.testing.assert_allclose(holm, [0.03, np.nan, 0.06, 0.06])
    # BH: 0.01 * 3/1, 0.03 * 3/2, 0.04 * 3/3 -> 0.03, 0.045, 0.04 -> running min from the top
    np.testing.assert_allclose(bh, [0.03, np.nan, 0.04, 0.04])


def test_adjust_pvalues_matches_statsmodels() -> None:
    p = np.random.default_rng(3).uniform(0, 0.2, 12)
    holm, bh, n_tests = adjust_pvalues(p)
    assert n_tests == 12
    np.testing.assert_allclose(holm, multipletests(p, method="holm")[1])
    np.testing.assert_allclose(bh, multipletests(p, method="fdr_bh")[1])


def test_adjust_pvalues_without_tests() -> None:
    for p in ([], [np.nan, np.nan]):
        holm, bh, n_tests = adjust_pvalues(p)
        assert n_tests == 0 and np.isnan(holm).all() and np.isnan(bh).all()
        assert len(holm) == len(p)


# --- effect sizes ---------------------------------------------------------------------------


def test_cohens_dz_by_hand() -> None:
    assert cohens_dz([0.05, 0.07, 0.09]) == pytest.approx(0.07 / 0.02)
    assert cohens_dz([-0.01, 0.02, 0.05, np.nan]) == pytest.approx(0.02 / 0.03)
    assert math.isnan(cohens_dz([0.05]))  # n < 2
    assert math.isnan(cohens_dz([0.0, 0.0, 0.0]))  # std 0
    # the same 0.05 gain on different bases differs only by rounding: still no spread
    bases = np.array([0.6, 0.62, 0.64, 0.7113])
    assert math.isnan(cohens_dz((bases + 0.05) - bases))


@pytest.mark.parametrize(
    ("diffs", "expected"),
    [
        ([-0.01, 0.02, 0.05], (5 - 1) / 6),  # ranks 1, 2, 3: W+ = 5, W- = 1
        ([0.05, 0.07, 0.09], 1.0),
        ([-0.3, -0.1], -1.0),
        ([0.0, 0.02, -0.05], (1 - 2) / 3),  # the zero is dropped before ranking
        ([1.0, -1.0, 2.0], (4.5 - 1.5) / 6),  # midranks 1.5, 1.5, 3
    ],
)
def test_rank_biserial_by_hand(diffs: list[float], expected: float) -> None:
    assert rank_biserial(diffs) == pytest.approx(expected)


def test_rank_biserial_without_nonzero_difference_is_nan() -> None:
    assert math.isnan(rank_biserial([0.0, 0.0]))
    assert math.isnan(rank_biserial([]))


def test_relative_gain_by_hand() -> None:
    ours, theirs = [0.65, 0.69, 0.73, np.nan], [0.60, 0.62, 0.64, 0.9]
    assert relative_gain(ours, theirs) == pytest.approx(0.07 / 0.62)  # the NaN pair is left out
    assert math.isnan(relative_gain([0.1], [0.0]))
    assert math.isnan(relative_gain([], []))
    with pytest.raises(DataError, match="pair by position"):
        relative_gain([0.1, 0.2], [0.1])


# --- rankings across cells ------------------------------------------------------------------

# Demsar (2006), Table 5(a): q_0.05 of the Nemenyi test for k = 2..10 classifiers.
DEMSAR_Q05 = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]


@pytest.mark.parametrize(("k", "q"), list(zip(range(2, 11), DEMSAR_Q05, strict=True)))
def test_nemenyi_cd_matches_demsars_table(k: int, q: float) -> None:
    n = 14
    assert nemenyi_cd(k, n) == pytest.approx(q * math.sqrt(k * (k + 1) / (6 * n)), rel=5e-4)


def test_nemenyi_cd_demsars_worked_example() -> None:
    # Demsar section 3.2.4: four classifiers on 14 data sets, CD = 2.569 sqrt(4 5 / (6 14))
    assert nemenyi_cd(4, 14) == pytest.approx(1.25, abs=0.005)
    assert math.isnan(nemenyi_cd(3, 0))
    with pytest.raises(DataError, match="k >= 2"):
        nemenyi_cd(1, 5)


def _long(table: dict[str, list[float]], blocks: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"block": block, "treatment": name, "value": value}
            for name, values in table.items()
            for block, value in zip(blocks, values, strict=True)
        ]
    )


# Four blocks, three treatments; rank 1 = highest value:
#   b1: A .9 B .8 C .7 -> 1, 2, 3       b2: A .8 B .9 C .7 -> 2, 1, 3
#   b3: A .9 B .7 C .8 -> 1, 3, 2       b4: A .9 B .8 C .8 -> 1, 2.5, 2.5
# average ranks A 5/4, B 8.5/4, C 10.5/4
RANK_TABLE = {
    "A": [0.9, 0.8, 0.9, 0.9],
    "B": [0.8, 0.9, 0.7, 0.8],
    "C": [0.7, 0.7, 0.8, 0.8],
}
BLOCKS = ["b1", "b2", "b3", "b4"]


def test_friedman_ranks_by_hand_and_against_scipy() -> None:
    frame = _long(RANK_TABLE, BLOCKS)
    # a fifth block lacks C, a sixth has a NaN: both dropped and counted
    frame = pd.concat(
        [
            frame,
            pd.DataFrame(
                {
                    "block": ["b5", "b5", "b6", "b6", "b6"],
                    "treatment": ["A", "B", "A", "B", "C"],
                    "value": [0.1, 0.2, 0.5, np.nan, 0.4],
                }
            ),
        ]
    )
    result = friedman_ranks(frame, ["block"], "treatment", "value")

    assert (result.test, result.k, result.n_blocks, result.n_dropped) == ("friedman", 3, 4, 2)
    assert list(result.avg_ranks.index) == ["A", "B", "C"]
    np.testing.assert_allclose(result.avg_ranks, [5 / 4, 8.5 / 4, 10.5 / 4])
    expected = stats.friedmanchisquare(*RANK_TABLE.values())
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p == pytest.approx(expected.pvalue)
    q = stats.studentized_range.ppf(0.95, 3, np.inf) / math.sqrt(2)
    assert result.cd == pytest.approx(q * math.sqrt(3 * 4 / (6 * 4)))

    pairwise = result.pairwise.set_index(["a", "b"])
    assert list(pairwise.index) == [("A", "B"), ("A", "C"), ("B", "C")]
    raw = [
        stats.wilcoxon(np.subtract(RANK_TABLE[a], RANK_TABLE[b])).pvalue for a, b in pairwise.index
    ]
    np.testing.assert_allclose(pairwise["wilcoxon_p"], raw)
    np.testing.assert_allclose(pairwise["holm_p"], multipletests(raw, method="holm")[1])
    np.testing.assert_allclose(pairwise["rank_diff"], [3.5 / 4, 5.5 / 4, 2 / 4])
    assert list(pairwise["beyond_cd"]) == [d > result.cd for d in pairwise["rank_diff"]]


def test_friedman_chi_square_without_ties_by_hand() -> None:
    # A always first, B second, C third over 5 blocks: rank sums 5, 10, 15;
    # chi2 = 12 / (N k (k + 1)) * sum R^2 - 3 N (k + 1) = 12/60 * 350 - 60 = 10, p = exp(-5)
    table = {"A": [0.9] * 5, "B": [0.5] * 5, "C": [0.1] * 5}
    result = friedman_ranks(_long(table, list("vwxyz")), ["block"], "treatment", "value")
    assert result.statistic == pytest.approx(10.0)
    assert result.p == pytest.approx(math.exp(-5))
    np.testing.assert_allclose(result.avg_ranks, [1, 2, 3])


def test_two_treatments_fall_back_to_wilcoxon() -> None:
    table = {"A": RANK_TABLE["A"], "B": RANK_TABLE["B"]}
    result = friedman_ranks(_long(table, BLOCKS), ["block"], "treatment", "value")
    expected = stats.wilcoxon(np.subtract(table["A"], table["B"]))
    assert (result.test, result.k, result.n_blocks) == ("wilcoxon", 2, 4)
    assert result.p == pytest.approx(expected.pvalue)
    np.testing.assert_allclose(result.avg_ranks, [1.25, 1.75])  # A wins 3 of 4 blocks
    assert len(result.pairwise) == 1


def test_friedman_ranks_with_blocks_of_several_columns() -> None:
    frame = _long(RANK_TABLE, BLOCKS)
    frame["down"] = frame["block"].str[1].astype(int) % 2
    frame["fraction"] = frame["block"].map({"b1": 0.1, "b2": 0.1, "b3": 1.0, "b4": 1.0})
    result = friedman_ranks(frame, ["down", "fraction"], "treatment", "value")
    assert result.n_blocks == 4
    np.testing.assert_allclose(result.avg_ranks, [5 / 4, 8.5 / 4, 10.5 / 4])


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (_long({"A": [0.1, 0.2]}, ["b1", "b2"]), "at least 2 treatments in treatment, got 1"),
        (
            pd.concat([_long(RANK_TABLE, BLOCKS), _long({"A": [0.5]}, ["b1"])]),
            r"each \(block, treatment\) must have one row; 2 rows share one",
        ),
        (_long(RANK_TABLE, BLOCKS).drop(columns="value"), r"column\(s\) value;"),
    ],
)
def test_friedman_ranks_rejects_bad_frames(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(DataError, match=message):
        friedman_ranks(frame, ["block"], "treatment", "value")
