"""The Experiment 1 report end to end on fake run directories with hand-computed statistics (no training)."""

import dataclasses
import json
import math
import os

import numpy as np
import pytest

from gssm_jax.configs import experiment1
from gssm_jax.experiment1 import comparisons, report
from gssm_jax.experiment1.runs import load_runs, unfinished_runs
from gssm_jax.training import evaluation

ENTROPY = 2.0  # nats/token, every run
LENGTH = 8
TOKENS = np.arange(1, 21) * 1000  # 20 evals
# The configured thresholds, with the stated excess at 0.14 nats/token so that the fake curves below cross it.
SETTINGS = dataclasses.replace(report.Settings.from_config(experiment1.get_config().report), reach_excess=0.14)

# Final excess loss per graph, side and seed. Curves converge as final + (1 - final) (exp(-t / 2000) - exp(-10)) (flat
# at the end: not still falling), except eight_by_four: a straight line down to 1.5 = 75% of the entropy (not learned).
# four_by_four: paired differences -0.1, -0.12, -0.08: t = -0.1 / (0.02 / sqrt 3) = -8.660 with 2 dof, p = 0.01307;
# chain: differences 0.05, -0.05, -0.15: t = -0.866, p = 0.4778. Holm over these 2 graphs (eight_by_four is not
# tested): 0.01307 * 2 = 0.02614 < 0.05 and max(0.02614, 0.4778) = 0.4778.
EXCESS = {
    ("four_by_four", "small_alpha_x"): [0.10, 0.10, 0.13],
    ("four_by_four", "small_alpha_z"): [0.20, 0.22, 0.21],
    ("chain", "small_alpha_x"): [0.30, 0.10, 0.20],
    ("chain", "small_alpha_z"): [0.25, 0.15, 0.35],
    ("eight_by_four", "small_alpha_x"): [1.5, 1.5, 1.5],
    ("eight_by_four", "small_alpha_z"): [1.5, 1.5, 1.5],
}


def two_dof_p(t: float) -> float:
    """Two-sided p-value of Student's t with 2 degrees of freedom (closed form): 1 - |t| / sqrt(2 + t^2)."""
    return 1 - abs(t) / math.sqrt(2 + t * t)


def curve(graph: str, final: float) -> np.ndarray:
    if graph == "eight_by_four":
        return 3.0 - (3.0 - final) * TOKENS / TOKENS[-1]
    return final + (1.0 - final) * (np.exp(-TOKENS / 2000) - np.exp(-TOKENS[-1] / 2000))


def write_run(path: str, graph: str, final: float, seed: int, measure: str | None = None) -> None:
    """A finished run directory in the run-directory contract (config.json only when `measure` is given)."""
    os.makedirs(path, exist_ok=True)
    excess = curve(graph, final)
    with open(os.path.join(path, "metrics.jsonl"), "w") as file:
        for index, (tokens, value) in enumerate(zip(TOKENS, excess, strict=True)):
            file.write(json.dumps({"step": 10 * (index + 1), "tokens_seen": int(tokens), "elapsed_s": index,
                                   "train/loss_nats_per_token": ENTROPY + value,
                                   "eval/loss_nats_per_token": ENTROPY + value, "eval/entropy_nats_per_token": ENTROPY,
                                   "eval/excess_loss_nats_per_token": float(value),
                                   "eval/excess_loss_standard_error": 0.01}) + "\n")
    if measure is not None:
        with open(os.path.join(path, "config.json"), "w") as file:
            json.dump({"calibration": {"measure": measure}, "model": {"width": 32}}, file)
    optimal = np.linspace(2.5, ENTROPY, LENGTH)
    np.savez(os.path.join(path, "per_position.npz"), steps=np.arange(1, 21) * 10,
             model_loss=optimal[None] + excess[:, None], optimal_loss=optimal)
    with open(os.path.join(path, "result.json"), "w") as file:
        json.dump({"final_step": 200, "eval/loss_nats_per_token": ENTROPY + excess[-1],
                   "eval/entropy_nats_per_token": ENTROPY, "eval/excess_loss_nats_per_token": float(excess[-1]),
                   "eval/excess_loss_standard_error": 0.01, "num_parameters": 1234, "tokens_seen": 20000,
                   "wall_time_s": 5.0 + seed}, file)


