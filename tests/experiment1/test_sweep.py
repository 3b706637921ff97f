"""The Experiment 1 sweep: plan, calibration cache, skip finished runs, resume interrupted ones, Slurm via submitit.

Training and calibration are replaced by fakes that write what the real ones write (the run-directory
contract), so these tests check the sweep's bookkeeping, not the numbers.
"""

import json
import os

import pytest

import gssm_jax.experiment1 as exp1
from gssm_jax.configs import experiment1
from gssm_jax.experiment1 import calibration, sweep
from gssm_jax.gssm.graph import GraphSpec


def small_config():
    config = experiment1.get_config("size=cpu")
    config.experiment1.graphs = ("four_by_four", "chain")
    config.experiment1.seeds = (0, 1)
    config.experiment1.models = {
        "a": {"kind": "transformer", "size": "a", "width": 16, "depth": 1, "heads": 2, "transformer_width": 16},
        "b": {"kind": "transformer", "size": "b", "width": 32, "depth": 2, "heads": 4, "transformer_width": 32}}
    return config


class Fakes:
    """Stand-ins for `compute_calibration` and `train_run` that record their calls."""

    def __init__(self, free_alpha: float = 0.2, fail: str | None = None):
        self.free_alpha, self.fail = free_alpha, fail
        self.calibrated: list[str] = []
        self.trained: list[str] = []

    def compute_calibration(self, settings, log=print, measurer=None):
        self.calibrated.append(settings["graph"])
        small = settings["small"]
        # Like the real calibration, the small_alpha_x side lands on the same alphas under every measure.
        z_side = self.free_alpha / (4 if settings["measure"] == "entropy" else 5)
        return {"settings": settings, "target": 3.0, "target_stderr": 0.01, "unit": "bits/token",
                "alphas": {"small_alpha_x": {"alpha_X": small, "alpha_Z": self.free_alpha},
                           "small_alpha_z": {"alpha_Z": small, "alpha_X": z_side}},
                "difficulty": {"small_alpha_x": {"mean": 3.0, "stderr": 0.01},
                               "small_alpha_z": {"mean": 3.0, "stderr": 0.01}}}

    def train_run(self, run):
        relative = os.path.relpath(run.workdir, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.dirname(os.path.dirname(run.workdir)))))))
        self.trained.append(relative)
        if self.fail and self.fail in run.workdir:
            raise RuntimeError("diverged")
        os.makedirs(run.workdir, exist_ok=True)
        with open(os.path.join(run.workdir, "config.json"), "w") as file:
            json.dump({**run.to_dict(), "workdir": run.workdir}, file)
        result = {"eval/excess_loss_nats_per_token": 0.1}
        with open(os.path.join(run.workdir, "result.json"), "w") as file:
            json.dump(result, file)
        return result


def fake_floor(run, seed_dir):
    os.makedirs(seed_dir, exist_ok=True)
    record = {"order": 2, "nats_per_token": 1.0}
    with open(os.path.join(seed_dir, "ngram.json"), "w") as file:
        json.dump(record, file)
    return record


@pytest.fixture
def fakes(monkeypatch):
    fakes = Fakes()
    monkeypatch.setattr(calibration, "compute_calibration", fakes.compute_calibration)
    monkeypatch.setattr(sweep, "train_run", fakes.train_run)
    monkeypatch.setattr(sweep, "ngram_floor", fake_floor)
    return fakes


def training_outcomes(outcomes):
    """The training outcomes (the n-gram floors are tasks too)."""
    return {name: outcome for name, outcome in outcomes.items() if not name.startswith("n-gram floor")}


def test_plan_covers_graphs_sides_seeds_and_models():
    cells = exp1.plan(small_config())
    assert len(cells) == 2 * 2 * 2 * 2
    assert cells[0] == exp1.Cell("entropy", "four_by_four", "small_alpha_x", 0, "a")
    assert cells[-1].run_dir("/w") == "/w/runs/entropy/chain/small_alpha_z/seed1/b"
    assert len(set(cells)) == len(cells)


