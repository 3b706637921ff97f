"""The calibration pipeline: both sides of the Experiment 1 pair at equal difficulty.

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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gssm_jax.difficulty.measurer import ALPHA_NAMES, Measurer
from gssm_jax.difficulty.measures import MEASURES, check_measure
from gssm_jax.difficulty.search import DEFAULT_BOUNDS, Calibration, Evaluation, find_alpha
from gssm_jax.difficulty.sides import SIDES, SMALL_ALPHA
from gssm_jax.errors import UserError


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
      measure: one of `MEASURES` ("entropy": bits/token, "gzip": composable-llm's bytes/token, ...).
      tolerance: stopping tolerance on |mean - target|, in the measure's unit.
      bounds, grid_points, known, log: see `find_alpha` (`known` alphas are values of the free alpha).
    """
    check_measure(measure)
    if free not in ALPHA_NAMES or set(fixed) != set(ALPHA_NAMES) - {free}:
        raise UserError(f"free must be one of {ALPHA_NAMES} and fixed must give exactly the other one; "
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


def calibrate_pair(measurer: Measurer, *, measure: str, tolerance: float, small: float = SMALL_ALPHA,
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
    for side in SIDES:
        if log:
            log(f"{measure}: {side.small}={small:g}, searching {side.free}")
        # The reference lies on this side's curve when its fixed alpha is `small` (the small_alpha_x side of every
        # family): under common random numbers its alpha is then an exact root, and it joins the monotonicity check.
        on_curve = reference is not None and reference.get(side.small) == small
        known = (Evaluation(reference[side.free], target, target_stderr),) if on_curve else ()
        sides[side.name] = calibrate(measurer, fixed={side.small: small}, free=side.free, target=target,
                                     measure=measure, tolerance=tolerance, bounds=bounds, grid_points=grid_points,
                                     known=known, log=log)
    return CalibratedPair(measure=measure, target=target, target_stderr=target_stderr, **sides)


def _family_reference(graph_or_family: Any) -> Mapping[str, float]:
    if not hasattr(graph_or_family, "reference_alphas"):
        raise UserError("a plain graph config has no reference setting; pass target= or reference={'alpha_X': ..., "
                        "'alpha_Z': ...}")
    return graph_or_family.reference_alphas


def curve(measurer: Measurer, *, fixed: Mapping[str, float], free: str, alphas: Sequence[float],
          measure: str) -> list[Evaluation]:
    """The difficulty at each `alphas` value of the free alpha (for plots), from the measurer's cache when possible."""
    return [Evaluation(a, (d := measurer({**fixed, free: a}, measure)).mean, d.stderr) for a in alphas]
