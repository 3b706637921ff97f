"""The Experiment 1 report: the answer with its caveats, tables and plots, from a sweep's files.

Reads what the sweep wrote (`gssm_jax.experiment1.runs`: finished runs, n-gram baselines, calibration records,
learning-rate choices), compares the sides of every (graph, matching measure, learner, model size) paired by
seed (`gssm_jax.experiment1.comparisons`), and writes `WORKDIR/report.md` with `learning_curves.png`,
`final_excess.png` and `per_position.png`, and `WORKDIR/summary.json`. Every group gets an answer: which side
ends lower and which learns faster, then the caveats (still improving or settled, learned, the memorisation
baseline, unmatched pairs, the sign-flip test's floor). Losses are nats/token throughout. The notebook
`notebooks/experiment1.ipynb` calls the same functions, so the two cannot disagree.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from gssm_jax import files
from gssm_jax.difficulty.sides import SIDE_NAMES
from gssm_jax.errors import UserError
from gssm_jax.experiment1 import plots, report_tables, runs
from gssm_jax.experiment1.comparisons import QUESTIONS, SIDE_LABELS, Comparison, Settings, compare, other_side
from gssm_jax.experiment1.report_tables import difficulty_text, p_text, share, tokens_text

FACTOR_NAMES = {"graph": "graph", "measure": "matching measure", "learner": "learner", "model": "model size"}
QUESTION_NAMES = {"final": "Ends lower", "reach": "Learns faster"}
BASELINE_TEXT = (
    "An add-constant n-gram model (order and constant chosen on a validation split) counted on the first tokens of "
    "each seed's training stream and scored on the runs' held-out sequences. With alphas near 1e-3 the sequences can "
    "be near-deterministic paths whose held-out k-gram contexts were mostly seen in training (last table), so this is "
    "a **memorisation baseline**: a learner below it does better than recalling the contexts it saw; one above it may "
    "still use latent structure, only less well than counting does at this budget.")


def _tests_text(c: Comparison, question: str, subject: str) -> str:
    test, family = c.test(question), c.family[question]
    text = (f"paired t on {subject} p = {p_text(test.t_p_value)}, sign-flip p = {p_text(test.permutation_p_value)}; "
            f"Holm-adjusted over {family} graph{'s' * (family != 1)}: {p_text(c.holm[question, 't'])} and "
            f"{p_text(c.holm[question, 'sign_flip'])}")
    lower = c.lower(question)
    if lower is not None and c.outcome(question) != lower:
        return text + "; not significant after Holm's correction"
    if lower is not None and not c.confirmed(question):
        return text + "; not confirmed by the sign-flip test"
    return text


def _verdict(c: Comparison, question: str, values: tuple[float, float]) -> str:
    if len(c.seeds) == 1:
        side = SIDE_NAMES[0] if values[0] < values[1] else SIDE_NAMES[1]
        return "neither (a tie)" if values[0] == values[1] else f"{SIDE_LABELS[side]}, in the only pair"
    lower, test = c.lower(question), c.test(question)
    if lower is None and not math.isfinite(test.low):
        return "not established: the paired differences have no spread, so no interval"
    return SIDE_LABELS[lower] if lower else f"neither: the {c.settings.confidence:.0%} CI of the paired difference " \
        "includes 0"


def _final_sentence(c: Comparison) -> str:
    x, z = (c.sides[side].final.mean for side in SIDE_NAMES)
    test = c.final
    tests = ("one pair gives no interval and no test" if len(c.seeds) == 1 else _tests_text(c, "final", "the values"))
    return (f"**Ends lower: {_verdict(c, 'final', (x, z))}** (final excess {x:.4f} vs {z:.4f} nats/token; paired "
            f"difference X - Z {report_tables.difference_text(test.mean_difference, test.low, test.high)}; {tests}).")


def _reach_sentence(c: Comparison) -> str:
    target = c.settings.reach_excess
    if c.reach is None:
        return f"**Learns faster: not compared**: no paired run reached {target:g} nats/token."
    x, z = (c.sides[side].tokens_to_reach for side in SIDE_NAMES)
    rank = c.reach
    tests = ("one pair gives no test" if len(c.seeds) == 1 else _tests_text(c, "reach", "pooled ranks"))
    return (f"**Learns faster: {_verdict(c, 'reach', (float(x[0]), float(z[0])))}** (tokens to reach {target:g} "
            f"nats/token: median {tokens_text(float(np.median(x)))} vs {tokens_text(float(np.median(z)))}; pairs "
            f"where small alpha_X got there first / small alpha_Z first / tied: {rank.a_smaller} / {rank.b_smaller} / "
            f"{rank.ties}; runs that never got there: {rank.censored_a} and {rank.censored_b}; {tests}).")


def _improvement_clause(c: Comparison, side: str) -> str:
    i, label = c.sides[side].improvement, SIDE_LABELS[side]
    if i.method == "cool-down":
        g = i.gain
        state = "still improving at this budget" if i.still_improving else "has stopped improving"
        return (f"{label} {state} (after a full cool-down, doubling the tokens took its excess from "
                f"{g.excess_half:.4f} to {g.excess_full:.4f}: a gain of {share(g.gain)}, against "
                f"{c.settings.convergence_min_gain:.0%})")
    if i.method == "end slope":
        state = "still improving at this budget" if i.still_improving else "no longer falling"
        return (f"{label} {state} by the end-slope check ({i.runs_improving} of {i.runs_checked} runs falling over "
                f"the last {c.settings.convergence_window:.0%}; no cool-down branches, and a decayed learning rate "
                "flattens the end, so a flat end does not show that more tokens would not help)")
    return f"{label}: convergence not checked (too few evaluations)"


def _convergence_caveat(c: Comparison) -> str:
    clauses, lower = "; ".join(_improvement_clause(c, side) for side in SIDE_NAMES), c.lower("final")
    if c.settled:
        return (f"Convergence, **settled**: {SIDE_LABELS[other_side(lower)]} has stopped improving and "
                f"{SIDE_LABELS[lower]} is already below it. Per side: {clauses}.")
    if lower is not None and c.sides[other_side(lower)].improvement.still_improving:
        return f"Convergence: {clauses}: the gap may narrow with more tokens."
    return f"Convergence: {clauses}."


def _learned_caveat(c: Comparison) -> str:
    s = c.settings
    parts = [f"{SIDE_LABELS[side]} {'yes' if c.sides[side].learned else 'no'} ({c.sides[side].final.mean:.4f}, "
             f"G = {share(c.sides[side].gap_share)})" for side in SIDE_NAMES]
    unknown = "; G unknown without an n-gram record's unigram model" if any(
        not math.isfinite(c.sides[side].gap_share) for side in SIDE_NAMES) else ""
    return (f"Learned (final excess <= {s.reach_excess:g} nats/token and share of the learnable gap closed "
            f"G >= {s.learned_gap_share:.0%}{unknown}): " + "; ".join(parts) + ".")


def _baseline_caveat(c: Comparison) -> str:
    parts = []
    for side in SIDE_NAMES:
        s = c.sides[side]
        if s.beats_baseline is None:
            parts.append(f"{SIDE_LABELS[side]}: no n-gram record")
            continue
        verb = "beats it" if s.beats_baseline else "does not beat it"
        parts.append(f"{SIDE_LABELS[side]} {verb} ({s.final.mean:.4f} vs {s.ngram_excess:.4f}; {s.below_baseline} "
                     f"of {s.baselines} runs below their own)")
    return "Memorisation baseline (n-gram on the same stream): " + "; ".join(parts) + "."


def _pairs_caveat(c: Comparison) -> str:
    if c.calibration is None:
        return f"No calibration record of {c.group.graph}/{c.group.measure}: whether the pairs match is not checked."
    if not c.unmatched:
        return f"All {len(c.seeds)} pairs matched by the calibration (per-pair mismatch in the Calibration section)."
    unit = c.calibration["unit"]
    listed = ", ".join(f"seed {seed} (" + ("not in the record" if mismatch is None else
                                          f"mismatch {difficulty_text(mismatch, unit)}") + ")"
                       for seed, mismatch in sorted(c.unmatched.items()))
    return f"Pairs not matched by the calibration, left out: {listed}."


def pairs_needed(level: float, family: int = 1) -> int:
    """The fewest pairs whose smallest sign-flip p, 2 / 2^n (times the Holm family), is below `level`."""
    return int(math.floor(math.log2(2 * max(family, 1) / level))) + 1


def _floor_caveat(c: Comparison) -> str:
    smallest, adjusted = c.smallest_sign_flip_p("final")
    family, level, n = c.family["final"], c.settings.significance_level, len(c.seeds)
    text = (f"With {n} pair{'s' * (n != 1)} the sign-flip test's smallest attainable p is {p_text(smallest)} "
            f"({p_text(adjusted)} after Holm over {family} graph{'s' * (family != 1)})")
    if adjusted < level:
        return text + "."
    needed = f"{pairs_needed(level)} pairs reach {level:g}" + (f", {pairs_needed(level, family)} after Holm"
                                                              if family > 1 else "")
    return text + f": too few pairs for it to reach {level:g} ({needed})."


def answer(c: Comparison) -> str:
    """One group's answer (ends lower, learns faster), then its caveats as a nested Markdown list."""
    g = c.group
    head = f"**{g.graph}** (matched by {g.measure}; {g.learner} `{g.model}`; {len(c.seeds)} seed pairs)"
    caveats = [_convergence_caveat(c), _learned_caveat(c), _baseline_caveat(c), _pairs_caveat(c), _floor_caveat(c)]
    return (f"{head}: {_final_sentence(c)} {_reach_sentence(c)}\n" + "\n".join(f"  - {text}" for text in caveats))


