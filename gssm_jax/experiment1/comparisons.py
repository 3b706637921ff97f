"""The two sides of each group compared, paired by seed, with Holm's correction across graphs, and their caveats.

For every `Group` (graph, matching measure, learner, model size) the seeds present on both sides form the
pairs, less the pairs the calibration record marks unmatched (left out and listed). Two questions are always
answered, each paired by seed:

* which side *ends lower*: final excess loss, paired t-test and sign-flip test (`paired_comparison`);
* which side *learns faster*: tokens to reach `reach_excess`, censored when never reached, compared by pooled
  ranks (`paired_rank_comparison`), since a paired t on censored values would be meaningless.

A side is lower when the interval of the mean paired difference excludes 0; it is *significant* when the
paired t p-value after Holm's correction (across the graphs of one measure, learner, model size and question)
is below the level. Next to the answer, never in front of it, each side carries caveats (`SideSummary`):
whether it still improves (`Improvement`: after a full cool-down at half and at the whole budget, else by the
end slope), whether it has learned (final excess at most `reach_excess` and share of the learnable gap closed
at least `learned_gap_share`), and whether it beats the memorisation baseline (the n-gram of its data).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from gssm_jax.difficulty.sides import SIDE_NAMES, SIDES
from gssm_jax.experiment1 import curves
from gssm_jax.experiment1.runs import EXCESS, EXCESS_STDERR, FloorKey, Group, Run
from gssm_jax.statistics import (
    Interval,
    PairedComparison,
    RankComparison,
    confidence_interval,
    holm,
    paired_comparison,
    paired_rank_comparison,
)

SIDE_LABELS = {side.name: side.label for side in SIDES}
QUESTIONS = ("final", "reach")  # ends lower; learns faster


@dataclasses.dataclass(frozen=True)
class Settings:
    """Thresholds of the report. The defaults are the `config.report` block of gssm_jax/configs/experiment1.py,
    which documents and justifies each (tests/experiment1/test_report.py checks that the two agree)."""

    significance_level: float = 0.05
    confidence: float = 0.95
    reach_excess: float = 0.1
    learned_gap_share: float = 0.9
    convergence_min_gain: float = 0.1
    convergence_noise: float = 2.0
    convergence_window: float = 0.2
    convergence_level: float = 0.05
    convergence_min_drop: float = 0.05

    @classmethod
    def from_config(cls, config) -> Settings:
        """From a mapping (e.g. `config.report`) holding every field."""
        missing = [field.name for field in dataclasses.fields(cls) if field.name not in config]
        if missing:
            raise ValueError(f"config.report lacks {', '.join(missing)}; see gssm_jax/configs/experiment1.py")
        return cls(**{field.name: float(config[field.name]) for field in dataclasses.fields(cls)})


def _run_improvement(run: Run, settings: Settings) -> curves.Improvement:
    s = settings
    return curves.run_improvement(
        run.tokens, run.excess, [(c["tokens_seen"], c[EXCESS], c.get(EXCESS_STDERR, math.nan)) for c in run.cooldowns],
        min_gain=s.convergence_min_gain, noise=s.convergence_noise, window=s.convergence_window,
        level=s.convergence_level, min_drop=s.convergence_min_drop)


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """One run: tokens to reach `reach_excess`, whether it still improves, its n-gram baseline (nan: none).

    ngram_excess: the n-gram baseline's held-out loss minus this run's entropy rate (same sequences), nats/token.
    unigram_excess: the unigram model's, the denominator of the share of the learnable gap closed.
    """

    run: Run
    tokens_to_reach: float
    improvement: curves.Improvement
    ngram_excess: float
    unigram_excess: float


def summarize_run(run: Run, settings: Settings, floor: Mapping | None = None) -> RunSummary:
    reach = curves.tokens_to_reach(run.tokens, run.excess, settings.reach_excess) if run.tokens.size else math.inf
    ngram = floor["nats_per_token"] - run.entropy if floor else math.nan
    unigram = floor["unigram_nats_per_token"] - run.entropy if floor and "unigram_nats_per_token" in floor else math.nan
    return RunSummary(run, reach, _run_improvement(run, settings), ngram, unigram)


@dataclasses.dataclass(frozen=True)
class SideSummary:
    """The paired runs of one side of a group, in seed order, and the side's caveats.

    Attributes:
      runs: one RunSummary per paired seed.
      final: Student-t interval of the mean final excess loss (nats/token).
      entropy, unigram_excess: mean entropy rate and mean unigram excess (nan without baselines), nats/token.
      gap_share: share of the learnable gap closed, 1 - mean final excess / mean unigram excess (nan: unknown).
      learned: final.mean <= reach_excess and gap_share >= learned_gap_share (the latter when known).
      improvement: whether the side's mean still improves (`curves.side_improvement`).
      ngram_excess: mean n-gram baseline excess over the seeds that have one (nan: none); `baselines` that many.
      below_baseline: runs whose final excess is below their own seed's n-gram baseline.
    """

    runs: tuple[RunSummary, ...]
    final: Interval
    entropy: float
    unigram_excess: float
    gap_share: float
    learned: bool
    improvement: curves.Improvement
    ngram_excess: float
    baselines: int
    below_baseline: int

    @property
    def final_excess(self) -> np.ndarray:
        return np.array([summary.run.final_excess for summary in self.runs])

    @property
    def tokens_to_reach(self) -> np.ndarray:
        return np.array([summary.tokens_to_reach for summary in self.runs])

    @property
    def beats_baseline(self) -> bool | None:
        """Mean final excess below the mean n-gram baseline of the same seeds (None: no baseline)."""
        if not self.baselines:
            return None
        with_baseline = [s.run.final_excess for s in self.runs if math.isfinite(s.ngram_excess)]
        return bool(np.mean(with_baseline) < self.ngram_excess)


def summarize_side(summaries: Sequence[RunSummary], settings: Settings) -> SideSummary:
    final = confidence_interval([summary.run.final_excess for summary in summaries], settings.confidence)
    unigram = float(np.mean([summary.unigram_excess for summary in summaries]))
    gap_share = 1 - final.mean / unigram if unigram > 0 else math.nan
    learned = final.mean <= settings.reach_excess and not gap_share < settings.learned_gap_share
    floors = [summary for summary in summaries if math.isfinite(summary.ngram_excess)]
    improvement = curves.side_improvement([summary.improvement for summary in summaries],
                                          min_gain=settings.convergence_min_gain, noise=settings.convergence_noise)
    return SideSummary(tuple(summaries), final, float(np.mean([summary.run.entropy for summary in summaries])),
                       unigram, gap_share, bool(learned), improvement,
                       float(np.mean([s.ngram_excess for s in floors])) if floors else math.nan, len(floors),
                       sum(s.run.final_excess < s.ngram_excess for s in floors))


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Both sides of one group, paired by seed.

    Attributes:
      group: the graph, measure, learner and model size.
      seeds: the paired seeds used; `unpaired` those on one side only; `unmatched` {seed: mismatch (None: not in
        the record)} of the pairs the calibration record marks unmatched (left out).
      calibration: the calibration record of (graph, measure) (`calibration`), None when there is none.
      sides: `{side: SideSummary}` over the paired seeds.
      final: paired comparison of final excess loss, small alpha_X minus small alpha_Z.
      reach: rank comparison of tokens to reach `settings.reach_excess` (None: no paired run reached it).
      holm: `{(question, "t" | "sign_flip"): Holm-adjusted p-value}`; family: `{question: graphs in its family}`.
    """

    group: Group
    seeds: tuple[int, ...]
    unpaired: tuple[int, ...]
    unmatched: dict[int, float | None]
    calibration: dict | None
    sides: dict[str, SideSummary]
    final: PairedComparison
    reach: RankComparison | None
    settings: Settings
    holm: dict[tuple[str, str], float] = dataclasses.field(default_factory=dict)
    family: dict[str, int] = dataclasses.field(default_factory=dict)

    def test(self, question: str) -> PairedComparison | None:
        """The paired comparison behind `question`: final excess values, or ranks of tokens to reach."""
        if question == "final":
            return self.final
        return None if self.reach is None else self.reach.ranks

    def lower(self, question: str) -> str | None:
        """The side whose values are lower when the interval of the paired difference excludes 0, else None."""
        test = self.test(question)
        if test is None or not (test.high < 0 or test.low > 0):
            return None
        return SIDE_NAMES[0] if test.mean_difference < 0 else SIDE_NAMES[1]

    def outcome(self, question: str) -> str:
        """"not compared", "not significant", or the side that ends lower / learns faster, Holm-significant."""
        if self.test(question) is None:
            return "not compared"
        if not self.holm[question, "t"] < self.settings.significance_level:
            return "not significant"
        return SIDE_NAMES[0] if self.test(question).mean_difference < 0 else SIDE_NAMES[1]

    def confirmed(self, question: str) -> bool:
        """Whether the sign-flip test, Holm-adjusted, is also below the significance level."""
        return bool(self.holm[question, "sign_flip"] < self.settings.significance_level)

    def smallest_sign_flip_p(self, question: str) -> tuple[float, float]:
        """The smallest attainable sign-flip p with this many pairs, 2 / 2^n, and after Holm over the family."""
        smallest = min(1.0, 2.0 / 2 ** len(self.seeds))
        return smallest, min(1.0, smallest * max(self.family.get(question, 1), 1))

    @property
    def settled(self) -> bool:
        """The final excess's lower side is established and the other side has stopped improving."""
        lower = self.lower("final")
        return lower is not None and self.sides[other_side(lower)].improvement.still_improving is False


