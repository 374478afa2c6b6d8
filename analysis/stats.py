"""The statistics behind the report: the paired test and its floor, effect sizes, multiple
comparisons and rankings across cells. Plain numbers in, plain numbers out; no trials table.

Everything that SciPy or statsmodels computes is delegated to them (the signed-rank test,
the Friedman test, the studentized range, Holm and Benjamini-Hochberg); what is left here is
choosing their options, NaN handling and the few closed forms they lack (the attainable
minimum p, paired Cohen's d and the matched-pairs rank-biserial correlation).

Rankings follow Demsar (2006, JMLR 7) for the Friedman test with average ranks and the
Nemenyi critical difference, and Benavoli, Corani & Mangili (2016, JMLR 17) for the
pairwise Wilcoxon tests with Holm's correction as the alternative to mean-rank post-hoc tests.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats
from statsmodels.stats.multitest import multipletests

from study.errors import DataError

__all__ = [
    "EXACT_MAX_PAIRS",
    "FriedmanResult",
    "SignedRank",
    "adjust_pvalues",
    "cohens_dz",
    "friedman_ranks",
    "min_wilcoxon_p",
    "nemenyi_cd",
    "rank_biserial",
    "relative_gain",
    "signed_rank_test",
]

# Up to this many non-zero differences without tied |d| the signed-rank p is exact; the
# same limit as scipy.stats.wilcoxon's method="auto".
EXACT_MAX_PAIRS = 50
# With tied |d| the exact test enumerates all 2**n sign flips; PermutationMethod's default
# 9999 resamples cover them up to n = 13 (scipy's "auto" uses the same limit).
_PERMUTATION_MAX_PAIRS = 13


class SignedRank(NamedTuple):
    """A two-sided Wilcoxon signed-rank test on paired differences (zeros dropped)."""

    statistic: float  # min(W+, W-), scipy's two-sided statistic
    p: float
    method: str  # "exact", "exact (tied ranks, all sign flips)", "normal approximation", ""
    n_nonzero: int


def signed_rank_test(diffs: ArrayLike) -> SignedRank:
    """Two-sided Wilcoxon signed-rank test of paired differences, zeros dropped.

    Zero differences are dropped first (Wilcoxon's own rule, scipy's ``zero_method="wilcox"``)
    and NaNs are ignored. The null distribution is chosen as scipy's ``method="auto"`` would
    choose it, but named so the report can say which was used:

    - ``"exact"``: at most 50 non-zero differences and no two with the same ``|d|``:
      ``scipy.stats.wilcoxon(method="exact")``, the exact signed-rank distribution;
    - ``"exact (tied ranks, all sign flips)"``: tied ``|d|`` and at most 13 differences: the
      exact permutation distribution over all ``2**n`` sign flips
      (``scipy.stats.PermutationMethod``), which stays exact with midranks;
    - ``"normal approximation"``: otherwise, with continuity correction.

    Args:
        diffs: Paired differences.

    Returns:
        The statistic (``min(W+, W-)``), the p-value, the method and the number of non-zero
        differences; statistic and p are NaN (method ``""``) below 2 non-zero differences.
    """
    values = np.asarray(diffs, dtype=float)
    nonzero = values[~np.isnan(values) & (values != 0)]
    n = int(nonzero.size)
    if n < 2:
        return SignedRank(math.nan, math.nan, "", n)
    ties = np.unique(np.abs(nonzero)).size < n
    if not ties and n <= EXACT_MAX_PAIRS:
        method, how = "exact", "exact"
    elif ties and n <= _PERMUTATION_MAX_PAIRS:
        method, how = stats.PermutationMethod(), "exact (tied ranks, all sign flips)"
    else:
        method, how = "asymptotic", "normal approximation"
    result = stats.wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided", method=method)
    return SignedRank(float(result.statistic), float(result.pvalue), how, n)


def min_wilcoxon_p(n_nonzero: int) -> float:
    """The smallest two-sided exact signed-rank p-value that ``n_nonzero`` pairs can give.

    It is reached when every difference has the same sign: ``2 / 2**n``, capped at 1. Five
    pairs cannot get below 0.0625, six reach 0.03125: below six non-zero pairs no test at
    the 0.05 level can come out significant, whatever the effect. Also the floor of the
    tied-ranks exact test (the all-one-sign flip is still the only most extreme one).

    Args:
        n_nonzero: Number of non-zero paired differences.

    Returns:
        ``min(1, 2 / 2**n_nonzero)``.

    Raises:
        DataError: If ``n_nonzero`` is negative.
    """
    if n_nonzero < 0:
        raise DataError(f"n_nonzero must be >= 0, got {n_nonzero}")
    return min(1.0, 2.0 / 2.0**n_nonzero)


def adjust_pvalues(p: ArrayLike) -> tuple[np.ndarray, np.ndarray, int]:
    """Holm and Benjamini-Hochberg adjusted p-values over one family, NaN kept in place.

    The family is every non-NaN entry of ``p``; NaN entries (tests that could not be run)
    are not members and stay NaN. Computed by
    ``statsmodels.stats.multitest.multipletests`` (``"holm"``, ``"fdr_bh"``).

    Args:
        p: Unadjusted p-values.

    Returns:
        ``(holm, bh, n_tests)``: Holm's step-down adjusted p-values (family-wise error rate),
        the Benjamini-Hochberg step-up adjusted p-values (false discovery rate), both in the
        order of ``p``, and the family size (the number of non-NaN entries).
    """
    values = np.asarray(p, dtype=float).reshape(-1)
    holm = np.full(values.shape, math.nan)
    bh = np.full(values.shape, math.nan)
    present = ~np.isnan(values)
    n_tests = int(present.sum())
    if n_tests:
        holm[present] = multipletests(values[present], method="holm")[1]
        bh[present] = multipletests(values[present], method="fdr_bh")[1]
    return holm, bh, n_tests


def _rounding_zero(std: float, values: np.ndarray) -> bool:
    """Whether a standard deviation is zero up to floating-point rounding of ``values``."""
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    return std <= 64 * np.finfo(float).eps * scale


def cohens_dz(diffs: ArrayLike) -> float:
    """Cohen's d for paired samples, ``d_z = mean(d) / std(d)`` (sample std, ddof=1).

    NaNs are ignored. NaN below 2 differences, and when the differences do not vary (their
    std is zero up to floating-point rounding: 64 ulps of the largest ``|d|``), where the
    ratio is undefined rather than infinite.

    Args:
        diffs: Paired differences.

    Returns:
        The standardized mean difference.
    """
    values = np.asarray(diffs, dtype=float)
    values = values[~np.isnan(values)]
    if values.size < 2:
        return math.nan
    std = float(values.std(ddof=1))
    if _rounding_zero(std, values):
        return math.nan
    return float(values.mean()) / std


def rank_biserial(diffs: ArrayLike) -> float:
    """The matched-pairs rank-biserial correlation, ``(W+ - W-) / (W+ + W-)``.

    Over the non-zero differences (as the signed-rank test; NaNs ignored), ranked by ``|d|``
    with midranks for ties; ``W+`` sums the ranks of positive differences, ``W-`` of negative
    ones. +1: every pair favours the first sample, -1: every pair the second.

    Args:
        diffs: Paired differences.

    Returns:
        The correlation in [-1, 1]; NaN when no difference is non-zero.
    """
    values = np.asarray(diffs, dtype=float)
    nonzero = values[~np.isnan(values) & (values != 0)]
    if nonzero.size == 0:
        return math.nan
    ranks = stats.rankdata(np.abs(nonzero))
    plus = float(ranks[nonzero > 0].sum())
    minus = float(ranks[nonzero < 0].sum())
    return (plus - minus) / (plus + minus)


def relative_gain(ours: ArrayLike, theirs: ArrayLike) -> float:
    """Mean paired gain relative to the reference: ``mean(ours - theirs) / mean(theirs)``.

    Over the pairs where both values are finite.

    Args:
        ours: Values of the compared arm.
        theirs: Values of the reference arm, paired by position.

    Returns:
        The relative gain (0.1 = 10% above the reference mean); NaN without pairs or when
        the reference mean is 0.

    Raises:
        DataError: If the two have different lengths.
    """
    a = np.asarray(ours, dtype=float)
    b = np.asarray(theirs, dtype=float)
    if a.shape != b.shape:
        raise DataError(f"ours and theirs must pair by position, got {a.shape} and {b.shape}")
    both = ~np.isnan(a) & ~np.isnan(b)
    if not both.any():
        return math.nan
    reference = float(b[both].mean())
    if reference == 0:
        return math.nan
    return float((a[both] - b[both]).mean()) / reference


def nemenyi_cd(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """The Nemenyi critical difference of average ranks (Demsar 2006, section 3.2.2).

    ``q_alpha = studentized_range.ppf(1 - alpha, k, inf) / sqrt(2)`` and
    ``CD = q_alpha * sqrt(k (k + 1) / (6 N))``: two treatments whose average ranks over ``N``
    blocks differ by more than CD differ at level ``alpha``.

    Args:
        k: Number of treatments (>= 2).
        n_blocks: Number of blocks N; NaN is returned for 0.
        alpha: Family-wise level.

    Returns:
        The critical difference.

    Raises:
        DataError: If ``k < 2`` or ``alpha`` is outside (0, 1).
    """
    if k < 2:
        raise DataError(f"the critical difference needs k >= 2 treatments, got {k}")
    if not 0 < alpha < 1:
        raise DataError(f"alpha must be in (0, 1), got {alpha}")
    if n_blocks < 1:
        return math.nan
    q_alpha = float(stats.studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)
    return q_alpha * math.sqrt(k * (k + 1) / (6 * n_blocks))


@dataclass(frozen=True, eq=False)
class FriedmanResult:
    """Treatments ranked across blocks; see ``friedman_ranks``.

    Attributes:
        test: ``"friedman"`` (k >= 3) or ``"wilcoxon"`` (k == 2: the Friedman test needs
            three treatments; the two-sided signed-rank test of the block differences
            stands in).
        statistic: Friedman's chi-square (tie-corrected), or the signed-rank statistic.
        p: Its p-value; NaN below 2 complete blocks (or 2 non-zero differences for k == 2).
        n_blocks: Complete blocks used (N).
        n_dropped: Blocks left out because a treatment had no value there.
        k: Number of treatments.
        alpha: Level of the critical difference.
        avg_ranks: Average rank per treatment (rank 1 = highest value in a block, midranks
            for ties), best (lowest) first; indexed by treatment.
        cd: Nemenyi critical difference of average ranks at ``alpha`` (``nemenyi_cd``).
        pairwise: One row per pair of treatments (a ranked above b): a, b, rank_diff
            (b's average rank minus a's), beyond_cd (rank_diff > cd), wilcoxon_p (two-sided
            signed-rank test of a - b over the complete blocks, ``signed_rank_test``) and
            holm_p (Holm over the k (k - 1) / 2 pairs).
    """

    test: str
    statistic: float
    p: float
    n_blocks: int
    n_dropped: int
    k: int
    alpha: float
    avg_ranks: pd.Series
    cd: float
    pairwise: pd.DataFrame


_PAIRWISE_COLUMNS = ["a", "b", "rank_diff", "beyond_cd", "wilcoxon_p", "holm_p"]


def friedman_ranks(
    frame: pd.DataFrame,
    block_cols: Sequence[str],
    treatment_col: str,
    value_col: str,
    alpha: float = 0.05,
) -> FriedmanResult:
    """Rank treatments across blocks: Friedman test, average ranks, critical difference and
    pairwise Wilcoxon tests with Holm's correction.

    Each block ranks the treatments by value, highest first (rank 1), midranks for ties.
    Blocks where a treatment has no row or a NaN value are dropped and counted: every test
    here needs complete blocks. The Friedman test is ``scipy.stats.friedmanchisquare``; with
    two treatments (which it rejects) the two-sided signed-rank test of the block differences
    stands in. Pairwise: for every pair, the signed-rank test of the block differences,
    adjusted by Holm over all pairs: Benavoli et al. (2016) prefer it to the mean-rank
    (Nemenyi) comparison, whose critical difference is reported too.

    Args:
        frame: One row per (block, treatment), e.g. cell means.
        block_cols: Columns that identify a block.
        treatment_col: Column naming the treatment.
        value_col: Column with the value; higher is better.
        alpha: Level of the critical difference.

    Returns:
        The FriedmanResult.

    Raises:
        DataError: If columns are missing, a (block, treatment) has more than one row, or
            there are fewer than 2 treatments.
    """
    block_cols = list(block_cols)
    needed = [*block_cols, treatment_col, value_col]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(
            f"friedman_ranks needs column(s) {', '.join(missing)}; the frame has "
            f"{', '.join(map(str, frame.columns))}"
        )
    duplicated = frame.duplicated([*block_cols, treatment_col], keep=False)
    if duplicated.any():
        first = frame[duplicated].iloc[0]
        raise DataError(
            f"each (block, {treatment_col}) must have one row; {int(duplicated.sum())} rows "
            f"share one, e.g. {treatment_col}={first[treatment_col]!r} at "
            f"{', '.join(f'{c}={first[c]!r}' for c in block_cols)}"
        )
    treatments = list(dict.fromkeys(frame[treatment_col]))
    k = len(treatments)
    if k < 2:
        raise DataError(f"ranking needs at least 2 treatments in {treatment_col}, got {k}")
    table = frame.pivot(index=block_cols, columns=treatment_col, values=value_col)
    table = table.reindex(columns=treatments).astype(float)
    complete = table.dropna()
    n_blocks = len(complete)
    ranks = complete.rank(axis=1, ascending=False, method="average")
    avg_ranks = ranks.mean().sort_values(kind="mergesort").rename("avg_rank")
    avg_ranks.index.name = treatment_col
    cd = nemenyi_cd(k, n_blocks, alpha)

    if k == 2:
        a, b = treatments
        test = signed_rank_test(complete[a] - complete[b])
        name, statistic, p = "wilcoxon", test.statistic, test.p
    else:
        name, statistic, p = "friedman", math.nan, math.nan
        if n_blocks >= 2:
            with np.errstate(divide="ignore", invalid="ignore"):  # all ties: no ranking
                result = stats.friedmanchisquare(*(complete[t] for t in treatments))
            if np.isfinite(result.statistic):
                statistic, p = float(result.statistic), float(result.pvalue)

    order = list(avg_ranks.index) if n_blocks else treatments
    pairs = []
    for a, b in itertools.combinations(order, 2):
        rank_diff = float(avg_ranks[b] - avg_ranks[a])
        pairs.append(
            {
                "a": a,
                "b": b,
                "rank_diff": rank_diff,
                "beyond_cd": bool(rank_diff > cd),
                "wilcoxon_p": signed_rank_test(complete[a] - complete[b]).p,
            }
        )
    pairwise = pd.DataFrame(pairs, columns=_PAIRWISE_COLUMNS[:-1])
    pairwise["holm_p"] = adjust_pvalues(pairwise["wilcoxon_p"])[0]
    return FriedmanResult(
        test=name,
        statistic=statistic,
        p=p,
        n_blocks=n_blocks,
        n_dropped=len(table) - n_blocks,
        k=k,
        alpha=alpha,
        avg_ranks=avg_ranks,
        cd=cd,
        pairwise=pairwise,
    )
