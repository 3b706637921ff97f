"""The search for the alpha at which an increasing objective reaches a target, one search per graph seed.

`seed_search` is one seed's root finder, written as a generator: it yields the alpha it wants measured next
and receives the objective's value there, so that `lockstep` can run the searches of every seed side by
side, each trial measuring every seed still searching at its own alpha (the cost of one trial stays one
batch per seed; the number of trials is the largest number any one seed needs, not their sum).
`find_alpha` runs one search against a plain objective. A search:

1. evaluates a log-spaced grid over `bounds` (ends included, the same alphas for every seed). The
   smallest and largest grid values are the reachable range; a target outside it by more than the
   tolerance ends the search unconverged, with the reason (`Calibration.reason`);
2. takes the first adjacent grid pair whose values straddle the target (the bracket);
3. refines by Illinois regula falsi in log alpha until |value - target| <= tolerance, or until the
   bracket is narrower than `log_alpha_tolerance` (the objective jumps there: on large graphs with tiny
   alpha the common-random-numbers objective is piecewise constant with jumps; the result is then
   unconverged, with the reason, and reports the best trial).

Dirichlet draws from one key at different alphas are not a monotone coupling in general, so an objective
can wiggle: every result says whether its trials were monotone and the largest decrease between
neighbours (a root found within the tolerance is still a match; it may not be the only one).
`gssm_jax.difficulty.pipeline` runs the searches on a graph's difficulty.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Generator, Hashable, Mapping, Sequence

import numpy as np

DEFAULT_BOUNDS = (1e-4, 10.0)
Search = Generator[float, float, "Calibration"]  # yields an alpha, receives the objective there


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One trial of a search: the objective's `value` at `alpha` (in the measure's unit)."""

    alpha: float
    value: float


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The result of one search.

    Attributes:
      alpha: the calibrated value of the free alpha (the trial closest to the target).
      value: the objective at `alpha`.
      target: the target value.
      tolerance: the tolerance on |value - target|.
      converged: whether |value - target| <= tolerance.
      reason: why not, for an unconverged search ("" when converged): the target is out of reach, or the
        objective jumps over it.
      evaluations: every trial, sorted by alpha (known points included).
      monotone: whether the evaluated values never decrease as alpha grows.
      largest_decrease: the largest drop between neighbouring evaluations (0 when monotone).
      free: name of the calibrated alpha (e.g. "alpha_Z").
    """

    alpha: float
    value: float
    target: float
    tolerance: float
    converged: bool
    reason: str
    evaluations: tuple[Evaluation, ...]
    monotone: bool
    largest_decrease: float
    free: str = "alpha"


def grid(bounds: tuple[float, float], grid_points: int) -> list[float]:
    """The alphas of a search's first stage: `grid_points` log-spaced values over `bounds`, ends included."""
    return [float(alpha) for alpha in np.geomspace(bounds[0], bounds[1], grid_points)]


def seed_search(target: float, *, tolerance: float, bounds: tuple[float, float] = DEFAULT_BOUNDS, grid_points: int = 6,
           max_iterations: int = 30, log_alpha_tolerance: float = 1e-3, name: str = "alpha",
           known: Sequence[Evaluation] = ()) -> Search:
    """One seed's search, as a generator: `alpha = next(s)`, then `alpha = s.send(value)` until StopIteration,
    whose `value` is the `Calibration`.

    Args:
      target: the objective value to reach.
      tolerance: stop when |value - target| <= tolerance (objective units; > 0).
      bounds: (lowest, highest) alpha searched, both > 0.
      grid_points: points of the initial log-spaced grid (>= 2), ends included.
      max_iterations: refinement steps after the grid.
      log_alpha_tolerance: stop refining once the bracket is this narrow in natural-log alpha.
      name: what alpha is called, for messages.
      known: points of the same objective measured before (e.g. the reference setting, when it lies on this
        curve); they are not evaluated again but count in `evaluations` and in the monotonicity check, and
        one closer to the target than the search's best is the result.

    Raises:
      ValueError: bad bounds, tolerance or grid (at the call, before any trial).
    """
    low, high = bounds
    if not 0 < low < high:
        raise ValueError(f"bounds must satisfy 0 < low < high; got {bounds}")
    if tolerance <= 0 or grid_points < 2:
        raise ValueError(f"need tolerance > 0 and grid_points >= 2; got {tolerance}, {grid_points}")
    return _search(target, tolerance, bounds, grid_points, max_iterations, log_alpha_tolerance, name, known)