def other_side(side: str) -> str:
    """The other side of the pair."""
    return SIDE_NAMES[1 - SIDE_NAMES.index(side)]


def _unmatched(calibration: Mapping | None, seeds: Iterable[int]) -> dict[int, float | None]:
    if calibration is None:
        return {}
    pairs = calibration.get("pairs", {})
    return {seed: pairs.get(str(seed), {}).get("mismatch") for seed in seeds
            if not pairs.get(str(seed), {}).get("matched", False)}


def _compare_group(group: Group, runs: Sequence[Run], settings: Settings, calibration: dict | None,
                   floors: Mapping[FloorKey, dict]) -> Comparison | None:
    by_side = {side: {run.seed: run for run in runs if run.side == side} for side in SIDE_NAMES}
    both = sorted(set(by_side[SIDE_NAMES[0]]) & set(by_side[SIDE_NAMES[1]]))
    unmatched = _unmatched(calibration, both)
    seeds = tuple(seed for seed in both if seed not in unmatched)
    if not seeds:
        return None
    sides = {side: summarize_side([summarize_run(by_side[side][seed], settings,
                                                 floors.get(FloorKey(group.measure, group.graph, side, seed)))
                                   for seed in seeds], settings) for side in SIDE_NAMES}
    x, z = (sides[side] for side in SIDE_NAMES)
    final = paired_comparison(x.final_excess, z.final_excess, settings.confidence)
    reach = None
    if np.isfinite(np.concatenate([x.tokens_to_reach, z.tokens_to_reach])).any():
        reach = paired_rank_comparison(x.tokens_to_reach, z.tokens_to_reach, settings.confidence)
    unpaired = tuple(sorted(set(by_side[SIDE_NAMES[0]]) ^ set(by_side[SIDE_NAMES[1]])))
    return Comparison(group, seeds, unpaired, unmatched, calibration, sides, final, reach, settings)


