"""The experiment1 config's argument parsing and the gssm-experiment1 command line."""

import os
import subprocess
import sys

import pytest

from gssm_jax.configs import experiment1
from gssm_jax.experiment1 import learners
from gssm_jax.gssm.families import FAMILIES
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.learners import registry
from gssm_jax.learners.registry import KINDS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_default_is_the_whole_cpu_experiment():
    config = experiment1.get_config()
    sweep = config.experiment1
    assert sweep.graphs == ("four_by_four", "eight_by_four", "chain")
    assert sweep.sides == ("small_alpha_x", "small_alpha_z")
    assert len(sweep.seeds) >= 5 and len(sweep.models) == 1
    assert config.calibration.measures == ("entropy",) and config.calibration.seeds == sweep.seeds
    assert config.calibration.graphs == sweep.graphs
    # The training fields are the first run: four_by_four, small alpha_X at the family's reference alpha_Z.
    graph = GraphSpec.from_config(config.graph)
    assert graph.node("X").alpha == 1e-3 and graph.node("Z1").alpha == FAMILIES["four_by_four"].reference[1]
    assert config.data.length == sweep.lengths["four_by_four"] <= 128


def test_paper_size_uses_the_seed_scales():
    config = experiment1.get_config("size=paper,match=gzip")
    sweep = config.experiment1
    assert sweep.graphs == ("four_by_four", "eight_by_four", "chain")
    assert sweep.lengths["four_by_four"] == 2048 and sweep.lengths["eight_by_four"] == 4096
    assert len(sweep.seeds) >= 5 and config.train.num_steps >= 1000
    assert max(model["width"] for model in sweep.models.values()) == 128
    assert config.calibration.measures == ("gzip",)
    assert config.calibration.tolerance.gzip == experiment1.TOLERANCE["gzip"]


def test_medium_size_has_long_sequences_and_a_larger_model():
    cpu, medium = experiment1.get_config("size=cpu"), experiment1.get_config("size=medium")
    assert min(medium.experiment1.lengths.values()) >= 256 and len(medium.experiment1.seeds) >= 5
    assert medium.model.width * medium.model.depth > cpu.model.width * cpu.model.depth


def test_learners_get_one_entry_per_size_and_kind():
    config = experiment1.get_config("size=paper,learners=transformer+mamba")
    models = config.experiment1.models
    assert sorted(models) == ["base", "base_mamba", "small", "small_mamba"]
    assert models.base_mamba.kind == "mamba" and models.base_mamba.size == "base" and models.base_mamba.width is None
    assert models.base_mamba.transformer_width == models.base.width == 128
    assert len(experiment1.get_config("learners=all").experiment1.models) == 6
    assert experiment1.get_config("learners=lstm").model.kind == "lstm"  # the single run is the first learner


def test_readme_parameter_table_is_the_matched_widths():
    # Every learner within registry.PARAMETER_TOLERANCE of the transformer of its size, on both vocabularies.
    config = experiment1.get_config()
    for row in learners.parameter_table(experiment1.MODELS["tiny"], KINDS, config.model, (32, 64)):
        target = registry.parameter_count("transformer", row["vocab_size"],
                                          {**config.model, **experiment1.MODELS["tiny"]["tiny"]})
        assert abs(row["parameters"] / target - 1) <= registry.PARAMETER_TOLERANCE, row
    with open(os.path.join(REPO, "docs", "experiment1.md")) as file:
        readme = file.read()
    table = learners.parameter_markdown(experiment1.MODELS, KINDS, config.model)
    assert table in readme, f"regenerate the README's table of parameters per learner:\n{table}"


def test_match_both_calibrates_both_measures():
    config = experiment1.get_config("size=tiny,match=both")
    assert config.calibration.measures == ("entropy", "gzip")


def test_graph_and_side_restrict_the_sweep_and_set_the_single_run():
    config = experiment1.get_config("graph=chain,side=small_alpha_z,free_alpha=0.05")
    assert config.experiment1.graphs == ("chain",) and config.experiment1.sides == ("small_alpha_z",)
    graph = GraphSpec.from_config(config.graph)
    assert graph.node("X").alpha == 0.05 and graph.node("Z3").alpha == 1e-3 and "Z3" in graph.node("X").parents


@pytest.mark.parametrize("arg, message", [
    ("graph=grid", "graph='grid': valid values are all, four_by_four, eight_by_four, chain"),
    ("side=left", "side='left': valid values are both, small_alpha_x, small_alpha_z"),
    ("match=bz2", "match='bz2': valid values are entropy, gzip, both"),
    ("size=huge", "size='huge': valid values are tiny, cpu, medium, gpu, paper"),
    ("learners=gpt", "learners='gpt': give all or kinds joined by \\+ from transformer, mamba"),
    ("free_alpha=0", "free_alpha=0.0: must be a Dirichlet concentration > 0"),
    ("free_alpha=x", "free_alpha='x': expected a float"),
    ("seeds=4", "expected key=value with key in graph, side, match, size, learners, free_alpha"),
])
def test_bad_arguments_name_the_valid_values(arg, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        experiment1.get_config(arg)


def run_cli(*flags):
    return subprocess.run([sys.executable, "-m", "gssm_jax.cli.experiment1", *flags], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_cli_bad_config_argument_is_one_line():
    completed = run_cli("--config=configs/experiment1.py:graph=grid", "--workdir=/tmp/unused")
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "config argument graph='grid': valid values are all, four_by_four, eight_by_four, chain" in lines[0]


def test_cli_report_only_rewrites_the_report(tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiment1"))
    from test_report import make_fake_workdir

    workdir = make_fake_workdir(str(tmp_path))
    completed = run_cli("--config=configs/experiment1.py", f"--workdir={workdir}", "--report_only")
    assert completed.returncode == 0, completed.stderr
    assert "**four_by_four** (matched by entropy; transformer `tiny`; 3 seed pairs): **Ends lower: small alpha_X" \
        in completed.stdout
    assert os.path.exists(os.path.join(workdir, "report.md"))


@pytest.mark.parametrize("arg", ["size=cpu", "size=medium", "size=paper"])
def test_every_run_evaluates_often_enough_for_curves_and_the_convergence_check(arg):
    config = experiment1.get_config(arg)
    for num_steps in (config.train.num_steps, 1000, 37):  # eval_every follows an overridden num_steps
        config.train.num_steps = num_steps
        every = config.train.eval_every
        evals = sorted({*range(every, num_steps + 1, every), num_steps})  # the loop also evaluates the last step
        assert len(evals) >= 10, (num_steps, every)
        window = [step for step in evals if step >= (1 - config.report.convergence_window) * num_steps]
        assert len(window) >= 5, (num_steps, every)
    assert "eval_every" in config.to_json()  # the reference resolves when the sweep copies the config
