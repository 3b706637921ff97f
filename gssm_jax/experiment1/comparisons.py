"""The two sides of each group compared, paired by seed, with Holm's correction across graphs.

For every `Group` (graph, matching measure, learner, model size) with runs on both sides, the seeds
present on both sides form the pairs. Each side is first checked for having learned (`SideSummary`):
its mean final excess loss must be at most `max_excess_fraction` of its mean entropy rate, and at most
half of its runs may still be falling. If either side has not learned, the group's verdict is "not
learned at this budget" and nothing is tested. Otherwise two questions are tested, each paired by seed:

* which side *ends lower*: final excess loss, paired t-test and sign-flip test (`paired_comparison`);
* which side *learns faster*: tokens to reach `reach_excess`, censored when never reached, compared by
  pooled ranks (`paired_rank_comparison`), since a paired t on censored values would be meaningless.

Significance is decided by the paired t p-value after Holm's correction across the graphs compared
within one (measure, learner, model size) and question; the sign-flip test is reported beside it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

import numpy as np

from gssm_jax.difficulty.sides import SIDE_NAMES
from gssm_jax.difficulty.sides import SIDES as EXPERIMENT_SIDES
from gssm_jax.experiment1 import curves
from gssm_jax.experiment1.runs import Group, Run
from gssm_jax.statistics import (
    Interval,
    PairedComparison,
    RankComparison,
    confidence_interval,
    holm,
    paired_comparison,
    paired_rank_comparison,
)

SIDES = SIDE_NAMES  # the sides are defined once, in gssm_jax.difficulty.sides
SIDE_LABELS = {side.name: side.label for side in EXPERIMENT_SIDES}
QUESTIONS = ("final", "reach")  # ends lower; learns faster
NOT_LEARNED = "not learned at this budget: raise train.num_steps / model size"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Thresholds of the report (the `config.report` fields of gssm_jax/configs/experiment1.py, documented there)."""

    significance_level: float
    confidence: float
    reach_excess: float
    convergence_window: float
    convergence_level: float
    convergence_min_drop: float
    max_excess_fraction: float

    @classmethod
    def from_config(cls, config) -> Settings:
        """From a mapping (e.g. `config.report`) holding every field."""
        missing = [field.name for field in dataclasses.fields(cls) if field.name not in config]
        if missing:
            raise ValueError(f"config.report lacks {', '.join(missing)}; see gssm_jax/configs/experiment1.py")
        return cls(**{field.name: float(config[field.name]) for field in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """One run's curve summarised: final excess (nats/token), tokens to reach `reach_excess`, convergence."""

    run: Run
    tokens_to_reach: float
    convergence: curves.Convergence


def summarize_run(run: Run, settings: Settings) -> RunSummary:
    if run.tokens.size == 0:
        return RunSummary(run, math.inf, curves.Convergence(0, *(math.nan,) * 4, None))
    return RunSummary(run, curves.tokens_to_reach(run.tokens, run.excess, settings.reach_excess),
                      curves.convergence(run.tokens, run.excess, window=settings.convergence_window,
                                         level=settings.convergence_level, min_drop=settings.convergence_min_drop))


@dataclasses.dataclass(frozen=True)
class SideSummary:
    """The paired runs of one side of a group, in seed order.

    Attributes:
      runs: one RunSummary per paired seed.
      final: Student-t interval of the mean final excess loss (nats/token).
      entropy: mean entropy rate of the held-out sequences (nats/token).
      still_falling, unchecked: runs whose excess was still falling / whose convergence was not checked.
      learned: final.mean <= max_excess_fraction * entropy and still_falling <= half the runs.
    """

    runs: tuple[RunSummary, ...]
    final: Interval
    entropy: float
    still_falling: int
    unchecked: int
    learned: bool

    @property
    def final_excess(self) -> np.ndarray:
        return np.array([summary.run.final_excess for summary in self.runs])

    @property
    def tokens_to_reach(self) -> np.ndarray:
        return np.array([summary.tokens_to_reach for summary in self.runs])

    @property
    def excess_fraction(self) -> float:
        """Mean final excess loss as a fraction of the mean entropy rate."""
        return self.final.mean / self.entropy if self.entropy > 0 else math.inf


def summarize_side(summaries: Sequence[RunSummary], settings: Settings) -> SideSummary:
    final = confidence_interval([summary.run.final_excess for summary in summaries], settings.confidence)
    entropy = float(np.mean([summary.run.entropy for summary in summaries]))
    falling = sum(summary.convergence.still_falling is True for summary in summaries)
    unchecked = sum(summary.convergence.still_falling is None for summary in summaries)
    learned = final.mean <= settings.max_excess_fraction * entropy and falling <= len(summaries) / 2
    return SideSummary(tuple(summaries), final, entropy, falling, unchecked, bool(learned))


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Both sides of one group, paired by seed.

    Attributes:
      group: the graph, measure, learner and model size.
      seeds: the paired seeds (on both sides); `unpaired` those on one side only (left out).
      sides: `{side: SideSummary}` over the paired seeds.
      final: paired comparison of final excess loss, small_alpha_x minus small_alpha_z (None: not tested).
      reach: rank comparison of tokens to reach `settings.reach_excess` (None: not tested).
      holm: `{(question, "t" | "sign_flip"): Holm-adjusted p-value}` (nan when not tested).
      settings: the thresholds used.
    """

    group: Group
    seeds: tuple[int, ...]
    unpaired: tuple[int, ...]
    sides: dict[str, SideSummary]
    final: PairedComparison | None
    reach: RankComparison | None
    holm: dict[tuple[str, str], float]
    settings: Settings

    @property
    def learned(self) -> bool:
        return all(side.learned for side in self.sides.values())

    @property
    def reached(self) -> bool:
        """Whether any paired run reached `settings.reach_excess`."""
        return any(np.isfinite(side.tokens_to_reach).any() for side in self.sides.values())

    def test(self, question: str) -> PairedComparison | None:
        """The paired comparison behind `question`: final excess values, or ranks of tokens to reach."""
        if question == "final":
            return self.final
        return None if self.reach is None else self.reach.ranks

    def outcome(self, question: str) -> str:
        """"not learned", "not compared", "not significant", or the side that ends lower / learns faster."""
        if not self.learned:
            return "not learned"
        test = self.test(question)
        if test is None:
            return "not compared"
        if not self.holm[question, "t"] < self.settings.significance_level:
            return "not significant"
        return "small_alpha_x" if test.mean_difference < 0 else "small_alpha_z"

    def confirmed(self, question: str) -> bool:
        """Whether the sign-flip test, Holm-adjusted, is also below the significance level."""
        return bool(self.holm[question, "sign_flip"] < self.settings.significance_level)


def _compare_group(group: Group, runs: Sequence[Run], settings: Settings) -> Comparison | None:
    by_side = {side: {run.seed: run for run in runs if run.side == side} for side in SIDES}
    seeds = tuple(sorted(set(by_side[SIDES[0]]) & set(by_side[SIDES[1]])))
    if not seeds:
        return None
    unpaired = tuple(sorted(set(by_side[SIDES[0]]) ^ set(by_side[SIDES[1]])))
    sides = {side: summarize_side([summarize_run(by_side[side][seed], settings) for seed in seeds], settings)
             for side in SIDES}
    x, z = sides["small_alpha_x"], sides["small_alpha_z"]
    final = reach = None
    if x.learned and z.learned:
        final = paired_comparison(x.final_excess, z.final_excess, settings.confidence)
        if np.isfinite(np.concatenate([x.tokens_to_reach, z.tokens_to_reach])).any():
            reach = paired_rank_comparison(x.tokens_to_reach, z.tokens_to_reach, settings.confidence)
    nan = {(question, test): math.nan for question in QUESTIONS for test in ("t", "sign_flip")}
    return Comparison(group, seeds, unpaired, sides, final, reach, nan, settings)


def _with_holm(comparisons: list[Comparison]) -> list[Comparison]:
    """Each comparison with Holm-adjusted p-values, one family per (measure, learner, model, question, test)."""
    adjusted = {id(c): dict(c.holm) for c in comparisons}
    families: dict[tuple, list[Comparison]] = {}
    for c in comparisons:
        families.setdefault(c.group[1:], []).append(c)
    for members in families.values():
        for question in QUESTIONS:
            tests = [c.test(question) for c in members]
            for name, field in (("t", "t_p_value"), ("sign_flip", "permutation_p_value")):
                p = [math.nan if test is None else getattr(test, field) for test in tests]
                for c, value in zip(members, holm(p), strict=True):
                    adjusted[id(c)][question, name] = float(value)
    return [dataclasses.replace(c, holm=adjusted[id(c)]) for c in comparisons]


def compare(runs: Iterable[Run], settings: Settings) -> list[Comparison]:
    """One Comparison per group with at least one seed on both sides, sorted by group."""
    runs = list(runs)
    comparisons = [_compare_group(group, [run for run in runs if run.group == group], settings)
                   for group in sorted({run.group for run in runs})]
    return _with_holm([c for c in comparisons if c is not None])


def family_size(comparisons: Sequence[Comparison], comparison: Comparison, question: str) -> int:
    """Tests in the Holm family of `comparison`'s `question`: graphs compared in its measure, learner, model size."""
    return sum(c.group[1:] == comparison.group[1:] and c.test(question) is not None for c in comparisons)