def _defined(p: float) -> float:
    return p if math.isfinite(p) else 1.0


def _with_holm(comparisons: list[Comparison]) -> list[Comparison]:
    """Each comparison with Holm-adjusted p-values, one family per (measure, learner, model, question, test)."""
    adjusted = {id(c): {} for c in comparisons}
    family = {id(c): {} for c in comparisons}
    families: dict[tuple, list[Comparison]] = {}
    for c in comparisons:
        families.setdefault(c.group[1:], []).append(c)
    for members in families.values():
        for question in QUESTIONS:
            tests = [c.test(question) for c in members]
            for c in members:
                family[id(c)][question] = sum(test is not None for test in tests)
            for name, field in (("t", "t_p_value"), ("sign_flip", "permutation_p_value")):
                # A test that is run but undefined (one pair, no spread) counts in the family with p = 1.
                p = [math.nan if test is None else _defined(getattr(test, field)) for test in tests]
                for c, value in zip(members, holm(p), strict=True):
                    adjusted[id(c)][question, name] = float(value)
    return [dataclasses.replace(c, holm=adjusted[id(c)], family=family[id(c)]) for c in comparisons]


def compare(runs: Iterable[Run], settings: Settings, calibrations: Mapping[tuple[str, str], dict] | None = None,
            floors: Mapping[FloorKey, dict] | None = None) -> list[Comparison]:
    """One Comparison per group with at least one matched seed pair on both sides, sorted by group.

    calibrations: `{(graph, measure): calibration record}` (`runs.load_calibrations`); pairs it marks unmatched
      are left out. floors: `{FloorKey: ngram.json record}` (`runs.load_floors`), for the baselines and G.
    """
    runs, calibrations, floors = list(runs), calibrations or {}, floors or {}
    comparisons = [_compare_group(group, [run for run in runs if run.group == group], settings,
                                  calibrations.get((group.graph, group.measure)), floors)
                   for group in sorted({run.group for run in runs})]
    return _with_holm([c for c in comparisons if c is not None])
