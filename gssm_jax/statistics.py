"""Paired comparisons across graph seeds, and Holm's correction across graphs.

Experiment 1 trains the same learner on both sides of a pair with graph seed k shared (same kernel
key, data stream, held-out set and initialisation), so the sides are compared *paired by seed*: on
the per-seed differences a_k - b_k. Two tests of "no difference" are reported side by side:

* the paired t-test (`scipy.stats.ttest_rel`), whose interval of the mean difference is the effect
  size; it assumes the differences are roughly normal;
* the sign-flip permutation test (`scipy.stats.permutation_test`, `permutation_type="samples"`
  swaps the two values of a pair, i.e. flips the sign of its difference), exact over all 2^n flips
  for n <= `EXACT_MAX_PAIRS` pairs. It assumes only that the sides are exchangeable within a pair
  under the null, but its smallest two-sided p-value is 2 / 2^n: with 5 pairs it cannot go below
  0.0625.

A value that may be *censored* (a run that never reached a stated loss: +inf) is compared by pooled
ranks instead (`paired_rank_comparison`). Holm's step-down correction (`holm`) is written here:
scipy 1.17 has Benjamini-Hochberg / Benjamini-Yekutieli (`false_discovery_control`), not Holm.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats

# Up to this many pairs the permutation test enumerates every sign flip (2^16 = 65,536); above, it
# draws `MONTE_CARLO_RESAMPLES` random flips with a fixed seed, so a report is reproducible.
EXACT_MAX_PAIRS = 16
MONTE_CARLO_RESAMPLES = 99_999
PERMUTATION_SEED = 0  # permutation_test(rng=...) needs scipy >= 1.15 (setup.cfg)


@dataclasses.dataclass(frozen=True)
class Interval:
    """A sample mean with its two-sided Student-t confidence interval.

    Attributes:
      mean: sample mean.
      low, high: interval ends (nan for fewer than 2 values).
      stderr: standard error of the mean, sample std (ddof=1) / sqrt(count) (nan for < 2 values).
      count: number of values.
      level: confidence level, e.g. 0.95.
    """

    mean: float
    low: float
    high: float
    stderr: float
    count: int
    level: float


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """Paired comparison of a_k and b_k over n pairs: the mean difference, its interval, two tests.

    Attributes:
      pairs: number of pairs n.
      mean_difference: mean of a_k - b_k (the effect size, in the values' unit).
      low, high: Student-t interval of the mean difference at `level` (nan for n < 2 or no spread).
      level: confidence level of the interval.
      t_statistic, dof: paired t statistic and its degrees of freedom n - 1.
      t_p_value: two-sided p-value of the paired t-test (nan when undefined: n < 2 or no spread).
      permutation_p_value: two-sided p-value of the sign-flip permutation test.
      permutation_exact: whether every sign flip was enumerated (else Monte Carlo).
      smallest_permutation_p: the smallest two-sided p-value the exact test can give with n pairs, 2 / 2^n.
    """

    pairs: int
    mean_difference: float
    low: float
    high: float
    level: float
    t_statistic: float
    dof: int
    t_p_value: float
    permutation_p_value: float
    permutation_exact: bool
    smallest_permutation_p: float


def _as_array(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"{name} is empty; need at least one value")
    return array


def _paired_arrays(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_array(a, "a"), _as_array(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a paired comparison needs as many values in a as in b; got {a.size} and {b.size}")
    return a, b


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean, std(ddof=1) / sqrt(n); the error is nan for fewer than 2 values.

    The library's one such helper (difficulty over graph seeds, excess loss over held-out sequences, the
    report's intervals).
    """
    array = _as_array(values, "values")
    stderr = float(array.std(ddof=1) / math.sqrt(array.size)) if array.size > 1 else math.nan
    return float(array.mean()), stderr


def confidence_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of `values` with the Student-t interval mean +- t_{(1+level)/2, n-1} * std(ddof=1) / sqrt(n)."""
    count = _as_array(values, "values").size
    mean, stderr = mean_and_stderr(values)
    if count < 2:
        return Interval(mean, math.nan, math.nan, math.nan, count, level)
    half_width = float(scipy_stats.t.ppf(0.5 + level / 2, count - 1)) * stderr
    return Interval(mean, mean - half_width, mean + half_width, stderr, count, level)


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def sign_flip_p_value(a: np.ndarray, b: np.ndarray) -> tuple[float, bool]:
    """Two-sided p-value of the sign-flip permutation test of mean(a - b) = 0, and whether it is exact."""
    exact = a.size <= EXACT_MAX_PAIRS
    if a.size < 2:  # scipy refuses one pair; its 2 flips give |mean| >= |observed| in both
        return 1.0, True
    result = scipy_stats.permutation_test(
        (a, b), _mean_difference, permutation_type="samples", vectorized=True, alternative="two-sided",
        n_resamples=2**a.size if exact else MONTE_CARLO_RESAMPLES, rng=np.random.default_rng(PERMUTATION_SEED))
    return float(result.pvalue), exact


def paired_comparison(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> PairedComparison:
    """Paired t-test and sign-flip permutation test of a_k - b_k, with the mean difference's interval.

    Args:
      a, b: one value per pair, in pair order (a_k and b_k share graph seed k).
      level: confidence level of the interval of the mean difference.
    """
    a, b = _paired_arrays(a, b)
    differences = a - b
    pairs = differences.size
    permutation_p, exact = sign_flip_p_value(a, b)
    smallest = min(1.0, 2.0 / 2**pairs)
    if pairs < 2 or not np.ptp(differences) > 0:
        # No spread: the t statistic is undefined (scipy returns nan or inf); never call it significant.
        return PairedComparison(pairs, float(differences.mean()), math.nan, math.nan, level, math.nan, pairs - 1,
                                math.nan, permutation_p, exact, smallest)
    test = scipy_stats.ttest_rel(a, b)
    interval = test.confidence_interval(level)
    return PairedComparison(pairs, float(differences.mean()), float(interval.low), float(interval.high), level,
                            float(test.statistic), int(test.df), float(test.pvalue), permutation_p, exact, smallest)


@dataclasses.dataclass(frozen=True)
class RankComparison:
    """Paired comparison of possibly censored values (+inf: never reached) by their pooled ranks.

    All 2n values are ranked together (ties averaged; every censored value ties at the worst rank),
    and the per-pair rank differences r(a_k) - r(b_k) are tested like `PairedComparison`: swapping a
    pair's two values swaps their ranks, so the sign-flip test on rank differences is exact under the
    null of exchangeability within pairs, censoring included. The paired t-test on the same rank
    differences (the rank-transform t) is the approximate companion.

    Attributes:
      ranks: the PairedComparison of the rank differences (mean_difference < 0: a tends to be smaller).
      a_smaller, b_smaller, ties: pairs where a_k < b_k, b_k < a_k, a_k == b_k (both censored counts as a tie).
      censored_a, censored_b: number of censored values on each side.
    """

    ranks: PairedComparison
    a_smaller: int
    b_smaller: int
    ties: int
    censored_a: int
    censored_b: int


def paired_rank_comparison(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> RankComparison:
    """`RankComparison` of a_k and b_k, where +inf marks a censored value (worse than any finite one)."""
    a, b = _paired_arrays(a, b)
    if np.isnan(a).any() or np.isnan(b).any() or (np.concatenate([a, b]) == -np.inf).any():
        raise ValueError("paired_rank_comparison takes finite values or +inf (censored); got nan or -inf")
    ranks = scipy_stats.rankdata(np.concatenate([a, b]))
    return RankComparison(paired_comparison(ranks[:a.size], ranks[a.size:], level), int(np.sum(a < b)),
                          int(np.sum(b < a)), int(np.sum(a == b)), int(np.sum(np.isinf(a))),
                          int(np.sum(np.isinf(b))))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control without independence assumptions).

    With the m defined p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of p_(i) is
    max_{j <= i} min(1, (m - j + 1) p_(j)); rejecting where the adjusted value is < alpha is Holm's
    procedure at level alpha. nan entries (tests not performed) stay nan and do not count in m.

    Returns:
      float64 array of the adjusted p-values, in the input order.
    """
    p = np.asarray(p_values, np.float64).ravel()
    adjusted = np.full(p.shape, np.nan)
    defined = np.flatnonzero(~np.isnan(p))
    if defined.size == 0:
        return adjusted
    if np.any((p[defined] < 0) | (p[defined] > 1)):
        raise ValueError(f"p-values must lie in [0, 1]; got {p[defined]}")
    order = defined[np.argsort(p[defined], kind="stable")]
    m = order.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted
