"""The Experiment 1 sweep: plan, calibration cache, skip finished runs, resume interrupted ones, Slurm via submitit.

Training and calibration are replaced by fakes that write what the real ones write (the run-directory
contract), so these tests check the sweep's bookkeeping, not the numbers.
"""

import dataclasses
import json
import math
import os

import pytest

import gssm_jax.experiment1 as exp1
from gssm_jax.configs import experiment1
from gssm_jax.errors import UserError
from gssm_jax.experiment1 import calibration, ensembles, floors, sweep
from gssm_jax.experiment1.launchers import RunOutcomes, Task, run_local, worker_pool
from gssm_jax.gssm.graph import GraphSpec


def small_config():
    config = experiment1.get_config("size=cpu")
    config.experiment1.graphs = ("four_by_four", "chain")
    config.experiment1.seeds = (0, 1)
    config.experiment1.learning_rates = (2.5e-3, 5e-3, 1e-2)
    config.experiment1.ensemble = "8"
    config.experiment1.workers = "1"
    config.experiment1.models = {
        "a": {"kind": "transformer", "size": "a", "width": 16, "depth": 1, "heads": 2, "transformer_width": 16},
        "b": {"kind": "transformer", "size": "b", "width": 32, "depth": 2, "heads": 4, "transformer_width": 32}}
    return config


class Fakes:
    """Stand-ins for `compute_calibration` and the ensemble trainer that record their calls.

    The fake calibration matches every seed (but `unmatched`) on a per-seed free alpha; the fake trainer writes
    what a run writes (the run-directory contract) with a validation loss lowest at `best_rate`.
    """

    def __init__(self, free_alpha: float = 0.2, fail: str | None = None, unmatched: int | None = None,
                 best_rate: float = 5e-3):
        self.free_alpha, self.fail, self.unmatched, self.best_rate = free_alpha, fail, unmatched, best_rate
        self.calibrated: list[str] = []
        self.trained: list[str] = []
        self.ensembles: list[list[str]] = []

    def compute_calibration(self, settings, log=print, measurer=None):
        self.calibrated.append(settings["graph"])
        small = settings["small"]
        pairs = {}
        for seed in settings["seeds"]:
            # Like the real calibration, each seed has its own free alphas; gzip's differ from entropy's.
            free = self.free_alpha * (1 + seed / 10) / (1 if settings["measure"] == "entropy" else 2)
            pairs[str(seed)] = {"small_alpha_x": {"alpha_X": small, "alpha_Z": free, "difficulty": 3.0},
                                "small_alpha_z": {"alpha_Z": small, "alpha_X": free / 4, "difficulty": 3.0},
                                "mismatch": 0.0, "matched": seed != self.unmatched}
        return {"settings": settings, "target": 3.0, "unit": "nats/token", "pairs": pairs}

    def train_ensemble(self, runs):
        names = [os.path.relpath(run.workdir, self.workdir) for run in runs]
        self.ensembles.append(names)
        outcomes = RunOutcomes()
        for run, name in zip(runs, names, strict=True):
            self.trained.append(name)
            if self.fail and self.fail in run.workdir:
                outcomes[run.workdir] = RuntimeError("diverged")
                continue
            os.makedirs(run.workdir, exist_ok=True)
            with open(os.path.join(run.workdir, "config.json"), "w") as file:
                json.dump({**run.to_dict(), "workdir": run.workdir}, file)
            rate = run.optimizer.learning_rate
            result = {"eval/excess_loss_nats_per_token": 0.1, "learning_rate": rate,
                      "eval/validation_loss_nats_per_token": 1.0 + abs(math.log(rate / self.best_rate))}
            with open(os.path.join(run.workdir, "result.json"), "w") as file:
                json.dump(result, file)
            outcomes[run.workdir] = result
        return outcomes


def fake_floor(run, seed_dir):
    os.makedirs(seed_dir, exist_ok=True)
    record = {key: 1 for key in floors.RECORD_KEYS}
    with open(os.path.join(seed_dir, "ngram.json"), "w") as file:
        json.dump(record, file)
    return record


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    fakes = Fakes()
    install(monkeypatch, fakes, tmp_path)
    return fakes


def install(monkeypatch, fakes, tmp_path):
    fakes.workdir = str(tmp_path)
    monkeypatch.setattr(calibration, "compute_calibration", fakes.compute_calibration)
    monkeypatch.setattr(sweep, "train_ensemble", fakes.train_ensemble)
    monkeypatch.setattr(sweep, "ngram_floor", fake_floor)


def runs_of(outcomes):
    """The training outcomes, by run directory (the calibrations and n-gram floors are tasks too)."""
    return {name: outcome for name, outcome in outcomes.items() if name.startswith("/")}


def test_plan_covers_graphs_sides_seeds_and_models():
    cells = exp1.plan_cells(small_config())
    assert len(cells) == 2 * 2 * 2 * 2
    assert cells[0] == exp1.Cell("entropy", "four_by_four", "small_alpha_x", 0, "a")
    assert cells[-1].run_dir("/w") == "/w/runs/entropy/chain/small_alpha_z/seed1/b"
    assert len(set(cells)) == len(cells)
    tuned = exp1.Cell("entropy", "chain", "small_alpha_z", 1, "b", learning_rate=0.01)
    assert tuned.run_dir("/w") == "/w/tuning/entropy/chain/small_alpha_z/seed1/b/lr0.01"
    assert tuned.main() == cells[-1] and tuned.program == cells[-1].program == ("chain", "b")


def test_run_config_sets_the_cell_graph_seeds_model_and_rate():
    config = small_config()
    cell = exp1.Cell("entropy", "chain", "small_alpha_z", 1, "b")
    run = exp1.run_config(config, cell, {"alpha_X": 0.05, "alpha_Z": 1e-3}, "/w", learning_rate=0.02)
    graph = GraphSpec.from_config(run.graph)
    assert graph.node("X").alpha == 0.05 and graph.node("Z2").alpha == 1e-3 and graph.node("X").parents == ("Z2", "Z3")
    assert (run.seed, run.model.init_seed, run.data.data_seed) == (1, 1, config.data.data_seed + 1)
    assert (run.model.width, run.model.depth, run.model.heads) == (32, 2, 4)
    assert run.data.length == config.experiment1.lengths["chain"] and run.optimizer.learning_rate == 0.02
    assert run.workdir == "/w/runs/entropy/chain/small_alpha_z/seed1/b"
    assert run.experiment1.cell.to_dict() == {"measure": "entropy", "graph": "chain", "side": "small_alpha_z",
                                              "seed": 1, "model": "b", "size": "b", "learner": "transformer"}
    assert config.model.width == 64 and config.seed == 0  # the sweep config is not modified
    tuned = dataclasses.replace(cell, learning_rate=0.01)
    assert exp1.run_config(config, tuned, {"alpha_X": 0.05, "alpha_Z": 1e-3}, "/w").optimizer.learning_rate == 0.01


def test_sweep_tunes_the_rate_then_trains_every_run_once(tmp_path, fakes):
    workdir, config = str(tmp_path), small_config()
    outcomes = sweep.run_experiment(config, workdir, log=lambda line: None)
    # Tuning: 3 rates x 2 sides x 1 tuning seed x 2 graphs x 2 models; main runs: 2 graphs x 2 sides x 2 seeds
    # x 2 models, of which the 8 of seed 0 are the tuning runs at the chosen rate.
    tuning_runs, main_runs = 3 * 2 * 2 * 2, 16 - 8
    assert len(fakes.trained) == len(runs_of(outcomes)) == tuning_runs + main_runs
    assert sorted(fakes.calibrated) == ["chain", "four_by_four"]
    with open(os.path.join(workdir, "learning_rates.json")) as file:
        chosen = json.load(file)
    assert sorted(chosen) == ["entropy/chain/a", "entropy/chain/b", "entropy/four_by_four/a", "entropy/four_by_four/b"]
    assert all(record["chosen"] == 5e-3 and record["grid"] == [2.5e-3, 5e-3, 1e-2] and record["seeds"] == [0]
               for record in chosen.values())
    seed0 = os.path.join(workdir, "runs", "entropy", "chain", "small_alpha_z", "seed0", "b")
    assert os.path.islink(seed0) and os.path.realpath(seed0) == os.path.realpath(
        os.path.join(workdir, "tuning", "entropy", "chain", "small_alpha_z", "seed0", "b", "lr0.005"))
    with open(os.path.join(workdir, "runs", "entropy", "four_by_four", "small_alpha_z", "seed1", "a",
                           "config.json")) as file:
        trained = json.load(file)
    graph = GraphSpec.from_config(trained["graph"])
    assert graph.node("X").alpha == pytest.approx(0.2 * 1.1 / 4) and graph.node("Z1").alpha == 1e-3
    assert trained["optimizer"]["learning_rate"] == 5e-3
    # One floor per seed folder, shared by the models.
    floors = [name for name in outcomes if name.startswith("n-gram floor")]
    assert len(floors) == 8 and os.path.exists(os.path.join(os.path.dirname(seed0), "ngram.json"))
    # Ensembles: one per program (graph, model) and stage, mixing sides, seeds and rates; CPU "auto" trains one
    # run per program here, so the test sets a number.
    fakes.trained.clear()
    assert sweep.run_experiment(config, workdir, log=lambda line: None) == {}
    assert fakes.trained == [] and len(fakes.calibrated) == 2  # nothing retrained, calibration from the cache


def test_ensembles_group_one_program_and_respect_the_limit(tmp_path, fakes):
    config = small_config()
    config.experiment1.ensemble = "4"
    sweep.run_experiment(config, str(tmp_path), log=lambda line: None)
    assert all(len(members) <= 4 for members in fakes.ensembles)
    for members in fakes.ensembles:
        programs = {(name.split("/")[2], name.split("/")[5]) for name in members}
        assert len(programs) == 1, members
    tuning_sizes = sorted(len(members) for members in fakes.ensembles if members[0].startswith("tuning"))
    assert tuning_sizes == [3, 3, 3, 3, 3, 3, 3, 3]  # 6 runs per program split into two nearly equal halves


def test_off_trains_one_run_per_ensemble(tmp_path, fakes):
    config = small_config()
    config.experiment1.ensemble = "off"
    sweep.run_experiment(config, str(tmp_path), log=lambda line: None)
    assert all(len(members) == 1 for members in fakes.ensembles)


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
    os.remove(os.path.join(workdir, "runs", "entropy", "chain", "small_alpha_x", "seed1", "a", "result.json"))
    config.calibration.tolerance.entropy = 0.001  # new calibration settings -> recalibrated with another free alpha
    fakes.free_alpha = 0.3
    stale = r"runs/entropy/chain/small_alpha_x/seed1/a was trained with other graph"
    with pytest.raises(exp1.SweepError, match=stale):
        sweep.run_experiment(config, workdir, log=lambda line: None)


def test_an_unmatched_pair_is_left_out_and_said(tmp_path, monkeypatch):
    fakes = Fakes(unmatched=1)
    install(monkeypatch, fakes, tmp_path)
    lines = []
    sweep.run_experiment(small_config(), str(tmp_path), log=lines.append)
    assert not any("seed1" in name for name in fakes.trained)
    assert any("entropy/chain/small_alpha_z/seed1/b: left out, the calibration could not match seed 1" in line
               for line in lines)


def test_a_failed_run_does_not_stop_the_others(tmp_path, monkeypatch):
    fakes = Fakes(fail="chain/small_alpha_z/seed1/a")
    install(monkeypatch, fakes, tmp_path)
    lines = []
    outcomes = runs_of(sweep.run_experiment(small_config(), str(tmp_path), log=lines.append))
    failed = [name for name, outcome in outcomes.items() if isinstance(outcome, Exception)]
    assert [os.path.relpath(name, tmp_path) for name in failed] == ["runs/entropy/chain/small_alpha_z/seed1/a"]
    assert len(outcomes) == 24 + 8
    assert any("FAILED: RuntimeError: diverged" in line for line in lines)
    assert any("excess 0.1000 nats/token" in line for line in lines)


def test_a_diverging_rate_counts_as_the_worst(tmp_path, monkeypatch):
    fakes = Fakes(fail="lr0.01", best_rate=1e-2)  # the best rate by the fake's curve diverges
    install(monkeypatch, fakes, tmp_path)
    sweep.run_experiment(small_config(), str(tmp_path), log=lambda line: None)
    with open(os.path.join(tmp_path, "learning_rates.json")) as file:
        record = json.load(file)["entropy/chain/a"]
    assert record["chosen"] == 5e-3 and record["validation_loss_nats_per_token"]["0.01"] is None


