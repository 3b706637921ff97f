"""Summaries of one run's learning curve (excess loss against tokens seen), and bands across runs.

A curve is the run's eval records: `tokens` (training tokens seen at each eval) and `excess` (held-out
excess loss over the exact entropy rate, nats/token). Its summaries:

* the final excess loss (the last eval);
* `tokens_to_reach`: tokens seen when the excess first falls to a stated value, linearly interpolated
  between the two evals around the crossing; +inf (censored) when it never does;
* `doubling_gain`: whether the run still improves, judged after a full learning-rate cool-down: the excess
  of a branch cooled down at half the budget against the run's own (cooled-down) end. Under a decayed
  schedule the end of the curve is flat by construction, so only cooled-down values are comparable;
* `convergence`, the fallback for runs without cool-down branches: the least-squares slope of excess
  against tokens over the last fraction of training, its standard error, and whether it is still falling
  (slope significantly negative, one-sided, *and* a fitted drop across the window of at least a stated
  fraction of the excess at the window's start). It cannot see a run that a decayed learning rate has
  flattened but that more tokens would still improve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats as scipy_stats

from gssm_jax.statistics import Interval, confidence_interval

MIN_WINDOW_POINTS = 3  # a slope's standard error needs n - 2 >= 1 residual degrees of freedom
TOKENS_PER_MILLION = 1e6


class Convergence(NamedTuple):
    """The end of a learning curve: is the excess loss still falling?

    Attributes:
      points: eval records in the window (the last `window` fraction of training tokens).
      slope_per_million_tokens: least-squares slope of excess loss (nats/token) per million tokens seen.
      stderr_per_million_tokens: its standard error (nan with fewer than `MIN_WINDOW_POINTS` points).
      p_value: one-sided p-value of "slope < 0" (t with points - 2 degrees of freedom).
      drop_fraction: fitted decrease across the window / fitted excess at the window's start.
      still_falling: p_value < level and drop_fraction >= min_drop; None when not checked (too few points).
    """

    points: int
    slope_per_million_tokens: float
    stderr_per_million_tokens: float
    p_value: float
    drop_fraction: float
    still_falling: bool | None


def tokens_to_reach(tokens: np.ndarray, excess: np.ndarray, target: float) -> float:
    """Training tokens seen when `excess` first falls to `target` or below (+inf if it never does).

    Args:
      tokens: (evals,) tokens seen at each eval, increasing.
      excess: (evals,) excess loss at each eval, nats/token.
      target: the stated excess, nats/token.

    Returns:
      tokens at the crossing, linearly interpolated between the last eval above `target` and the first
      at or below it; the first eval's tokens if that one is already at or below (an upper bound).
    """
    tokens, excess = np.asarray(tokens, np.float64), np.asarray(excess, np.float64)
    reached = np.flatnonzero(excess <= target)
    if reached.size == 0:
        return math.inf
    first = int(reached[0])
    if first == 0:
        return float(tokens[0])
    fraction = (excess[first - 1] - target) / (excess[first - 1] - excess[first])
    return float(tokens[first - 1] + fraction * (tokens[first] - tokens[first - 1]))


def convergence(tokens: np.ndarray, excess: np.ndarray, *, window: float, level: float,
                min_drop: float) -> Convergence:
    """`Convergence` of the curve over its last `window` fraction of training tokens.

    Args:
      tokens, excess: the curve, (evals,) each (see `tokens_to_reach`); tokens[-1] is the end of training.
      window: fraction of training at the end whose evals are fitted, in (0, 1].
      level: one-sided significance level of "slope < 0".
      min_drop: smallest fitted drop across the window, as a fraction of the fitted excess at its start,
        that counts as still falling.
    """
    tokens, excess = np.asarray(tokens, np.float64), np.asarray(excess, np.float64)
    inside = tokens >= (1 - window) * tokens[-1] * (1 - 1e-9)
    points = int(inside.sum())
    if points < MIN_WINDOW_POINTS:
        return Convergence(points, math.nan, math.nan, math.nan, math.nan, None)
    x, y = tokens[inside] / TOKENS_PER_MILLION, excess[inside]
    fit = scipy_stats.linregress(x, y, alternative="less")
    p_value = float(fit.pvalue)
    if not fit.stderr > 0:  # the points lie exactly on a line: the sign of the slope decides
        p_value = 0.0 if fit.slope < 0 else 1.0
    start = fit.intercept + fit.slope * x[0]
    drop = -fit.slope * (x[-1] - x[0])
    drop_fraction = float(drop / abs(start)) if start != 0 else math.copysign(math.inf, drop)
    return Convergence(points, float(fit.slope), float(fit.stderr), p_value, drop_fraction,
                       bool(p_value < level and drop_fraction >= min_drop))


class DoublingGain(NamedTuple):
    """What doubling the budget bought, both ends after a full learning-rate cool-down.

    Attributes:
      tokens_half, excess_half: tokens and excess loss (nats/token) at the end of the half-budget branch.
      tokens_full, excess_full: the same at the end of the run.
      stderr_full: standard error of `excess_full` (over held-out sequences), nats/token.
      gain: relative gain 1 - excess_full / excess_half (nan when excess_half <= 0: nothing left to gain).
      still_improving: gain >= min_gain and the drop excess_half - excess_full > noise * stderr_full.
    """

    tokens_half: float
    excess_half: float
    tokens_full: float
    excess_full: float
    stderr_full: float
    gain: float
    still_improving: bool


def doubling_gain(tokens_half: float, excess_half: float, tokens_full: float, excess_full: float,
                  stderr_full: float, *, min_gain: float, noise: float) -> DoublingGain:
    """`DoublingGain` of the cooled-down excess at half the budget and at the whole budget.

    Args:
      min_gain: the smallest relative gain from doubling the tokens that counts as still improving.
      noise: the drop must also exceed this many standard errors of the final excess (else it is noise).
    """
    gain = 1 - excess_full / excess_half if excess_half > 0 else math.nan
    drop = excess_half - excess_full
    improving = bool(gain >= min_gain and drop > noise * (stderr_full if math.isfinite(stderr_full) else 0.0))
    return DoublingGain(float(tokens_half), float(excess_half), float(tokens_full), float(excess_full),
                        float(stderr_full), float(gain), improving)


class Improvement(NamedTuple):
    """Whether a run, or a side's mean, still improves at the end of its budget.

    Attributes:
      method: "cool-down" (the excess after a full cool-down at half and at the whole budget), "end slope" (no
        cool-down branches: `convergence` over the end of training) or "not checked".
      still_improving: the verdict (None: not checked).
      gain: the cool-down numbers (method "cool-down"), else None.
      slope: the end-slope fit of a run (method "end slope"), else None.
      runs_improving, runs_checked: a side's runs still improving / checked (1 or 0 for one run).
    """

    method: str
    still_improving: bool | None
    gain: DoublingGain | None = None
    slope: Convergence | None = None
    runs_improving: int = 0
    runs_checked: int = 0


def run_improvement(tokens: np.ndarray, excess: np.ndarray, cooldowns: Sequence[tuple[float, float, float]], *,
                    min_gain: float, noise: float, window: float, level: float, min_drop: float) -> Improvement:
    """`Improvement` of one run: by `doubling_gain` when it has cool-down ends, else by `convergence`.

    Args:
      tokens, excess: the curve, (evals,) each.
      cooldowns: (tokens seen, excess, its standard error) at each cooled-down end, sorted by tokens, the run's
        own end last; the branch nearest half of the run's tokens is compared with the end.
      min_gain, noise: `doubling_gain`'s; window, level, min_drop: `convergence`'s.
    """
    if len(cooldowns) >= 2:
        end = cooldowns[-1]
        half = min(cooldowns[:-1], key=lambda branch: abs(branch[0] - end[0] / 2))
        gain = doubling_gain(half[0], half[1], *end, min_gain=min_gain, noise=noise)
        return Improvement("cool-down", gain.still_improving, gain, None, int(gain.still_improving), 1)
    if len(tokens) == 0:
        return Improvement("not checked", None)
    fit = convergence(tokens, excess, window=window, level=level, min_drop=min_drop)
    return Improvement("end slope", fit.still_falling, None, fit, int(fit.still_falling is True),
                       int(fit.still_falling is not None))


def side_improvement(improvements: Sequence[Improvement], *, min_gain: float, noise: float) -> Improvement:
    """`Improvement` of a side's mean over its runs.

    With every run cooled down: `doubling_gain` of the mean excess at half and at the whole budget (the standard
    error of the mean from the runs' own, independent runs). Else the end-slope verdicts of its runs: still
    improving when at least half of the checked runs are.
    """
    improving, checked = sum(i.runs_improving for i in improvements), sum(i.runs_checked for i in improvements)
    if improvements and all(i.method == "cool-down" for i in improvements):
        gains = [i.gain for i in improvements]
        mean = {field: float(np.mean([getattr(g, field) for g in gains]))
                for field in ("tokens_half", "excess_half", "tokens_full", "excess_full")}
        stderr = math.sqrt(sum(g.stderr_full**2 for g in gains)) / len(gains)
        gain = doubling_gain(**mean, stderr_full=stderr, min_gain=min_gain, noise=noise)
        return Improvement("cool-down", gain.still_improving, gain, None, improving, checked)
    if not checked:
        return Improvement("not checked", None)
    return Improvement("end slope", improving >= checked / 2, None, None, improving, checked)


class Band(NamedTuple):
    """Mean curve of several runs and its pointwise confidence interval across them.

    Attributes:
      tokens: (points,) the eval points every run has.
      mean, low, high: (points,) mean excess loss (nats/token) and its Student-t interval across runs.
    """

    tokens: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


def band(curves: list[tuple[np.ndarray, np.ndarray]], level: float) -> Band:
    """`Band` of `curves` ((tokens, excess) pairs) on the tokens they share (a run resumed with another
    eval_every may have extra points; those are left out). With one run the interval is nan."""
    shared = set(np.asarray(curves[0][0]).tolist())
    for tokens, _ in curves[1:]:
        shared &= set(np.asarray(tokens).tolist())
    grid = np.array(sorted(shared), np.float64)
    values = np.stack([np.asarray(excess, np.float64)[np.isin(tokens, grid)] for tokens, excess in curves])
    intervals: list[Interval] = [confidence_interval(values[:, i], level) for i in range(grid.size)]
    return Band(grid, *(np.array([getattr(i, name) for i in intervals]) for name in ("mean", "low", "high")))