def make_fake_workdir(workdir: str, excess: dict = EXCESS, model: str = "tiny", prefix: str = "",
                      measure: str | None = None) -> str:
    """Finished runs with the given final excess losses, one unfinished run and a calibration record."""
    for (graph, side), values in excess.items():
        for seed, value in enumerate(values):
            write_run(os.path.join(workdir, "runs", prefix, graph, side, f"seed{seed}", model), graph, value, seed,
                      measure)
    os.makedirs(os.path.join(workdir, "runs", "chain", "small_alpha_x", "seed9", model), exist_ok=True)  # interrupted
    calibration = {"settings": {"graph": "four_by_four", "measure": "entropy", "seeds": [0, 1, 2], "batch_size": 32,
                                "length": 64, "tolerance": 0.01},
                   "target": 2.9, "target_stderr": 0.02, "unit": "bits/token (exact entropy rate, forward algorithm)",
                   "alphas": {"small_alpha_x": {"alpha_X": 1e-3, "alpha_Z": 0.125},
                              "small_alpha_z": {"alpha_Z": 1e-3, "alpha_X": 0.0567}},
                   "difficulty": {"small_alpha_x": {"mean": 2.9, "stderr": 0.02},
                                  "small_alpha_z": {"mean": 2.905, "stderr": 0.03}}}
    os.makedirs(os.path.join(workdir, "calibration"), exist_ok=True)
    with open(os.path.join(workdir, "calibration", "four_by_four.entropy.json"), "w") as file:
        json.dump(calibration, file)
    return workdir


def compare(workdir: str) -> dict[str, comparisons.Comparison]:
    return {c.group.graph: c for c in report.compare(load_runs(workdir), SETTINGS)}


def test_the_seed_folders_loss_cache_is_not_a_run(tmp_path):
    workdir = make_fake_workdir(str(tmp_path))
    cache = os.path.join(workdir, "runs", "chain", "small_alpha_x", "seed0", evaluation.OPTIMAL_CACHE_DIR)
    os.makedirs(cache)  # what training.evaluation writes beside each run of the graph seed
    assert [os.path.relpath(path, workdir) for path in unfinished_runs(workdir)] == [
        os.path.join("runs", "chain", "small_alpha_x", "seed9", "tiny")]


def test_paired_statistics_holm_and_the_not_learned_verdict(tmp_path):
    found = compare(make_fake_workdir(str(tmp_path)))
    four, chain, eight = found["four_by_four"], found["chain"], found["eight_by_four"]
    assert four.seeds == (0, 1, 2) and four.group == ("four_by_four", "entropy", "transformer", "tiny")
    assert four.final.mean_difference == pytest.approx(-0.1)
    assert four.final.t_p_value == pytest.approx(two_dof_p(-0.1 / (0.02 / math.sqrt(3))), rel=1e-9)  # 0.01307
    assert four.holm["final", "t"] == pytest.approx(2 * four.final.t_p_value)
    assert chain.final.t_p_value == pytest.approx(two_dof_p(-0.05 / (0.1 / math.sqrt(3))), rel=1e-9)  # 0.4778
    assert chain.holm["final", "t"] == pytest.approx(chain.final.t_p_value)
    assert four.outcome("final") == "small_alpha_x" and not four.confirmed("final")  # sign-flip p >= 2/8
    assert chain.outcome("final") == "not significant"
    # eight_by_four: 75% of the entropy and every run still falling: not tested, not in the Holm family.
    assert eight.outcome("final") == eight.outcome("reach") == "not learned" and eight.final is None
    assert all(s.convergence.still_falling for side in eight.sides.values() for s in side.runs)
    assert not any(s.convergence.still_falling for side in four.sides.values() for s in side.runs)
    # Tokens to 0.14: four_by_four's small alpha_X at 6,228 / 6,228 / 8,930 tokens (ranks 1.5, 1.5, 3), small
    # alpha_Z never (rank 5): rank differences -3.5, -3.5, -2, t = -6 with 2 dof, p = 0.02667; chain: only one run
    # reaches (differences 0, -3, 0), t = -1, p = 0.4226; Holm: 0.0533 and 0.4226, so not significant.
    # (Analytic crossings; the linear interpolation between evals of this convex curve is late by < 1%.)
    np.testing.assert_allclose(four.sides["small_alpha_x"].tokens_to_reach, [6228, 6228, 8930], rtol=1e-2)
    assert four.reach.censored_b == 3 and four.reach.a_smaller == 3
    assert four.reach.ranks.t_p_value == pytest.approx(two_dof_p(-6.0), rel=1e-9)
    assert four.holm["reach", "t"] == pytest.approx(2 * two_dof_p(-6.0), rel=1e-9)
    assert chain.reach.ranks.t_p_value == pytest.approx(two_dof_p(-1.0), rel=1e-9)
    assert four.outcome("reach") == "not significant"


