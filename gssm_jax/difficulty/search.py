"""Automatic calibration of (alpha_X, alpha_Z) pairs of equal difficulty.

`find_alpha` is the search: given an objective alpha -> (mean, stderr), increasing in alpha, it
finds the alpha whose mean equals a target to a tolerance in the objective's units:

1. evaluate a log-spaced grid over `bounds` (ends included). The smallest and largest grid values
   are the reachable range; a target outside it raises `UnreachableTargetError` naming the range;
2. take the first adjacent grid pair whose values straddle the target (the bracket);
3. refine by Illinois regula falsi in log alpha until |mean - target| <= tolerance, or until the
   bracket is narrower than `log_alpha_tolerance` (the objective jumps there: on large graphs with
   tiny alpha the common-random-numbers objective is piecewise constant with jumps; the result is
   then `converged=False` and reports the best trial).

`gssm_jax.difficulty.pipeline.calibrate` runs it on a graph's difficulty with common random numbers.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from gssm_jax.errors import UserError

DEFAULT_BOUNDS = (1e-4, 10.0)


class UnreachableTargetError(UserError):
    """The target difficulty is outside what the free alpha reaches within its bounds."""


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One trial of a search: objective mean and standard error at `alpha`."""

    alpha: float
    mean: float
    stderr: float


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The result of a search.

    Attributes:
      alpha: the calibrated value of the free alpha.
      mean: objective at `alpha` (mean over seeds, in the measure's unit).
      stderr: its standard error over seeds.
      target: the target objective value.
      tolerance: the stopping tolerance on |mean - target|, in the measure's unit.
      converged: whether |mean - target| <= tolerance was reached.
      log10_alpha_stderr: standard error of log10(alpha) implied by `stderr` (delta method, with the
        slope of the objective between the grid points on either side of `alpha`: the bracketing grid cell).
      evaluations: every trial, sorted by alpha.
      monotone: whether the evaluated means never decrease as alpha grows.
      largest_decrease: the largest drop between neighbouring evaluations (0 when monotone).
      free: name of the calibrated alpha (e.g. "alpha_Z"); fixed: the other alphas.
      measure: the measure's name ("" for a plain objective).
    """

    alpha: float
    mean: float
    stderr: float
    target: float
    tolerance: float
    converged: bool
    log10_alpha_stderr: float
    evaluations: tuple[Evaluation, ...]
    monotone: bool
    largest_decrease: float
    free: str = "alpha"
    fixed: Mapping[str, float] = dataclasses.field(default_factory=dict)
    measure: str = ""

    def to_json(self) -> dict:
        """A JSON-serialisable dict (evaluations as lists of dicts)."""
        return dataclasses.asdict(self) | {"fixed": dict(self.fixed)}


def find_alpha(objective: Callable[[float], tuple[float, float]], target: float, *, tolerance: float,
               bounds: tuple[float, float] = DEFAULT_BOUNDS, grid_points: int = 6, max_iterations: int = 30,
               log_alpha_tolerance: float = 1e-3, name: str = "alpha", known: Sequence[Evaluation] = (),
               log: Callable[[str], None] | None = None) -> Calibration:
    """Finds alpha in `bounds` with objective(alpha) mean within `tolerance` of `target`.

    Args:
      objective: alpha -> (mean, stderr); expected to increase with alpha (checked, not assumed).
      target: the objective value to reach.
      tolerance: stop when |mean - target| <= tolerance (objective units; > 0).
      bounds: (lowest, highest) alpha searched, both > 0.
      grid_points: points of the initial log-spaced grid (>= 2), ends included.
      max_iterations: refinement steps after the grid.
      log_alpha_tolerance: stop refining once the bracket is this narrow in natural-log alpha.
      name: what alpha is called, for messages.
      known: points of the same objective measured before (e.g. the reference setting, when it lies on
        this curve); they are not re-evaluated by the search but count in `evaluations` and in the
        monotonicity check, and one that is closer to the target than the search's best is the result.
      log: called with one progress line per trial (e.g. `print`): alpha, mean +- stderr, seconds taken.

    Raises:
      UnreachableTargetError: the target is outside the grid's [min, max] by more than `tolerance`.
    """
    low, high = bounds
    if not 0 < low < high:
        raise ValueError(f"bounds must satisfy 0 < low < high; got {bounds}")
    if tolerance <= 0 or grid_points < 2:
        raise ValueError(f"need tolerance > 0 and grid_points >= 2; got {tolerance}, {grid_points}")
    trials: dict[float, Evaluation] = {point.alpha: point for point in known}
    count = iter(range(1, 1 << 30))

    def evaluate(alpha: float) -> float:
        start = time.perf_counter()
        mean, stderr = objective(alpha)
        trials[alpha] = Evaluation(alpha, float(mean), float(stderr))
        if log:
            log(f"  trial {next(count)}: {name}={alpha:.4g}: {mean:.4f} +- {stderr:.4f} (target {target:.4f}; "
                f"{time.perf_counter() - start:.1f} s)")
        return float(mean) - target

    grid = np.geomspace(low, high, grid_points)
    offsets = [evaluate(float(alpha)) for alpha in grid]
    reached = (min(offsets) + target, max(offsets) + target)
    if target < reached[0] - tolerance or target > reached[1] + tolerance:
        raise UnreachableTargetError(
            f"target {target:.4g} is outside what {name} in [{low:g}, {high:g}] reaches: "
            f"[{reached[0]:.4g}, {reached[1]:.4g}]; choose a target in that range or widen the bounds")
    nearest = int(np.argmin(np.abs(offsets)))
    if abs(offsets[nearest]) <= tolerance:
        alpha = float(grid[nearest])
    else:
        cell = next(i for i in range(grid_points - 1) if offsets[i] * offsets[i + 1] <= 0)
        alpha = _illinois(evaluate, math.log(grid[cell]), math.log(grid[cell + 1]), offsets[cell],
                          offsets[cell + 1], tolerance, max_iterations, log_alpha_tolerance)
    searched = min(trials.values(), key=lambda tried: abs(math.log(tried.alpha / alpha)))
    for point in known:  # a known point closer to the target than the search's best wins (e.g. the reference)
        if abs(point.mean - target) < abs(searched.mean - target):
            alpha, searched = point.alpha, point
    return _result(trials, alpha, target, tolerance, name, [float(point) for point in grid])


def _illinois(evaluate: Callable[[float], float], x_low: float, x_high: float, f_low: float, f_high: float,
              tolerance: float, max_iterations: int, x_tolerance: float) -> float:
    """Regula falsi with the Illinois fix on x = log alpha; returns the best alpha found."""
    best_x, best_f = (x_low, f_low) if abs(f_low) < abs(f_high) else (x_high, f_high)
    side = 0
    for _ in range(max_iterations):
        x = (x_low * f_high - x_high * f_low) / (f_high - f_low) if f_high != f_low else 0.5 * (x_low + x_high)
        f = evaluate(math.exp(x))
        if abs(f) <= abs(best_f):  # ties go to the latest trial, inside the narrowest bracket
            best_x, best_f = x, f
        if abs(f) <= tolerance:
            break
        if f * f_high < 0:  # root between x and x_high
            x_low, f_low = x, f
            if side == -1:
                f_high /= 2
            side = -1
        else:
            x_high, f_high = x, f
            if side == 1:
                f_low /= 2
            side = 1
        if x_high - x_low < x_tolerance:
            break
    return math.exp(best_x)


def _result(trials: dict[float, Evaluation], alpha: float, target: float, tolerance: float,
            name: str, grid: Sequence[float]) -> Calibration:
    evaluations = tuple(trials[a] for a in sorted(trials))
    means = np.array([e.mean for e in evaluations])
    largest_decrease = float(max(0.0, np.max(means[:-1] - means[1:]))) if len(means) > 1 else 0.0
    chosen = trials[min(trials, key=lambda tried: abs(math.log(tried / alpha)))]  # exp(log(a)) may differ from a
    alpha = chosen.alpha
    # Slope of the mean in log10 alpha between the grid points on either side of alpha (a local slope that the
    # refinement's wiggles cannot distort; the whole grid's would understate it where the curve saturates).
    lower = trials[max((a for a in grid if a < alpha), default=alpha)]
    upper = trials[min((a for a in grid if a > alpha), default=alpha)]
    span = math.log10(upper.alpha) - math.log10(lower.alpha)
    slope = (upper.mean - lower.mean) / span if span > 0 else math.nan
    log10_stderr = chosen.stderr / abs(slope) if slope and math.isfinite(slope) else math.nan
    if largest_decrease > tolerance:
        warnings.warn(f"the objective is not monotone in {name}: it drops by {largest_decrease:.4g} between "
                      f"neighbouring trials (tolerance {tolerance:.4g}); the calibrated value may not be unique",
                      stacklevel=3)
    return Calibration(alpha=alpha, mean=chosen.mean, stderr=chosen.stderr, target=target, tolerance=tolerance,
                       converged=abs(chosen.mean - target) <= tolerance, log10_alpha_stderr=log10_stderr,
                       evaluations=evaluations, monotone=largest_decrease == 0.0,
                       largest_decrease=largest_decrease, free=name)