def test_match_both_trains_each_measure(tmp_path, fakes):
    workdir, config = str(tmp_path), small_config()
    config.calibration.measures = ("entropy", "gzip")
    outcomes = runs_of(sweep.run_experiment(config, workdir, log=lambda line: None))
    assert sorted(fakes.calibrated) == ["chain", "chain", "four_by_four", "four_by_four"]
    assert len(outcomes) == 2 * (24 + 8)
    with open(os.path.join(workdir, "runs", "gzip", "chain", "small_alpha_z", "seed1", "b", "config.json")) as file:
        assert GraphSpec.from_config(json.load(file)["graph"]).node("X").alpha == pytest.approx(0.2 * 1.1 / 2 / 4)
    fakes.trained.clear()
    assert sweep.run_experiment(config, workdir, log=lambda line: None) == {} and fakes.trained == []


def test_ensemble_limit_halves_until_the_compiled_memory_fits(monkeypatch):
    config = small_config()
    config.experiment1.ensemble = "auto"
    monkeypatch.setattr(ensembles, "_on_cpu", lambda: False)
    asked = []

    def memory(run, members):
        asked.append(members)
        return members * 10 * ensembles.GIB

    config.train.memory_budget_gib = 45.0
    assert ensembles.ensemble_limit(config, config, 16, memory) == 4 and asked == [16, 8, 4]
    monkeypatch.setattr(ensembles, "_on_cpu", lambda: True)
    assert ensembles.ensemble_limit(config, config, 16, memory) == 1
    config.experiment1.ensemble = "6"
    assert ensembles.ensemble_limit(config, config, 16, memory) == 6
    assert ensembles.split(list(range(16)), 6) == [list(range(0, 5)), list(range(5, 11)), list(range(11, 16))]


@pytest.mark.parametrize("field, value", [("ensemble", "many"), ("ensemble", "0"), ("workers", "off")])
def test_bad_ensemble_or_workers_is_one_line(field, value):
    config = small_config()
    config.experiment1[field] = value
    with pytest.raises(UserError, match=f"config.experiment1.{field}={value!r}: give"):
        ensembles.check_settings(config)


def test_worker_processes_give_the_same_outcomes():
    tasks = [Task(f"t{index}", max, (index, 2)) for index in range(4)]
    with worker_pool(2) as pool:
        assert run_local(tasks, lambda line: None, pool) == {f"t{index}": max(index, 2) for index in range(4)}
        assert run_local(tasks[:2], lambda line: None, pool) == {"t0": 2, "t1": 2}  # the pool serves every stage


def test_worker_processes_start_with_huge_pages_unless_the_user_set_the_tunables(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    task = [Task("tunables", os.environ.get, ("GLIBC_TUNABLES",))]
    with worker_pool(2) as pool:
        assert run_local(task, lambda line: None, pool) == {"tunables": "glibc.malloc.hugetlb=1"}
    assert "GLIBC_TUNABLES" not in os.environ  # this process's environment is restored
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0")
    with worker_pool(2) as pool:
        assert run_local(task, lambda line: None, pool) == {"tunables": "glibc.malloc.hugetlb=0"}


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
    outcomes = runs_of(sweep.run_experiment(config, workdir, slurm=options, log=lambda line: None))
    assert len(fakes.trained) == len(outcomes) == 24 + 8
    assert all(outcome["eval/excess_loss_nats_per_token"] == 0.1 for outcome in outcomes.values())
    assert os.path.isdir(os.path.join(workdir, "slurm", "training")) and os.path.isdir(os.path.join(workdir, "slurm",
                                                                                                    "tuning"))
    fakes.trained.clear()
    assert sweep.run_experiment(config, workdir, slurm=options, log=lambda line: None) == {}


def test_requeueing_task_resubmits_itself():
    task = exp1.RequeueingTask("x", max, (1, 2))
    assert task() == 2
    delayed = task.checkpoint()
    assert delayed.function is task and delayed.args == ()
