"""The calibration pipeline: both sides of the Experiment 1 pair at one difficulty, for every graph seed.

The target is one number, the mean difficulty of the reference setting over the graph seeds (or a given
value). For each side, every seed's free alpha is searched on its own curve until that seed's difficulty is
within the tolerance of the target (`gssm_jax.difficulty.search`), so each seed's two sides form a matched
pair. The seeds' searches run in lockstep: each trial measures every seed still searching at its own alpha,
so a calibration costs as many trials as today's mean-matching did, whatever the number of seeds. Every
trial uses the same keys for a seed (common random numbers), so a seed's curve is a fixed function of
alpha. A seed whose target is out of reach, or whose curve jumps over it, is unmatched, with the reason.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gssm_jax.difficulty.measurer import ALPHA_NAMES, Difficulty, Measurer
from gssm_jax.difficulty.measures import MEASURES, check_measure
from gssm_jax.difficulty.search import DEFAULT_BOUNDS, Calibration, Evaluation, lockstep, seed_search
from gssm_jax.difficulty.sides import SIDES, SMALL_ALPHA, get_side
from gssm_jax.errors import UserError

Log = Callable[[str], None]


def calibrate(measurer: Measurer, *, fixed: Mapping[str, float], free: str, target: float, measure: str,
              tolerance: float, bounds: tuple[float, float] = DEFAULT_BOUNDS, grid_points: int = 6,
              known: Mapping[int, Sequence[Evaluation]] | None = None,
              log: Log | None = None) -> dict[int, Calibration]:
    """For every seed of `measurer`, the value of the `free` alpha at which its difficulty equals `target`.

    Args:
      measurer: a `gssm_jax.difficulty.Measurer` (graph or family, seeds, batch shape); it draws the same
        keys at every trial (common random numbers) and caches settings.
      fixed: the other alpha, e.g. `{"alpha_X": 1e-3}`.
      free: "alpha_Z" or "alpha_X".
      target: difficulty to match, in the measure's unit (`MEASURES`).
      measure: one of `MEASURES` ("entropy": nats/token, "gzip": composable-llm's bytes/token, ...).
      tolerance: stopping tolerance on |difficulty - target| for each seed, in the measure's unit.
      bounds, grid_points: see `gssm_jax.difficulty.search.seed_search`.
      known: `{seed: points of that seed's curve measured before}` (values of the free alpha).
      log: one line per trial.

    Returns:
      `{seed: Calibration}` in the measurer's seed order.
    """
    check_measure(measure)
    if free not in ALPHA_NAMES or set(fixed) != set(ALPHA_NAMES) - {free}:
        raise UserError(f"free must be one of {ALPHA_NAMES} and fixed must give exactly the other one; "
                        f"got free={free!r}, fixed={dict(fixed)}")
    known = known or {}
    searches = {seed: seed_search(target, tolerance=tolerance, bounds=bounds, grid_points=grid_points, name=free,
                             known=known.get(seed, ())) for seed in measurer.seeds}
    trial = iter(range(1, 1 << 30))

    def evaluate(alphas: dict[int, float]) -> dict[int, float]:
        start = time.perf_counter()
        values = measurer.per_seed({seed: {**fixed, free: alpha} for seed, alpha in alphas.items()}, measure)
        if log:
            low, high = min(alphas.values()), max(alphas.values())
            where = f"{free}={low:.4g}" if low == high else f"{free} in [{low:.4g}, {high:.4g}]"
            within = sum(abs(value - target) <= tolerance for value in values.values())
            log(f"  trial {next(trial)}: {where} at {len(alphas)} seed(s): {within} within {tolerance:g} of "
                f"{target:.4f} ({time.perf_counter() - start:.1f} s)")
        return values

    return lockstep(searches, evaluate)


@dataclasses.dataclass(frozen=True)
class SeedPair:
    """One graph seed's two sides, each searched to the common target.

    Attributes:
      seed: the graph seed.
      small_alpha_x, small_alpha_z: each side's search (`Calibration.alpha` is its free alpha).
      small: the small alpha of both sides.
    """

    seed: int
    small_alpha_x: Calibration
    small_alpha_z: Calibration
    small: float = SMALL_ALPHA

    @property
    def mismatch(self) -> float:
        """Difficulty of small_alpha_x minus that of small_alpha_z, in the measure's unit."""
        return self.small_alpha_x.value - self.small_alpha_z.value

    @property
    def matched(self) -> bool:
        """Whether both sides are within the tolerance of the target."""
        return self.small_alpha_x.converged and self.small_alpha_z.converged

    @property
    def reason(self) -> str:
        """Why the pair is unmatched ("" when matched)."""
        return "; ".join(f"{side.name}: {getattr(self, side.name).reason}" for side in SIDES
                         if not getattr(self, side.name).converged)

    def alphas(self, side: str) -> dict[str, float]:
        """`{"alpha_X", "alpha_Z"}` of one side of this seed."""
        return get_side(side).alphas(getattr(self, side).alpha, self.small)

    def to_json(self) -> dict:
        """This seed's entry of the calibration record, with each side's evaluations."""
        sides = {}
        for side in SIDES:
            result: Calibration = getattr(self, side.name)
            sides[side.name] = {**self.alphas(side.name), "difficulty": result.value, "converged": result.converged,
                                "reason": result.reason, "monotone": result.monotone,
                                "largest_decrease": result.largest_decrease,
                                "evaluations": [[e.alpha, e.value] for e in result.evaluations]}
        return {**sides, "mismatch": self.mismatch, "matched": self.matched, "reason": self.reason}


@dataclasses.dataclass(frozen=True)
class CalibratedPairs:
    """The experiment pair of every seed at one target.

    Attributes:
      measure: the measure's name; its unit is `MEASURES[measure]`.
      target: the difficulty every seed's sides are matched to.
      target_stderr: its standard error over seeds (nan when the target was given).
      tolerance: the tolerance on each side's |difficulty - target|.
      pairs: `{seed: SeedPair}`.
      trials: settings measured in lockstep (the reference, if measured, included), each on every seed
        still searching.
    """

    measure: str
    target: float
    target_stderr: float
    tolerance: float
    pairs: dict[int, SeedPair]
    trials: int

    @property
    def unmatched(self) -> dict[int, str]:
        """`{seed: reason}` of the pairs that are not matched."""
        return {seed: pair.reason for seed, pair in self.pairs.items() if not pair.matched}

    def to_json(self) -> dict:
        """`{"measure", "unit", "target", "target_stderr", "tolerance", "trials", "pairs": {"<seed>": ...}}`."""
        return {"measure": self.measure, "unit": MEASURES[self.measure], "target": self.target,
                "target_stderr": self.target_stderr, "tolerance": self.tolerance, "trials": self.trials,
                "pairs": {str(seed): pair.to_json() for seed, pair in self.pairs.items()}}


def calibrate_pair(measurer: Measurer, *, measure: str, tolerance: float, small: float = SMALL_ALPHA,
                   target: float | None = None, reference: Mapping[str, float] | None = None,
                   bounds: tuple[float, float] = DEFAULT_BOUNDS, grid_points: int = 6,
                   log: Log | None = None) -> CalibratedPairs:
    """Both sides of the experiment pair of every seed at one difficulty.

    Args:
      measurer: the graph (family), seeds and batch shape (see `calibrate`).
      measure: one of `MEASURES`.
      tolerance: each side's tolerance, in the measure's unit.
      small: the small alpha of each side.
      target: difficulty to match; default: the mean over seeds of the difficulty of `reference`.
      reference: `{"alpha_X", "alpha_Z"}` setting whose difficulty is the target when `target` is None;
        default: the family's reference setting.
      bounds, grid_points, log: see `calibrate`.
    """
    check_measure(measure)
    target_stderr, trials, known_value = math.nan, 0, None
    if target is None:
        reference = reference or _family_reference(measurer.graph_or_family)
        known_value = measurer(reference, measure)
        target, target_stderr, trials = known_value.mean, known_value.stderr, 1
        if log:
            log(f"{measure}: target = mean difficulty of {dict(reference)} = {target:.4f} +- {target_stderr:.4f} "
                f"(seeds from {min(known_value.per_seed):.4f} to {max(known_value.per_seed):.4f})")
    sides = {}
    for side in SIDES:
        if log:
            log(f"{measure}: {side.small}={small:g}, searching {side.free} for each of {len(measurer.seeds)} seeds")
        known = _known_points(measurer, side, small, reference, known_value)
        counted = _Counted(measurer)
        sides[side.name] = calibrate(counted, fixed={side.small: small}, free=side.free, target=target,
                                     measure=measure, tolerance=tolerance, bounds=bounds, grid_points=grid_points,
                                     known=known, log=log)
        trials += counted.calls
    pairs = {seed: SeedPair(seed, sides["small_alpha_x"][seed], sides["small_alpha_z"][seed], small)
             for seed in measurer.seeds}
    return CalibratedPairs(measure=measure, target=target, target_stderr=target_stderr, tolerance=tolerance,
                           pairs=pairs, trials=trials)


def _known_points(measurer: Measurer, side: Any, small: float, reference: Mapping[str, float] | None,
                  value: Difficulty | None) -> dict[int, tuple[Evaluation, ...]]:
    """The reference's value on each seed's curve of `side`, when the reference lies on it (its fixed alpha is
    `small`: the small_alpha_x side of every family); it then joins that seed's search as a known point."""
    if reference is None or value is None or reference.get(side.small) != small:
        return {}
    return {seed: (Evaluation(reference[side.free], seed_value),)
            for seed, seed_value in zip(measurer.seeds, value.per_seed, strict=True)}


class _Counted:
    """A measurer that counts its `per_seed` calls (the lockstep trials)."""

    def __init__(self, measurer: Measurer):
        self.measurer, self.calls, self.seeds = measurer, 0, measurer.seeds

    def per_seed(self, alphas: Mapping[int, Mapping[str, float]], measure: str) -> dict[int, float]:
        self.calls += 1
        return self.measurer.per_seed(alphas, measure)


def _family_reference(graph_or_family: Any) -> Mapping[str, float]:
    if not hasattr(graph_or_family, "reference_alphas"):
        raise UserError("a plain graph config has no reference setting; pass target= or reference={'alpha_X': ..., "
                        "'alpha_Z': ...}")
    return graph_or_family.reference_alphas


def curve(measurer: Measurer, *, fixed: Mapping[str, float], free: str, alphas: Sequence[float],
          measure: str) -> list[tuple[float, Difficulty]]:
    """`(alpha, difficulty over seeds)` at each `alphas` value of the free alpha, every seed at it (for plots)."""
    return [(a, measurer({**fixed, free: a}, measure)) for a in alphas]