def _outcomes_text(outcomes: dict[str, str]) -> str:
    by_outcome: dict[str, list[str]] = {}
    for value, outcome in outcomes.items():
        by_outcome.setdefault(outcome, []).append(value)
    return "; ".join(f"{report_tables.SHORT.get(outcome, outcome)} on {', '.join(by_outcome[outcome])}"
                     for outcome in (*SIDE_NAMES, "not significant", "not compared") if outcome in by_outcome)


def dependence(comparisons: Sequence[Comparison], factor: str) -> str:
    """Whether each answer depends on `factor` (a `Group` field): a sentence per question and context, as a
    Markdown list when there are several. Only Holm-significant answers count as a side."""
    name, index = FACTOR_NAMES[factor], runs.Group._fields.index(factor)
    values = sorted({c.group[index] for c in comparisons})
    if not values:
        return f"No finished pairs, so whether the answer depends on the {name} is not tested."
    if len(values) < 2:
        return f"Only one {name} was run ({values[0]}), so whether the answer depends on the {name} is not tested."
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
            winners = {outcome for outcome in outcomes.values() if outcome in SIDE_NAMES}
            listed = _outcomes_text(outcomes)
            if len(winners) > 1:
                text = f"**depends on the {name}**: {listed}"
            elif winners and all(outcome in SIDE_NAMES for outcome in outcomes.values()):
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
        "held-out sequences, nats/token. Graph seed k is shared by both sides (kernel key, data stream, held-out set, "
        "initialisation): the sides are compared **paired by seed**, less the pairs the calibration marks unmatched "
        f"(listed). *Ends lower*: final excess; the mean paired difference with its {s.confidence:.0%} t interval (a "
        "side is lower when it excludes 0), the paired t-test and the sign-flip test (exact over all 2^n flips up to "
        "16 pairs; its smallest two-sided p, 2/2^n, is printed). *Learns faster*: tokens until the excess first falls "
        f"to {s.reach_excess:g} nats/token; a run that never does is censored, ranked worse than every run that did, "
        "and the pairs' pooled-rank differences are tested the same way. **Significant**: the paired t p-value after "
        "**Holm's correction** across the graphs (one family per question, measure, learner and model size) is below "
        f"{s.significance_level:g}; the sign-flip p-values are adjusted the same way. Caveats, never gates: *still "
        "improving* when, after a full learning-rate cool-down at half and at the whole budget, doubling the tokens "
        f"cut the side's mean excess by at least {s.convergence_min_gain:.0%} and by more than {s.convergence_noise:g} "
        "standard errors; *settled* when the lower side is established and the other side has stopped improving; runs "
        f"without cool-down branches fall back to the slope over the last {s.convergence_window:.0%} of training "
        f"(one-sided p < {s.convergence_level:g}, fitted drop >= {s.convergence_min_drop:.0%}), which a decayed "
        f"learning rate flattens. *Learned*: final excess <= {s.reach_excess:g} nats/token and share of the learnable "
        f"gap closed G = 1 - excess / (unigram model's excess) >= {s.learned_gap_share:.0%}. *Memorisation baseline*: "
        "the n-gram model of the same seed's tokens, scored on the same held-out sequences.")


