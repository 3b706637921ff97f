"""The Experiment 1 report from a fake workdir with known numbers: table values, verdicts, plots."""

import json
import math
import os

import numpy as np
import pytest

from gssm_jax.analysis import report

# Final excess loss (nats/token) per graph, side and seed. four_by_four: means 0.11 vs 0.21, sample std 0.01
# on both sides, so Welch's t = -0.1 / sqrt(2 * 0.01^2 / 3) = -12.25 with 4 degrees of freedom, p = 2.6e-4.
# chain: means 0.20 vs 0.25, std 0.1 on both sides: t = -0.61, p = 0.57 (not significant).
EXCESS = {
    ("four_by_four", "small_alpha_x"): [0.10, 0.12, 0.11],
    ("four_by_four", "small_alpha_z"): [0.20, 0.22, 0.21],
    ("chain", "small_alpha_x"): [0.30, 0.10, 0.20],
    ("chain", "small_alpha_z"): [0.25, 0.15, 0.35],
}
ENTROPY = 2.0  # nats/token, every run
LENGTH = 8


def write_run(path: str, excess: float, seed: int, num_evals: int = 3) -> None:
    """A finished run directory in the run-directory contract, with final excess loss `excess`."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "metrics.jsonl"), "w") as file:
        for index in range(1, num_evals + 1):
            record_excess = excess * (num_evals / index)  # decreasing to `excess` at the last eval
            file.write(json.dumps({"step": 10 * index, "tokens_seen": 1000 * index, "elapsed_s": index,
                                   "train/loss_nats_per_token": ENTROPY + record_excess,
                                   "eval/loss_nats_per_token": ENTROPY + record_excess,
                                   "eval/entropy_nats_per_token": ENTROPY,
                                   "eval/excess_loss_nats_per_token": record_excess,
                                   "eval/excess_loss_standard_error": 0.01}) + "\n")
    optimal = np.linspace(2.5, ENTROPY, LENGTH)
    np.savez(os.path.join(path, "per_position.npz"), steps=np.arange(1, num_evals + 1) * 10,
             model_loss=optimal[None] + np.linspace(1.0, excess, num_evals)[:, None], optimal_loss=optimal)
    with open(os.path.join(path, "result.json"), "w") as file:
        json.dump({"final_step": 10 * num_evals, "eval/loss_nats_per_token": ENTROPY + excess,
                   "eval/entropy_nats_per_token": ENTROPY, "eval/excess_loss_nats_per_token": excess,
                   "eval/excess_loss_standard_error": 0.01, "num_parameters": 1234, "tokens_seen": 3000,
                   "wall_time_s": 5.0 + seed}, file)


def make_fake_workdir(workdir: str, excess: dict = EXCESS, model: str = "tiny") -> str:
    """Finished runs with the given final excess losses, one unfinished run and a calibration record."""
    for (graph, side), values in excess.items():
        for seed, value in enumerate(values):
            write_run(os.path.join(workdir, "runs", graph, side, f"seed{seed}", model), value, seed)
    os.makedirs(os.path.join(workdir, "runs", "chain", "small_alpha_x", "seed9", model))  # interrupted
    calibration = {"settings": {"graph": "four_by_four", "measure": "entropy", "seeds": [0, 1, 2], "batch_size": 32,
                                "length": 64, "tolerance": 0.01},
                   "target": 2.9, "target_stderr": 0.02, "unit": "bits/token (exact entropy rate, forward algorithm)",
                   "alphas": {"small_alpha_x": {"alpha_X": 1e-3, "alpha_Z": 0.125},
                              "small_alpha_z": {"alpha_Z": 1e-3, "alpha_X": 0.0567}},
                   "difficulty": {"small_alpha_x": {"mean": 2.9, "stderr": 0.02},
                                  "small_alpha_z": {"mean": 2.905, "stderr": 0.03}}}
    os.makedirs(os.path.join(workdir, "calibration"))
    with open(os.path.join(workdir, "calibration", "four_by_four.entropy.json"), "w") as file:
        json.dump(calibration, file)
    return workdir


def test_comparisons_have_the_known_means_intervals_and_tests(tmp_path):
    comparisons = report.compare(report.load_runs(make_fake_workdir(str(tmp_path))))
    assert [(c.graph, c.model) for c in comparisons] == [("chain", "tiny"), ("four_by_four", "tiny")]
    chain, four = comparisons
    assert four.intervals["small_alpha_x"].mean == pytest.approx(0.11)
    assert four.intervals["small_alpha_z"].mean == pytest.approx(0.21)
    # t_{0.975, 2} = 4.3027 (closed form in tests/test_statistics.py); std 0.01 over 3 seeds.
    assert four.intervals["small_alpha_x"].high - 0.11 == pytest.approx(4.302653 * 0.01 / math.sqrt(3), rel=1e-6)
    assert four.test.dof == pytest.approx(4.0)
    assert four.test.statistic == pytest.approx(-0.1 / math.sqrt(2 * 0.01**2 / 3))
    assert four.significant and four.lower_side == "small_alpha_x"
    assert not chain.significant and chain.lower_side == "small_alpha_x"
    assert chain.test.p_value == pytest.approx(0.5734, abs=1e-4)  # t = -0.6124, 4 dof (closed-form CDF)
    assert four.seeds["small_alpha_x"] == (0, 1, 2)


def test_report_states_the_table_values_and_the_verdicts(tmp_path):
    workdir = make_fake_workdir(str(tmp_path))
    path = report.write_report(workdir, significance_level=0.05)
    text = open(path).read()
    assert "| four_by_four | tiny | 0.1100 [0.0852, 0.1348] | 0.2100 [0.1852, 0.2348] | -0.1000 [-0.1227, -0.0773] " \
           "| 0.000255 | 3 + 3 | small_alpha_x |" in text
    assert "| chain | tiny | 0.2000 [-0.0484, 0.4484] | 0.2500 [0.0016, 0.4984] |" in text
    assert "small_alpha_x (not significant) |" in text
    assert "p = 0.000255 < 0.05, so the difference is significant at the 0.05 level" in text
    assert "p = 0.573 >= 0.05, so the difference is not significant at the 0.05 level" in text
    assert ("small alpha_X (easy to infer) is significantly better on four_by_four; on chain the difference is not "
            "significant (the point estimate points the same way on chain)") in text
    assert "Welch's unequal-variance two-sided t-test at level 0.05" in text
    assert "alpha_X = 0.0567, alpha_Z = 0.001) measures 2.9050 ± 0.0300" in text
    assert "12 finished runs" in text and "1 unfinished" in text and "`runs/chain/small_alpha_x/seed9/tiny`" in text
    for name in ("excess_loss.png", "loss_curves.png", "per_position.png"):
        with open(os.path.join(workdir, name), "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text


def test_opposite_significant_answers_mean_the_answer_depends_on_the_graph(tmp_path):
    excess = dict(EXCESS)
    excess[("chain", "small_alpha_x")] = [0.30, 0.32, 0.31]  # now significantly worse than 0.25 +- ...
    excess[("chain", "small_alpha_z")] = [0.10, 0.12, 0.11]
    comparisons = report.compare(report.load_runs(make_fake_workdir(str(tmp_path), excess)))
    text = report.graph_dependence(comparisons)
    assert text.startswith("**the answer depends on the graph**: small alpha_X is significantly better on "
                           "four_by_four and small alpha_Z on chain.")


def test_no_significant_graph_establishes_nothing(tmp_path):
    excess = {key: values for key, values in EXCESS.items() if key[0] == "chain"}
    comparisons = report.compare(report.load_runs(make_fake_workdir(str(tmp_path), excess)))
    assert "no graph shows a significant difference" in report.graph_dependence(comparisons)
    assert "does not depend" not in report.graph_dependence(comparisons)


def test_the_same_side_significant_everywhere_does_not_depend_on_the_graph(tmp_path):
    excess = dict(EXCESS)
    excess[("chain", "small_alpha_z")] = [0.60, 0.62, 0.61]  # 0.20 +- 0.1 vs 0.61: t = -7.1, p = 0.019
    comparisons = report.compare(report.load_runs(make_fake_workdir(str(tmp_path), excess)))
    assert report.graph_dependence(comparisons).startswith(
        "**the answer does not depend on the graph**: small alpha_X (easy to infer) has significantly lower excess "
        "loss on every graph")