def test_run_config_sets_the_cell_graph_seeds_and_model():
    config = small_config()
    cell = exp1.Cell("entropy", "chain", "small_alpha_z", 1, "b")
    run = exp1.run_config(config, cell, {"alpha_X": 0.05, "alpha_Z": 1e-3}, "/w")
    graph = GraphSpec.from_config(run.graph)
    assert graph.node("X").alpha == 0.05 and graph.node("Z2").alpha == 1e-3 and graph.node("X").parents == ("Z2", "Z3")
    assert (run.seed, run.model.init_seed, run.data.data_seed) == (1, 1, config.data.data_seed + 1)
    assert (run.model.width, run.model.depth, run.model.heads) == (32, 2, 4)
    assert run.data.length == config.experiment1.lengths["chain"]
    assert run.workdir == "/w/runs/entropy/chain/small_alpha_z/seed1/b"
    assert run.experiment1.cell.to_dict() == {"measure": "entropy", "graph": "chain", "side": "small_alpha_z",
                                              "seed": 1, "model": "b", "size": "b", "learner": "transformer"}
    assert config.model.width == 64 and config.seed == 0  # the sweep config is not modified


def test_sweep_trains_every_run_once_and_caches_calibration(tmp_path, fakes):
    workdir, config = str(tmp_path), small_config()
    outcomes = sweep.run_experiment(config, workdir, log=lambda line: None)
    assert len(training_outcomes(outcomes)) == len(fakes.trained) == 16
    assert sorted(fakes.calibrated) == ["chain", "four_by_four"]
    assert len(outcomes) == 16 + 8  # one n-gram floor per (graph, side, seed), shared by the models
    assert os.path.exists(os.path.join(workdir, "runs", "entropy", "chain", "small_alpha_z", "seed1", "ngram.json"))
    assert os.path.exists(os.path.join(workdir, "calibration", "chain.entropy.json"))
    with open(os.path.join(workdir, "runs", "entropy", "four_by_four", "small_alpha_z", "seed1", "a",
                           "config.json")) as file:
        trained = GraphSpec.from_config(json.load(file)["graph"])
    assert trained.node("X").alpha == pytest.approx(0.05) and trained.node("Z1").alpha == 1e-3

    fakes.trained.clear()
    assert sweep.run_experiment(config, workdir, log=lambda line: None) == {}
    assert fakes.trained == [] and len(fakes.calibrated) == 2  # nothing retrained, calibration from the cache


def test_interrupted_run_is_relaunched_and_finished_ones_are_skipped(tmp_path, fakes):
    workdir, config = str(tmp_path), small_config()
    sweep.run_experiment(config, workdir, log=lambda line: None)
    interrupted = os.path.join(workdir, "runs", "entropy", "chain", "small_alpha_x", "seed1", "b")
    os.remove(os.path.join(interrupted, "result.json"))  # as if killed before the end (config.json stays)
    fakes.trained.clear()
    sweep.run_experiment(config, workdir, log=lambda line: None)
    assert fakes.trained == ["runs/entropy/chain/small_alpha_x/seed1/b"]


def test_a_run_trained_with_other_alphas_is_an_error(tmp_path, fakes):
    workdir, config = str(tmp_path), small_config()
    sweep.run_experiment(config, workdir, log=lambda line: None)
    os.remove(os.path.join(workdir, "runs", "entropy", "chain", "small_alpha_x", "seed0", "a", "result.json"))
    config.calibration.tolerance.entropy = 0.001  # new calibration settings -> recalibrated with another free alpha
    fakes.free_alpha = 0.3
    stale = r"runs/entropy/four_by_four/small_alpha_x/seed0/a was trained with other graph"
    with pytest.raises(exp1.SweepError, match=stale):
        sweep.run_experiment(config, workdir, log=lambda line: None)


def test_a_failed_run_does_not_stop_the_others(tmp_path, monkeypatch):
    fakes = Fakes(fail="chain/small_alpha_z/seed0/a")
    monkeypatch.setattr(calibration, "compute_calibration", fakes.compute_calibration)
    monkeypatch.setattr(sweep, "train_run", fakes.train_run)
    monkeypatch.setattr(sweep, "ngram_floor", fake_floor)
    lines = []
    outcomes = training_outcomes(sweep.run_experiment(small_config(), str(tmp_path), log=lines.append))
    failed = [name for name, outcome in outcomes.items() if isinstance(outcome, Exception)]
    assert failed == ["entropy/chain/small_alpha_z/seed0/a"] and len(outcomes) == 16
    assert any("FAILED: RuntimeError: diverged" in line for line in lines)
    assert any(line.startswith("[16/16]") for line in lines)


