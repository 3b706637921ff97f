"""The Experiment 1 report: answer, tables, learning curves and convergence checks from a sweep's run directories.

Reads the finished runs under `WORKDIR/runs/` (`gssm_jax.experiment1.runs`) and `WORKDIR/calibration/*.json`,
compares the sides of every (graph, matching measure, learner, model size) paired by seed
(`gssm_jax.experiment1.comparisons`), and writes `WORKDIR/report.md` with `learning_curves.png`,
`final_excess.png` and `per_position.png`, and `WORKDIR/summary.json` (every run's curve summary and
convergence check, every comparison's tests). Losses are nats per token throughout. The notebook
`notebooks/experiment1.ipynb` calls the same functions, so the two cannot disagree.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from gssm_jax import files
from gssm_jax.errors import UserError
from gssm_jax.experiment1 import plots, report_tables
from gssm_jax.experiment1.comparisons import (
    NOT_LEARNED,
    QUESTIONS,
    SIDE_LABELS,
    SIDES,
    Comparison,
    Settings,
    compare,
    family_size,
)
from gssm_jax.experiment1.runs import Group, load_calibrations, load_floors, load_runs, unfinished_runs

FACTOR_NAMES = {"graph": "graph", "measure": "matching measure", "learner": "learner", "model": "model size"}
QUESTION_NAMES = {"final": "Ends lower", "reach": "Learns faster"}
FLOOR_TEXT = ("An add-constant n-gram model (order and constant chosen on a validation split) counted on the first "
              "tokens of each seed's training stream, as many as one run trains on, scored on the runs' held-out "
              "sequences: a learner whose excess is not below the floor's has used no latent structure.")


def _tests_text(c: Comparison, question: str, subject: str, family: int) -> str:
    test = c.test(question)
    p_text = report_tables.p_text
    return (f"paired t on {subject} p = {p_text(test.t_p_value)}, sign-flip p = "
            f"{p_text(test.permutation_p_value)}; Holm-adjusted over {family} graph{'s' * (family != 1)}: "
            f"{p_text(c.holm[question, 't'])} and {p_text(c.holm[question, 'sign_flip'])}")


def _confirmation(c: Comparison, question: str) -> str:
    if c.outcome(question) not in SIDES or c.confirmed(question):
        return ""
    return (f"; not confirmed by the sign-flip test, whose smallest attainable p with {len(c.seeds)} pairs is "
            f"{c.test(question).smallest_permutation_p:.3g} before the correction")


def _final_sentence(c: Comparison, family: int) -> str:
    outcome, test = c.outcome("final"), c.final
    x, z = (c.sides[side].final.mean for side in SIDES)
    verdict = SIDE_LABELS[outcome] if outcome in SIDES else "no significant difference"
    return (f"**Ends lower: {verdict}** (final excess {x:.4f} vs {z:.4f} nats/token; paired difference X - Z "
            f"{report_tables.difference_text(test.mean_difference, test.low, test.high)}; "
            f"{_tests_text(c, 'final', 'the values', family)}{_confirmation(c, 'final')}).")


def _reach_sentence(c: Comparison, family: int) -> str:
    target = c.settings.reach_excess
    if c.outcome("reach") == "not compared":
        return f"**Learns faster: not compared**: no paired run reached {target:g} nats/token."
    outcome, rank = c.outcome("reach"), c.reach
    verdict = SIDE_LABELS[outcome] if outcome in SIDES else "no significant difference"
    x, z = (c.sides[side].tokens_to_reach for side in SIDES)
    return (f"**Learns faster: {verdict}** (tokens to reach {target:g} nats/token: median "
            f"{report_tables.tokens_text(float(np.median(x)))} vs "
            f"{report_tables.tokens_text(float(np.median(z)))}; pairs where "
            f"small alpha_X got there first / small alpha_Z first / tied: {rank.a_smaller} / {rank.b_smaller} / "
            f"{rank.ties}; runs that never got there: {rank.censored_a} and {rank.censored_b}; "
            f"{_tests_text(c, 'reach', 'pooled ranks', family)}{_confirmation(c, 'reach')}).")


def _shortfall(c: Comparison, side: str) -> str:
    s = c.sides[side]
    return (f"{SIDE_LABELS[side]}: mean final excess {s.final.mean:.4f} nats/token = {s.excess_fraction:.0%} of its "
            f"entropy rate {s.entropy:.4f} (limit {c.settings.max_excess_fraction:.0%}), {s.still_falling} of "
            f"{len(s.runs)} runs still falling")


def answer(comparisons: Sequence[Comparison], c: Comparison) -> str:
    """The verdict of one group: which side ends lower and which learns faster, or why neither is tested."""
    g = c.group
    head = f"**{g.graph}** (matched by {g.measure}; {g.learner} `{g.model}`; {len(c.seeds)} seed pairs)"
    if not c.learned:
        return f"{head}: **{NOT_LEARNED}** ({'; '.join(_shortfall(c, side) for side in SIDES)})."
    return (f"{head}: {_final_sentence(c, family_size(comparisons, c, 'final'))} "
            f"{_reach_sentence(c, family_size(comparisons, c, 'reach'))}")


def _outcomes_text(outcomes: dict[str, str]) -> str:
    by_outcome: dict[str, list[str]] = {}
    for value, outcome in outcomes.items():
        by_outcome.setdefault(outcome, []).append(value)
    order = [*SIDES, "not significant", "not compared", "not learned"]
    return "; ".join(f"{report_tables.OUTCOME_TEXT.get(outcome, outcome)} on {', '.join(by_outcome[outcome])}"
                     for outcome in order if outcome in by_outcome)


def dependence(comparisons: Sequence[Comparison], factor: str) -> str:
    """Whether each answer depends on `factor` (a `Group` field): a sentence per question and context, as a
    Markdown list when there are several."""
    name, index = FACTOR_NAMES[factor], Group._fields.index(factor)
    values = sorted({c.group[index] for c in comparisons})
    if len(values) < 2:
        return (f"Only one {name} was run ({values[0] if values else 'none'}), so whether the answer depends on the "
                f"{name} is not tested.")
    contexts: dict[tuple, list[Comparison]] = {}
    for c in comparisons:
        contexts.setdefault(c.group[:index] + c.group[index + 1:], []).append(c)
    sentences = []
    for context, members in sorted(contexts.items()):
        if len(members) < 2:
            continue
        prefix = f"({', '.join(context)}) " if len(contexts) > 1 else ""
        for question in QUESTIONS:
            outcomes = {c.group[index]: c.outcome(question) for c in members}
            winners = {outcome for outcome in outcomes.values() if outcome in SIDES}
            listed = _outcomes_text(outcomes)
            if len(winners) > 1:
                text = f"**depends on the {name}**: {listed}"
            elif winners and all(outcome in SIDES for outcome in outcomes.values()):
                text = (f"{SIDE_LABELS[winners.pop()]} on each of the {len(members)} {name}s run ({listed}); "
                        f"this is no evidence about other {name}s")
            elif winners:
                text = f"{listed}: whether it depends on the {name} is not established"
            elif any(outcome == "not significant" for outcome in outcomes.values()):
                text = f"no {name} shows a significant difference ({listed}): dependence not established"
            else:
                text = f"no {name} was compared ({listed}): dependence not tested"
            sentences.append(f"{prefix}{QUESTION_NAMES[question]}: {text}.")
    if len(sentences) > 1:  # one line each: a paragraph of a dozen such sentences is unreadable
        return "\n".join(f"- {sentence}" for sentence in sentences)
    return "".join(sentences) or (f"No (graph, measure, learner, model size) combination was run with more than one "
                                  f"{name}, so whether the answer depends on the {name} is not tested.")


def method(settings: Settings) -> str:
    s = settings
    return (
        "Excess loss = the model's held-out cross-entropy minus the exact entropy rate (forward algorithm) of the same "
        "held-out sequences, in nats per token, at every evaluation. Graph seed k is shared by both sides (same kernel "
        "key, data stream, held-out set and initialisation), so the sides are compared **paired by seed**. "
        f"*Ends lower*: final excess loss, the mean paired difference with its {s.confidence:.0%} t interval, the "
        "paired t-test (scipy.stats.ttest_rel) and the sign-flip permutation test (scipy.stats.permutation_test, "
        "exact over all 2^n flips up to 16 pairs; its smallest two-sided p is 2/2^n). "
        f"*Learns faster*: training tokens until the excess first falls to {s.reach_excess:g} nats/token (linear "
        "interpolation between evaluations); a run that never gets there is censored, ranked worse than every run "
        "that did (all censored runs tie), and the per-pair differences of these pooled ranks are tested with the "
        "sign-flip test (exact under censoring) and the paired t-test on the ranks. A difference is called "
        f"significant when its paired t p-value, after **Holm's correction** across the graphs compared (one family "
        f"per question, matching measure, learner and model size), is below {s.significance_level:g}; the sign-flip "
        "p-values are Holm-adjusted the same way and a verdict they do not confirm says so. "
        f"*Convergence*: over the evaluations in the last {s.convergence_window:.0%} of training tokens, the "
        "least-squares slope of excess loss against tokens, its standard error and the one-sided p-value of "
        f"slope < 0; a run is **still falling** when p < {s.convergence_level:g} and the fitted drop across that "
        f"window is at least {s.convergence_min_drop:.0%} of the fitted excess at its start (not checked with fewer "
        "than 3 evaluations in the window). A learning rate decayed to 0 at the end (cosine schedule) flattens that "
        "window, so a flat end does not show that a longer run would not learn more; the excess criterion guards "
        "against that. A side has **learned** when its mean final excess is at most "
        f"{s.max_excess_fraction:.0%} of its entropy rate and at most half its runs are still falling; a graph where "
        f"a side has not learned is reported as \"{NOT_LEARNED}\" and not tested, never as \"not significant\".")


def summary_record(comparisons: Sequence[Comparison]) -> dict:
    """JSON-able: every comparison's outcomes and p-values, every paired run's curve summary and convergence."""
    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    records = []
    for c in comparisons:
        runs = [{"side": side, "seed": s.run.seed, "path": s.run.path, "final_excess_nats": s.run.final_excess,
                 "entropy_nats": s.run.entropy, "tokens_to_reach": finite(s.tokens_to_reach),
                 **{key: (finite(value) if isinstance(value, float) else value)
                    for key, value in s.convergence._asdict().items()}}
                for side in SIDES for s in c.sides[side].runs]
        records.append({"group": c.group._asdict(), "seeds": list(c.seeds), "unpaired_seeds": list(c.unpaired),
                        "learned": {side: c.sides[side].learned for side in SIDES},
                        "outcomes": {question: c.outcome(question) for question in QUESTIONS},
                        "holm": {f"{question}/{test}": finite(value) for (question, test), value in c.holm.items()},
                        "runs": runs})
    return {"comparisons": records}


def write_report(workdir: str, settings: Settings) -> str:
    """Writes `workdir/report.md`, its PNG plots and `workdir/summary.json` from the finished runs; returns the path.

    Raises:
      UserError: `workdir` holds no runs (`workdir/runs` is missing).
    """
    if not os.path.isdir(os.path.join(workdir, "runs")):
        raise UserError(f"--workdir={workdir} holds no runs (no {os.path.join(workdir, 'runs')}); run the sweep "
                        "first (without --report_only), or pass the sweep's workdir")
    runs = load_runs(workdir)
    comparisons = compare(runs, settings)
    calibrations = load_calibrations(workdir)
    unfinished = unfinished_runs(workdir)
    for name, figure in {"learning_curves.png": plots.plot_learning_curves(comparisons),
                         "final_excess.png": plots.plot_final_excess(comparisons),
                         "per_position.png": plots.plot_per_position(runs)}.items():
        files.write_figure(os.path.join(workdir, name), figure, dpi=110)
    unpaired = [f"{c.group.graph}/{c.group.model}: seeds {', '.join(map(str, c.unpaired))}" for c in comparisons
                if c.unpaired]
    lines = ["# Experiment 1: easy to infer (small alpha_X) or easy to predict (small alpha_Z)?", "",
             f"{len(runs)} finished runs in `{workdir}`"
             + (f"; {len(unfinished)} unfinished (rerun the command to finish them)." if unfinished else ".")
             + (f" Left out (no partner on the other side): {'; '.join(unpaired)}." if unpaired else ""), "",
             "## Answer", "", *[f"- {answer(comparisons, c)}" for c in comparisons], "",
             *[line for factor in FACTOR_NAMES for line in (dependence(comparisons, factor), "")],
             "## Learning curves", "", "![learning curves](learning_curves.png)", "",
             "### Which side ends lower: final excess loss (nats/token)", "",
             report_tables.final_table(comparisons), "",
             "### Which side learns faster: tokens to reach the stated excess", "",
             report_tables.reach_table(comparisons), "",
             "### Convergence", "", report_tables.convergence_table(comparisons), "",
             "### The n-gram floor: what local statistics alone reach on the same data (nats/token)", "",
             FLOOR_TEXT, "", report_tables.floor_table(comparisons, load_floors(workdir)), "", "## Calibration", ""]
    lines += [f"- **{graph}**: {report_tables.calibration_text(record)}" for (graph, _), record in calibrations.items()]
    lines += ["", "## Method", "", method(settings), "", "## Plots", "", "![final excess loss](final_excess.png)", "",
              "![per-position loss](per_position.png)", "", "## Runs", "", report_tables.runs_table(comparisons), ""]
    if unfinished:
        lines += ["Unfinished runs: " + ", ".join(f"`{os.path.relpath(p, workdir)}`" for p in unfinished), ""]
    files.write_json(os.path.join(workdir, "summary.json"), summary_record(comparisons))
    path = os.path.join(workdir, "report.md")
    files.write_text(path, "\n".join(lines))
    return path