def _left_out(finished: Sequence[runs.Run], comparisons: Sequence[Comparison]) -> list[str]:
    """Groups and seeds left out of the comparisons: seeds on one side only, groups without a matched pair."""
    notes = [f"{'/'.join(c.group)}: seed{'s' * (len(c.unpaired) > 1)} {', '.join(map(str, c.unpaired))} on one "
             "side only" for c in comparisons if c.unpaired]
    for group in sorted({run.group for run in finished} - {c.group for c in comparisons}):
        sides = [{run.seed for run in finished if (run.group, run.side) == (group, side)} for side in SIDE_NAMES]
        both = ", ".join(map(str, sorted(sides[0] & sides[1])))
        notes.append(f"{'/'.join(group)}: " + (f"no matched pair (seeds {both} are unmatched or not in the "
                                                 "calibration record)" if both else "runs on one side only"))
    return notes


def write_report(workdir: str, settings: Settings | None = None) -> str:
    """Writes `workdir/report.md`, its PNG plots and `workdir/summary.json` from the sweep's files; returns the path.

    settings: the thresholds (`Settings.from_config(config.report)`); None: the defaults of the shipped config.

    Raises:
      UserError: `workdir` holds no runs (`workdir/runs` is missing).
    """
    if not os.path.isdir(os.path.join(workdir, "runs")):
        raise UserError(f"--workdir={workdir} holds no runs (no {os.path.join(workdir, 'runs')}); run the sweep "
                        "first (without --report_only), or pass the sweep's workdir")
    settings = settings or Settings()
    finished, floors, calibrations = runs.load_runs(workdir), runs.load_floors(workdir), runs.load_calibrations(workdir)
    comparisons = compare(finished, settings, calibrations, floors)
    unfinished = runs.unfinished_runs(workdir)
    for name, figure in {"learning_curves.png": plots.plot_learning_curves(comparisons, floors),
                         "final_excess.png": plots.plot_final_excess(comparisons),
                         "per_position.png": plots.plot_per_position(finished)}.items():
        files.write_figure(os.path.join(workdir, name), figure, dpi=110)
    left_out = _left_out(finished, comparisons)
    status = f"{len(finished)} finished runs in `{workdir}`" if finished else f"No finished runs in `{workdir}` yet"
    lines = ["# Experiment 1: easy to infer (small alpha_X) or easy to predict (small alpha_Z)?", "",
             status + (f"; {len(unfinished)} unfinished (rerun the command to finish them)." if unfinished else ".")
             + (f" Left out: {'; '.join(left_out)}." if left_out else ""), "", "## Answer", ""]
    if comparisons:
        lines += [*[f"- {answer(c)}" for c in comparisons], "",
                  *[line for factor in FACTOR_NAMES for line in (dependence(comparisons, factor), "")]]
    else:
        lines += ["Nothing to compare: no seed has a finished, matched run on both sides.", ""]
    t = report_tables
    lines += ["## Learning curves", "", "![learning curves](learning_curves.png)", "",
              "### Which side ends lower: final excess loss (nats/token)", "", t.final_table(comparisons), "",
              "### Which side learns faster: tokens to reach the stated excess", "", t.reach_table(comparisons), "",
              "### Learned: the share of the learnable gap closed", "", t.learned_table(comparisons), "",
              "### Convergence: what doubling the budget bought after a full cool-down", "",
              t.convergence_table(comparisons), "",
              "### The memorisation baseline: an n-gram on the same tokens (nats/token)", "", BASELINE_TEXT, "",
              *((t.baseline_table(comparisons, floors), "") if floors else ("No n-gram records yet.", "")),
              *(("At matched training tokens:", "", t.matched_tokens_table(comparisons, floors), "")
                if any("curve" in record for record in floors.values()) else ()),
              *((t.memorisation_table(floors), "") if any("memorisation" in r for r in floors.values()) else ()),
              "## Learning rate", "", t.learning_rate_table(runs.load_learning_rates(workdir), finished), "",
              "## Calibration", ""]
    for (graph, measure), record in calibrations.items():
        lines += [f"**{graph}**, matched by {measure}: {t.calibration_table(record)}", ""]
    lines += [] if calibrations else ["No calibration records (`calibration/<graph>.<measure>.json`).", ""]
    starts = sorted({run.start for run in finished})
    lines += ["## Method", "", method(settings), "",
              *((f"Sequences start from: {'; '.join(starts)} (`config.data.initial_state`).", "") if starts else ()),
              "## Plots", "", "![final excess loss](final_excess.png)", "",
              "![per-position loss](per_position.png)", "", "## Runs", "", t.runs_table(comparisons), ""]
    if unfinished:
        lines += ["Unfinished runs: " + ", ".join(f"`{os.path.relpath(p, workdir)}`" for p in unfinished), ""]
    files.write_json(os.path.join(workdir, "summary.json"), report_tables.summary_record(comparisons))
    path = os.path.join(workdir, "report.md")
    files.write_text(path, "\n".join(lines))
    return path