def test_match_both_trains_each_measure_and_shares_runs_with_the_same_alphas(tmp_path, fakes):
    workdir, config = str(tmp_path), small_config()
    config.calibration.measures = ("entropy", "gzip")
    outcomes = training_outcomes(sweep.run_experiment(config, workdir, log=lambda line: None))
    # small_alpha_x has the same alphas under both measures: trained once, linked from gzip's folder.
    assert len(outcomes) == 16 + 8 and sorted(fakes.calibrated) == ["chain", "chain", "four_by_four", "four_by_four"]
    assert all(name.startswith("entropy/") or "small_alpha_z" in name for name in outcomes)
    shared = os.path.join(workdir, "runs", "gzip", "chain", "small_alpha_x", "seed1")
    assert os.path.islink(os.path.join(shared, "b")) and os.path.islink(os.path.join(shared, "ngram.json"))
    assert os.path.realpath(os.path.join(shared, "b")) == os.path.realpath(
        os.path.join(workdir, "runs", "entropy", "chain", "small_alpha_x", "seed1", "b"))
    assert os.path.exists(os.path.join(shared, "b", "result.json"))
    with open(os.path.join(workdir, "runs", "gzip", "chain", "small_alpha_z", "seed1", "b", "config.json")) as file:
        assert GraphSpec.from_config(json.load(file)["graph"]).node("X").alpha == pytest.approx(0.04)
    fakes.trained.clear()
    assert sweep.run_experiment(config, workdir, log=lambda line: None) == {} and fakes.trained == []


def test_slurm_parameters_from_the_flags():
    options = exp1.SlurmOptions(partition="gpu", time_minutes=90, gpus_per_node=4, cpus_per_task=16, max_parallel=8)
    assert exp1.slurm_parameters(options) == {
        "name": "experiment1", "timeout_min": 90, "nodes": 1, "tasks_per_node": 1, "gpus_per_node": 4,
        "cpus_per_task": 16, "slurm_array_parallelism": 8, "slurm_partition": "gpu"}
    with pytest.raises(ValueError, match="time_minutes > 0"):
        exp1.slurm_parameters(exp1.SlurmOptions(time_minutes=0))


def test_slurm_executor_writes_an_array_job_with_partition_time_and_gpus(tmp_path, monkeypatch):
    import submitit.slurm.slurm as submitit_slurm

    real_which = submitit_slurm.shutil.which
    monkeypatch.setattr(submitit_slurm.shutil, "which", lambda name: "/usr/bin/srun" if name == "srun" else
                        real_which(name))  # pretend to be on a login node; nothing is submitted
    options = exp1.SlurmOptions(partition="gpu", time_minutes=90, gpus_per_node=4, max_parallel=8)
    executor = exp1.make_executor(str(tmp_path), options)
    script = submitit_slurm._make_sbatch_string(command="python -m x", folder=str(tmp_path), map_count=16,
                                                **executor._executor.parameters)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --array=0-15%8", "#SBATCH --ntasks-per-node=1", "#SBATCH --job-name=experiment1"):
        assert line in script


def test_no_cluster_is_one_clear_error(tmp_path, monkeypatch):
    import submitit.slurm.slurm as submitit_slurm

    monkeypatch.setattr(submitit_slurm.shutil, "which", lambda name: None)
    with pytest.raises(exp1.SweepError, match="cannot submit to 'slurm'.*drop --launcher=slurm"):
        exp1.make_executor(str(tmp_path), exp1.SlurmOptions())


def test_slurm_path_runs_the_same_sweep_through_submitit_debug_executor(tmp_path, fakes):
    workdir, config = str(tmp_path), small_config()
    options = exp1.SlurmOptions(partition="gpu", gpus_per_node=2, cluster="debug", poll_seconds=0.01)
    outcomes = training_outcomes(sweep.run_experiment(config, workdir, slurm=options, log=lambda line: None))
    assert len(fakes.trained) == 16 and all(outcome == {"eval/excess_loss_nats_per_token": 0.1}
                                            for outcome in outcomes.values())
    assert os.path.isdir(os.path.join(workdir, "slurm", "training"))
    fakes.trained.clear()
    assert sweep.run_experiment(config, workdir, slurm=options, log=lambda line: None) == {}


def test_requeueing_task_resubmits_itself():
    task = exp1.RequeueingTask("x", max, (1, 2))
    assert task() == 2
    delayed = task.checkpoint()
    assert delayed.function is task and delayed.args == ()