def test_report_states_the_answers_separately_and_names_the_correction(tmp_path):
    workdir = make_fake_workdir(str(tmp_path))
    text = open(report.write_report(workdir, SETTINGS)).read()
    answer = text.split("## Learning curves")[0]
    assert ("**four_by_four** (matched by entropy; transformer `tiny`; 3 seed pairs): **Ends lower: small alpha_X "
            "(easy to infer)** (final excess 0.1100 vs 0.2100 nats/token; paired difference X - Z -0.1000 "
            "[-0.1497, -0.0503]; paired t on the values p = 0.0131, sign-flip p = 0.25; Holm-adjusted over 2 graphs: "
            "0.0261 and 0.5; not confirmed by the sign-flip test") in answer
    assert "not confirmed by the sign-flip test, whose smallest attainable p with 3 pairs is 0.25" in answer
    assert "**Learns faster: no significant difference** (tokens to reach 0.14 nats/token: median 6.27k vs not " \
        "reached; pairs where small alpha_X got there first / small alpha_Z first / tied: 3 / 0 / 0; runs that " \
        "never got there: 0 and 3; paired t on pooled ranks p = 0.0267, sign-flip p = 0.25; Holm-adjusted over 2 " \
        "graphs: 0.0533 and 0.5)." in answer
    assert ("**eight_by_four** (matched by entropy; transformer `tiny`; 3 seed pairs): **not learned at this budget: "
            "raise train.num_steps / model size** (small alpha_X (easy to infer): mean final excess 1.5000 nats/token "
            "= 75% of its entropy rate 2.0000 (limit 20%), 3 of 3 runs still falling") in answer
    assert "not significant" not in answer.split("**eight_by_four**")[1].split("\n")[0]
    assert ("Ends lower: small alpha_X on four_by_four; not significant on chain; not learned on eight_by_four: "
            "whether it depends on the graph is not established.") in answer
    assert "Only one matching measure was run (entropy)" in answer and "Only one learner was run" in answer
    assert "does not depend" not in text
    assert "Holm's correction" in text and "Welch" not in text
    assert "| four_by_four | entropy | transformer | tiny | 3 | 0.1100 [0.0670, 0.1530] | 0.2100 [0.1852, 0.2348] | " \
           "-0.1000 [-0.1497, -0.0503] | 0.0131 (0.0261) | 0.25 (0.5) | **small alpha_X** |" in text
    assert ("| eight_by_four | entropy | transformer | tiny | small_alpha_x | 2.0000 | 1.5000 (75%) | 3 of 3 (0) | "
            "**no** |") in text
    assert "18 finished runs" in text and "1 unfinished" in text and "`runs/chain/small_alpha_x/seed9/tiny`" in text
    assert "alpha_X = 0.0567, alpha_Z = 0.001) measures 2.9050 ± 0.0300" in text
    for name in ("learning_curves.png", "final_excess.png", "per_position.png"):
        with open(os.path.join(workdir, name), "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    eight = next(c for c in summary["comparisons"] if c["group"]["graph"] == "eight_by_four")
    assert eight["outcomes"] == {"final": "not learned", "reach": "not learned"}
    assert all(run["still_falling"] is True and run["tokens_to_reach"] is None for run in eight["runs"])


def test_one_graph_never_claims_independence_of_the_graph(tmp_path):
    excess = {key: values for key, values in EXCESS.items() if key[0] == "four_by_four"}
    comparisons = report.compare(load_runs(make_fake_workdir(str(tmp_path), excess)), SETTINGS)
    assert report.dependence(comparisons, "graph") == ("Only one graph was run (four_by_four), so whether the answer "
                                                      "depends on the graph is not tested.")
    # Alone in its Holm family the reach comparison (p = 0.02667) is significant, but not by the sign-flip test.
    (four,) = comparisons
    assert four.outcome("reach") == "small_alpha_x" and not four.confirmed("reach")


def test_opposite_significant_answers_mean_the_answer_depends_on_the_graph(tmp_path):
    excess = dict(EXCESS)
    excess[("chain", "small_alpha_x")] = [0.30, 0.32, 0.31]
    excess[("chain", "small_alpha_z")] = [0.10, 0.11, 0.13]  # differences 0.2, 0.21, 0.18: p = 0.002
    comparisons = report.compare(load_runs(make_fake_workdir(str(tmp_path), excess)), SETTINGS)
    assert report.dependence(comparisons, "graph").startswith(
        "- Ends lower: **depends on the graph**: small alpha_X on four_by_four; small alpha_Z on chain; not learned on "
        "eight_by_four.")


def test_measures_and_learners_are_separate_groups(tmp_path):
    # The same graph matched by gzip (nested folder, measure read from config.json), with the opposite answer.
    workdir = make_fake_workdir(str(tmp_path), {key: v for key, v in EXCESS.items() if key[0] == "four_by_four"})
    swapped = {("four_by_four", "small_alpha_x"): EXCESS["four_by_four", "small_alpha_z"],
               ("four_by_four", "small_alpha_z"): EXCESS["four_by_four", "small_alpha_x"]}
    make_fake_workdir(workdir, swapped, prefix="gzip", measure="gzip")
    comparisons = report.compare(load_runs(workdir), SETTINGS)
    assert [c.group.measure for c in comparisons] == ["entropy", "gzip"]
    assert [c.outcome("final") for c in comparisons] == ["small_alpha_x", "small_alpha_z"]
    assert report.dependence(comparisons, "measure").startswith(
        "- Ends lower: **depends on the matching measure**: small alpha_X on entropy; small alpha_Z on gzip.")
    assert "Only one learner was run (transformer)" in report.dependence(comparisons, "learner")


def test_settings_come_from_the_config():
    with pytest.raises(ValueError, match="config.report lacks confidence, reach_excess, .*max_excess_fraction"):
        report.Settings.from_config({"significance_level": 0.05})
    assert SETTINGS.max_excess_fraction == experiment1.get_config().report.max_excess_fraction


def test_nothing_compared_is_not_called_not_significant(tmp_path):
    excess = {key: values for key, values in EXCESS.items() if key[0] in ("eight_by_four", "four_by_four")}
    excess[("four_by_four", "small_alpha_z")] = [0.5, 0.6, 0.7]  # 25-35% of the entropy: not learned
    comparisons = report.compare(load_runs(make_fake_workdir(str(tmp_path), excess)), SETTINGS)
    assert [c.outcome("final") for c in comparisons] == ["not learned", "not learned"]
    assert report.dependence(comparisons, "graph") == (
        "- Ends lower: no graph was compared (not learned on eight_by_four, four_by_four): dependence not tested.\n"
        "- Learns faster: no graph was compared (not learned on eight_by_four, four_by_four): dependence not tested.")


def test_learners_of_one_size_are_compared_and_the_floor_sits_beside_them(tmp_path):
    # runs/<measure>/ layout: the transformer, a mamba of the same size (its cell record names the size) with the
    # opposite answer, and the n-gram floor of each seed folder.
    workdir = str(tmp_path)
    four = {key: values for key, values in EXCESS.items() if key[0] == "four_by_four"}
    make_fake_workdir(workdir, four, prefix="entropy")
    for (graph, side), values in four.items():
        for seed in range(len(values)):
            seed_dir = os.path.join(workdir, "runs", "entropy", graph, side, f"seed{seed}")
            other = four[graph, "small_alpha_z" if side == "small_alpha_x" else "small_alpha_x"][seed]
            write_run(os.path.join(seed_dir, "tiny_mamba"), graph, other, seed)
            with open(os.path.join(seed_dir, "tiny_mamba", "config.json"), "w") as file:
                json.dump({"experiment1": {"cell": {"measure": "entropy", "learner": "mamba", "size": "tiny"}}}, file)
            with open(os.path.join(seed_dir, "ngram.json"), "w") as file:
                json.dump({"order": 3, "nats_per_token": ENTROPY + 0.5 + 0.1 * seed}, file)
    comparisons = report.compare(load_runs(workdir), SETTINGS)
    assert [c.group for c in comparisons] == [("four_by_four", "entropy", "mamba", "tiny"),
                                              ("four_by_four", "entropy", "transformer", "tiny")]
    assert report.dependence(comparisons, "learner").startswith(
        "- Ends lower: **depends on the learner**: small alpha_X on transformer; small alpha_Z on mamba.")
    text = open(report.write_report(workdir, SETTINGS)).read()
    # Floor excess: mean of 0.5, 0.6, 0.7 over the three seeds, beside each learner's mean final excess.
    assert "| four_by_four | entropy | transformer | tiny | small_alpha_x | 0.1100 | 0.6000 | 3 | 3 of 3 |" in text
    assert "| four_by_four | entropy | mamba | tiny | small_alpha_x | 0.2100 | 0.6000 | 3 | 3 of 3 |" in text


def test_a_run_linked_into_another_measure_folder_counts_for_that_measure(tmp_path):
    workdir = make_fake_workdir(str(tmp_path), {key: v for key, v in EXCESS.items() if key[0] == "four_by_four"},
                                prefix="entropy", measure="entropy")
    for side in ("small_alpha_x", "small_alpha_z"):
        for seed in range(3):
            link = os.path.join(workdir, "runs", "gzip", "four_by_four", side, f"seed{seed}", "tiny")
            os.makedirs(os.path.dirname(link))
            os.symlink(os.path.join(workdir, "runs", "entropy", "four_by_four", side, f"seed{seed}", "tiny"), link)
    comparisons = report.compare(load_runs(workdir), SETTINGS)
    assert [c.group.measure for c in comparisons] == ["entropy", "gzip"]
    assert [c.outcome("final") for c in comparisons] == ["small_alpha_x", "small_alpha_x"]
