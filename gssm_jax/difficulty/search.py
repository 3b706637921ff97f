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

`calibrate` runs it on a graph's difficulty with common random numbers: every trial uses the same
graph seeds, so the same keys draw the kernels and the data. That removes most of the noise between
trials, but Dirichlet draws from one key with different alpha are not a monotone coupling in
general, so the objective can still wiggle: every result reports whether all evaluated points were
monotone and the largest decrease between neighbours (a warning is issued when that decrease
exceeds the tolerance, since the root may then not be unique at that precision).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from gssm_jax.difficulty.measurer import ALPHA_NAMES, MEASURES, Measurer, check_measure

DEFAULT_BOUNDS = (1e-4, 10.0)
# The two sides of the experiment pair: (name, alpha held small, alpha calibrated).
SIDES = (("small_alpha_x", "alpha_X", "alpha_Z"), ("small_alpha_z", "alpha_Z", "alpha_X"))


class UnreachableTargetError(ValueError):
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


def calibrate(measurer: Measurer, *, fixed: Mapping[str, float], free: str, target: float, measure: str,
              tolerance: float, bounds: tuple[float, float] = DEFAULT_BOUNDS, grid_points: int = 6,
              known: Sequence[Evaluation] = (), log: Callable[[str], None] | None = None) -> Calibration:
    """The value of the `free` alpha at which the mean difficulty equals `target`, the other alpha `fixed`.

    Args:
      measurer: a `gssm_jax.difficulty.Measurer` (graph or family, seeds, batch shape); it draws
        the same keys at every trial (common random numbers) and caches settings.
      fixed: the other alpha, e.g. `{"alpha_X": 1e-3}`.
      free: "alpha_Z" or "alpha_X".
      target: difficulty to match, in the measure's unit.
      measure: one of `MEASURES` ("entropy": bits/token, "gzip": the seed's bytes/token, ...).
      tolerance: stopping tolerance on |mean - target|, in the measure's unit.
      bounds, grid_points, known, log: see `find_alpha` (`known` alphas are values of the free alpha).
    """
    check_measure(measure)
    if free not in ALPHA_NAMES or set(fixed) != set(ALPHA_NAMES) - {free}:
        raise ValueError(f"free must be one of {ALPHA_NAMES} and fixed must give exactly the other one; "
                         f"got free={free!r}, fixed={dict(fixed)}")

    def objective(alpha: float) -> tuple[float, float]:
        result = measurer({**fixed, free: alpha}, measure)
        return result.mean, result.stderr

    result = find_alpha(objective, target, tolerance=tolerance, bounds=bounds, grid_points=grid_points, name=free,
                        known=known, log=log)
    return dataclasses.replace(result, fixed=dict(fixed), measure=measure)


@dataclasses.dataclass(frozen=True)
class CalibratedPair:
    """The experiment pair at one target: small alpha_X (alpha_Z calibrated) and small alpha_Z (alpha_X calibrated)."""

    measure: str
    target: float
    target_stderr: float
    small_alpha_x: Calibration
    small_alpha_z: Calibration

    def to_json(self) -> dict:
        return {"measure": self.measure, "unit": MEASURES[self.measure], "target": self.target,
                "target_stderr": self.target_stderr, "small_alpha_x": self.small_alpha_x.to_json(),
                "small_alpha_z": self.small_alpha_z.to_json()}


def calibrate_pair(measurer: Measurer, *, measure: str, tolerance: float, small: float = 1e-3,
                   target: float | None = None, reference: Mapping[str, float] | None = None,
                   bounds: tuple[float, float] = DEFAULT_BOUNDS, grid_points: int = 6,
                   log: Callable[[str], None] | None = None) -> CalibratedPair:
    """Both sides of the experiment pair at one difficulty.

    Args:
      measurer: the graph (family), seeds and batch shape (see `calibrate`).
      measure: one of `MEASURES`.
      tolerance: stopping tolerance, in the measure's unit.
      small: the small alpha of each side.
      target: difficulty to match; default: the difficulty of `reference`.
      reference: `{"alpha_X", "alpha_Z"}` setting whose difficulty is the target when `target` is None;
        default: the family's reference setting.
      bounds, grid_points, log: see `find_alpha`.
    """
    check_measure(measure)
    target_stderr = math.nan
    if target is None:
        reference = reference or _family_reference(measurer.graph_or_family)
        reference_value = measurer(reference, measure)
        target, target_stderr = reference_value.mean, reference_value.stderr
        if log:
            log(f"{measure}: target = difficulty of {dict(reference)} = {target:.4f} +- {target_stderr:.4f}")
    sides = {}
    for side, fixed_name, free_name in SIDES:
        if log:
            log(f"{measure}: {fixed_name}={small:g}, searching {free_name}")
        # The reference lies on this side's curve when its fixed alpha is `small` (the small_alpha_x side of every
        # family): under common random numbers its alpha is then an exact root, and it joins the monotonicity check.
        on_curve = reference is not None and reference.get(fixed_name) == small
        known = (Evaluation(reference[free_name], target, target_stderr),) if on_curve else ()
        sides[side] = calibrate(measurer, fixed={fixed_name: small}, free=free_name, target=target, measure=measure,
                                tolerance=tolerance, bounds=bounds, grid_points=grid_points, known=known, log=log)
    return CalibratedPair(measure=measure, target=target, target_stderr=target_stderr, **sides)


def _family_reference(graph_or_family: Any) -> Mapping[str, float]:
    if not hasattr(graph_or_family, "reference_alphas"):
        raise ValueError("a plain graph config has no reference setting; pass target= or reference={'alpha_X': ..., "
                         "'alpha_Z': ...}")
    return graph_or_family.reference_alphas


def curve(measurer: Measurer, *, fixed: Mapping[str, float], free: str, alphas: Sequence[float],
          measure: str) -> list[Evaluation]:
    """The difficulty at each `alphas` value of the free alpha (for plots), from the measurer's cache when possible."""
    return [Evaluation(a, (d := measurer({**fixed, free: a}, measure)).mean, d.stderr) for a in alphas]
