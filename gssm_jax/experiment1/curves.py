"""Summaries of one run's learning curve (excess loss against tokens seen), and bands across runs.

A curve is the run's eval records: `tokens` (training tokens seen at each eval) and `excess` (held-out
excess loss over the exact entropy rate, nats/token). Three numbers summarise it:

* the final excess loss (the last eval);
* `tokens_to_reach`: tokens seen when the excess first falls to a stated value, linearly interpolated
  between the two evals around the crossing; +inf (censored) when it never does;
* `convergence`: the least-squares slope of excess against tokens over the last fraction of training,
  its standard error, and whether it is still falling (slope significantly negative, one-sided,
  *and* a fitted drop across the window that matters: at least a stated fraction of the excess at the
  window's start, so a significant but negligible creep at the end of a decayed schedule does not count).
"""

from __future__ import annotations

import math
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