def _search(target: float, tolerance: float, bounds: tuple[float, float], grid_points: int, max_iterations: int,
            log_alpha_tolerance: float, name: str, known: Sequence[Evaluation]) -> Search:
    trials: dict[float, Evaluation] = {point.alpha: point for point in known}
    alphas = grid(bounds, grid_points)
    offsets = []
    for alpha in alphas:
        value = float((yield alpha))
        trials[alpha] = Evaluation(alpha, value)
        offsets.append(value - target)
    reached = (min(offsets) + target, max(offsets) + target)
    nearest = int(np.argmin(np.abs(offsets)))
    reason = ""
    if target < reached[0] - tolerance or target > reached[1] + tolerance:
        alpha = alphas[nearest]
        reason = (f"target {target:.4g} is outside what {name} in [{bounds[0]:g}, {bounds[1]:g}] reaches: "
                  f"[{reached[0]:.4g}, {reached[1]:.4g}]")
    elif abs(offsets[nearest]) <= tolerance:
        alpha = alphas[nearest]
    else:
        cell = next(i for i in range(grid_points - 1) if offsets[i] * offsets[i + 1] <= 0)
        alpha = yield from _illinois(trials, target, math.log(alphas[cell]), math.log(alphas[cell + 1]),
                                     offsets[cell], offsets[cell + 1], tolerance, max_iterations, log_alpha_tolerance)
    chosen = trials[min(trials, key=lambda tried: abs(math.log(tried / alpha)))]  # exp(log(a)) may differ from a
    for point in known:  # a known point closer to the target than the search's best wins (e.g. the reference)
        if abs(point.value - target) < abs(chosen.value - target):
            chosen = point
    converged = abs(chosen.value - target) <= tolerance
    if not converged and not reason:
        reason = (f"{name} jumps over the target {target:.4g} near {chosen.alpha:.4g}: the closest trial is "
                  f"{chosen.value:.4g}, {abs(chosen.value - target):.3g} away (tolerance {tolerance:.3g})")
    evaluations = tuple(trials[a] for a in sorted(trials))
    values = np.array([e.value for e in evaluations])
    largest_decrease = float(max(0.0, np.max(values[:-1] - values[1:]))) if len(values) > 1 else 0.0
    return Calibration(alpha=chosen.alpha, value=chosen.value, target=target, tolerance=tolerance,
                       converged=converged, reason=reason, evaluations=evaluations, monotone=largest_decrease == 0.0,
                       largest_decrease=largest_decrease, free=name)


def _illinois(trials: dict[float, Evaluation], target: float, x_low: float, x_high: float, f_low: float,
              f_high: float, tolerance: float, max_iterations: int,
              x_tolerance: float) -> Generator[float, float, float]:
    """Regula falsi with the Illinois fix on x = log alpha; records its trials; returns the best alpha found."""
    best_x, best_f = (x_low, f_low) if abs(f_low) < abs(f_high) else (x_high, f_high)
    side = 0
    for _ in range(max_iterations):
        x = (x_low * f_high - x_high * f_low) / (f_high - f_low) if f_high != f_low else 0.5 * (x_low + x_high)
        alpha = math.exp(x)
        value = float((yield alpha))
        trials[alpha] = Evaluation(alpha, value)
        f = value - target
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


def lockstep(searches: Mapping[Hashable, Search],
             evaluate: Callable[[dict[Hashable, float]], Mapping[Hashable, float]]) -> dict[Hashable, Calibration]:
    """Runs several searches side by side: each call `evaluate({key: alpha})` is one trial, measuring every
    search still running at the alpha it asked for, and returns `{key: value}`.

    Returns:
      `{key: Calibration}` in the order of `searches`. Each search advances exactly as it would alone.
    """
    results: dict[Hashable, Calibration] = {}

    def advance(key: Hashable, value: float | None) -> float | None:
        try:
            return next(searches[key]) if value is None else searches[key].send(value)
        except StopIteration as stop:
            results[key] = stop.value
            return None

    pending = {key: alpha for key in searches if (alpha := advance(key, None)) is not None}
    while pending:
        values = evaluate(dict(pending))
        pending = {key: alpha for key in pending if (alpha := advance(key, float(values[key]))) is not None}
    return {key: results[key] for key in searches}


def find_alpha(objective: Callable[[float], float], target: float, *, tolerance: float,
               bounds: tuple[float, float] = DEFAULT_BOUNDS, grid_points: int = 6, max_iterations: int = 30,
               log_alpha_tolerance: float = 1e-3, name: str = "alpha", known: Sequence[Evaluation] = ()) -> Calibration:
    """One search (see `seed_search` for the arguments) against `objective`: alpha -> value, expected to increase
    with alpha (checked, not assumed)."""
    one = seed_search(target, tolerance=tolerance, bounds=bounds, grid_points=grid_points,
                      max_iterations=max_iterations, log_alpha_tolerance=log_alpha_tolerance, name=name, known=known)
    return lockstep({name: one}, lambda alphas: {key: objective(alpha) for key, alpha in alphas.items()})[name]
