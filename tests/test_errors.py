"""Every error a user can cause is at most 3 lines, without a traceback, naming the field or file.

The command-line cases run through each entry point's real `run()` (flag parsing, the `error: ...`
wrapper, exit status 2) in one driver process (`tests.cli_driver`: absl flags are process-global, so
each case runs in a forked child); the public-API cases run here. Every check in these tables fires
before anything is compiled, except the memory budget, which needs the compiled step by design.
The resume tests train a tiny run in this process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

import gssm_jax as gj
from gssm_jax.configs.base import get_config
from gssm_jax.errors import MAX_LINES, UserError
from gssm_jax.training import loop, members, run_directory, step
from gssm_jax.training.checkpoints import Checkpoints

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN, DATA, CALIBRATE = "gssm_jax.cli.train", "gssm_jax.cli.generate_data", "gssm_jax.cli.calibrate"
EXPERIMENT1, DATA_SWEEP, DIFFICULTY = "gssm_jax.cli.experiment1", "gssm_jax.cli.data_sweep", "gssm_jax.cli.difficulty"
TINY = "--config=base:size=tiny"


@dataclasses.dataclass(frozen=True)
class Case:
    """A command line (`{tmp}` is the workspace) and the text its error must contain (the field or file)."""

    name: str
    module: str
    arguments: tuple[str, ...]
    names: str


def _train(name: str, *arguments: str, names: str, workdir: str = "{tmp}/runs/" + "{name}") -> Case:
    return Case(name, TRAIN, (TINY, *arguments, f"--workdir={workdir.format(tmp='{tmp}', name=name)}"), names)


CLI_CASES = [
    # gssm-train: flags and the config file
    Case("config_file_missing", TRAIN, ("--config=nosuch.py", "--workdir={tmp}/unused"), "nosuch.py"),
    Case("config_arg_choice", TRAIN, ("--config=base:size=huge", "--workdir={tmp}/unused"), "size='huge'"),
    Case("config_arg_twice", TRAIN, ("--config=base:size=tiny,size=cpu", "--workdir={tmp}/unused"), "size"),
    Case("config_arg_type", TRAIN, ("--config=base:alpha_x=small", "--workdir={tmp}/unused"), "alpha_x"),
    Case("config_arg_nonpositive", TRAIN, ("--config=base:alpha_z=0", "--workdir={tmp}/unused"), "alpha_z"),
    Case("section_typo", TRAIN, (TINY, "--config.modle.width=8", "--workdir={tmp}/unused"), "modle"),
    Case("field_typo", TRAIN, (TINY, "--config.model.widht=8", "--workdir={tmp}/unused"), "widht"),
    Case("field_type", TRAIN, (TINY, "--config.model.width=wide", "--workdir={tmp}/unused"), "config.model.width"),
    Case("unknown_flag", TRAIN, (TINY, "--nosuch=1", "--workdir={tmp}/unused"), "nosuch"),
    Case("positional_argument", TRAIN, (TINY, "extra", "--workdir={tmp}/unused"), "extra"),
    Case("no_workdir", TRAIN, (TINY,), "--workdir"),
    # gssm-train: config fields, checked before anything compiles
    _train("workdir_is_a_file", names="{tmp}/afile", workdir="{tmp}/afile"),
    _train("batch_size_zero", "--config.data.batch_size=0", names="config.data.batch_size"),
    _train("length_zero", "--config.data.length=0", names="config.data.length"),
    _train("eval_sequences_zero", "--config.eval.num_sequences=0", names="config.eval.num_sequences"),
    _train("num_steps_zero", "--config.train.num_steps=0", names="config.train.num_steps"),
    _train("log_every_zero", "--config.train.log_every=0", names="config.train.log_every"),
    _train("heads_zero", "--config.model.heads=0", names="config.model.heads"),
    _train("heads_not_dividing", "--config.model.heads=3", names="config.model.heads"),
    _train("depth_zero", "--config.model.depth=0", names="config.model.depth"),
    _train("init_scale_zero", "--config.model.init_scale=0", names="config.model.init_scale"),
    _train("model_kind", "--config.model.kind=rnn", names="config.model.kind"),
    _train("model_dtype", "--config.model.dtype=float16", names="config.model.dtype"),
    _train("attention", "--config.model.attention=flash", names="flash"),
    _train("schedule", "--config.optimizer.schedule=linear", names="config.optimizer.schedule"),
    _train("warmup_too_long", "--config.optimizer.warmup_steps=1000", names="config.optimizer.warmup_steps"),
    _train("clip_norm", "--config.optimizer.clip_norm=0", names="config.optimizer.clip_norm"),
    _train("data_source", "--config.data.source=disk", names="config.data.source"),
    _train("file_without_path", "--config.data.source=file", names="config.data.path"),
    _train("dataset_missing", "--config.data.source=file", "--config.data.path={tmp}/nosuch",
           names="{tmp}/nosuch/meta.json"),
    _train("dataset_corrupt", "--config.data.source=file", "--config.data.path={tmp}/corrupt",
           names="{tmp}/corrupt/train_00000.npy"),
    _train("dataset_for_another_graph", "--config.data.source=file", "--config.data.path={tmp}/dataset",
           names="graph"),
    _train("allow_changes_unknown", "--config.train.allow_changes=optimizer.lr", names="config.train.allow_changes"),
    _train("resume_changed_learning_rate", "--config.optimizer.learning_rate=0.5", workdir="{tmp}/started",
           names="optimizer.learning_rate"),
    _train("memory_budget", "--config.train.memory_budget_gib=1e-9", names="config.train.memory_budget_gib"),
    # gssm-generate-data
    Case("data_num_train", DATA, ("--config=data:size=tiny", "--config.num_train=0", "--workdir={tmp}/d1"),
         "num_train"),
    Case("data_length", DATA, ("--config=data:size=tiny", "--config.length=0", "--workdir={tmp}/d2"), "length"),
    Case("data_workdir_file", DATA, ("--config=data:size=tiny", "--workdir={tmp}/afile"), "{tmp}/afile"),
    Case("data_family", DATA, ("--config=data:family=ring", "--workdir={tmp}/d3"), "family"),
    Case("data_no_workdir", DATA, ("--config=data:size=tiny",), "workdir"),
    Case("data_other_parameters", DATA, ("--config=data:size=tiny", "--config.seed=7", "--workdir={tmp}/dataset"),
         "seed"),
    # gssm-calibrate
    Case("calibrate_one_seed", CALIBRATE, ("--config=calibrate:graph=chain", "--config.calibration.seeds=(0,)",
                                           "--workdir={tmp}/c"), "config.calibration.seeds"),
    Case("calibrate_measure", CALIBRATE, ("--config=calibrate:graph=chain", "--config.calibration.measures=('nope',)",
                                          "--workdir={tmp}/c"), "config.calibration.measures"),
    Case("calibrate_graph", CALIBRATE, ("--config=calibrate", "--config.calibration.graphs=('ring',)",
                                        "--workdir={tmp}/c"), "config.calibration.graphs"),
    Case("calibrate_grid", CALIBRATE, ("--config=calibrate:graph=chain", "--config.calibration.grid_points=1",
                                       "--workdir={tmp}/c"), "config.calibration.grid_points"),
    Case("calibrate_arg", CALIBRATE, ("--config=calibrate:graph=ring", "--workdir={tmp}/c"), "graph='ring'"),
    # gssm-experiment1
    Case("experiment1_graphs", EXPERIMENT1, ("--config=experiment1:size=tiny", "--config.experiment1.graphs=foo",
                                             "--workdir={tmp}/x"), "config.experiment1.graphs"),
    Case("experiment1_sides", EXPERIMENT1, ("--config=experiment1:size=tiny", "--config.experiment1.sides=('left',)",
                                            "--workdir={tmp}/x"), "config.experiment1.sides"),
    Case("experiment1_grid_points", EXPERIMENT1, ("--config=experiment1:size=tiny",
                                                  "--config.calibration.grid_points=1", "--workdir={tmp}/x"),
         "config.calibration.grid_points"),
    Case("experiment1_batch_size", EXPERIMENT1, ("--config=experiment1:size=tiny", "--config.data.batch_size=0",
                                                 "--workdir={tmp}/x"), "config.data.batch_size"),
    Case("experiment1_report_only_empty", EXPERIMENT1, ("--report_only", "--workdir={tmp}/empty"), "{tmp}/empty"),
    Case("experiment1_launcher", EXPERIMENT1, ("--launcher=pbs", "--workdir={tmp}/x"), "launcher"),
    # gssm-data-sweep
    Case("data_sweep_sizes", DATA_SWEEP, ("--config=data_sweep:size=tiny", "--config.data_sweep.num_sequences=(0,)",
                                          "--workdir={tmp}/s"), "config.data_sweep.num_sequences"),
    Case("data_sweep_heads", DATA_SWEEP, ("--config=data_sweep:size=tiny", "--config.model.heads=0",
                                          "--workdir={tmp}/s"), "config.model.heads"),
    Case("data_sweep_no_workdir", DATA_SWEEP, ("--config=data_sweep:size=tiny",), "--workdir"),
    # gssm-difficulty
    Case("difficulty_graphs", DIFFICULTY, ("--graphs=ring", "--workdir={tmp}/f"), "--graphs"),
    Case("difficulty_seeds", DIFFICULTY, ("--seeds=1", "--workdir={tmp}/f"), "seeds"),
    Case("difficulty_no_workdir", DIFFICULTY, ("--graphs=chain",), "--workdir"),
]


def _workspace(tmp: str) -> None:
    """The files the cases point at: a file, an empty directory, a dataset, a corrupt copy, a started run."""
    with open(os.path.join(tmp, "afile"), "w") as file:
        file.write("not a directory\n")
    os.makedirs(os.path.join(tmp, "empty"))
    data = gj.load_config("data:size=tiny")
    gj.generate_dataset(os.path.join(tmp, "dataset"), data.graph.to_dict(), seed=data.seed, data_seed=data.data_seed,
                        num_train=32, num_test=data.num_test, length=data.length, shard_size=data.shard_size)
    shutil.copytree(os.path.join(tmp, "dataset"), os.path.join(tmp, "corrupt"))
    with open(os.path.join(tmp, "corrupt", "train_00000.npy"), "r+b") as file:
        file.seek(-1, os.SEEK_END)
        last = file.read(1)
        file.seek(-1, os.SEEK_END)
        file.write(bytes([last[0] ^ 1]))
    started = os.path.join(tmp, "started")  # what a run leaves after its first checkpoint, as far as resume reads
    os.makedirs(os.path.join(started, "checkpoints", "10"))
    with open(os.path.join(started, run_directory.CONFIG_FILE), "w") as file:
        json.dump({**get_config("size=tiny").to_dict(), "workdir": started}, file)


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("cli"))
    _workspace(tmp)
    cases = [[case.module, [argument.format(tmp=tmp) for argument in case.arguments]] for case in CLI_CASES]
    completed = subprocess.run([sys.executable, "-m", "tests.cli_driver"], input=json.dumps(cases), cwd=REPOSITORY,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout)
    return tmp, {case.name: result for case, result in zip(CLI_CASES, results, strict=True)}


def _check_message(text: str, names: str) -> None:
    lines = [line for line in text.splitlines() if line.strip()]
    assert 1 <= len(lines) <= MAX_LINES, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert names in text, text


@pytest.mark.parametrize("case", CLI_CASES, ids=[case.name for case in CLI_CASES])
def test_command_line_error_is_short_and_names_the_field(case, cli_results):
    tmp, results = cli_results
    result = results[case.name]
    assert result["status"] == 2, result["output"][-3000:]
    assert result["output"].startswith("error: "), result["output"][-3000:]
    _check_message(result["output"], case.names.format(tmp=tmp))


def test_the_table_is_large_and_fast(cli_results):
    _, results = cli_results
    assert len(CLI_CASES) + len(API_CASES) >= 40
    # Each case fails before compiling anything (the memory budget compiles the tiny step once).
    slow = {name: round(result["seconds"], 1) for name, result in results.items()
            if result["seconds"] > 5 and name != "memory_budget"}
    assert not slow, slow


# ---- the public API ------------------------------------------------------------------------------------
def _tiny_graph():
    graph = gj.GraphSpec.from_config(get_config("size=tiny").graph)
    return graph, gj.sample_kernels(jax.random.key(0), graph)


def _tiny_config(**fields):
    config = get_config("size=tiny")
    for dotted, value in fields.items():
        section, name = dotted.split("__")
        config[section][name] = value
    return config


API_CASES = {
    "tokens_above_vocabulary": (lambda tmp: gj.token_losses(*_tiny_graph(), np.full((2, 4), 8)), "[0, 8)"),
    "tokens_negative": (lambda tmp: gj.entropy_rate(*_tiny_graph(), np.full((2, 4), -1)), "[0, 8)"),
    "tokens_device_array": (lambda tmp: gj.log_likelihood(*_tiny_graph(), jax.numpy.full((2, 4), 9)), "[0, 8)"),
    "tokens_float": (lambda tmp: gj.token_losses(*_tiny_graph(), np.zeros((2, 4))), "tokens"),
    "load_config_name": (lambda tmp: gj.load_config("nosuch"), "nosuch"),
    "load_config_arg": (lambda tmp: gj.load_config("base:size=huge"), "size"),
    "family": (lambda tmp: gj.get_family("ring"), "ring"),
    "graph_without_nodes": (lambda tmp: gj.GraphSpec.from_config({}), "nodes"),
    "sample_batch_size": (lambda tmp: gj.sample_tokens(jax.random.key(0), *_tiny_graph(), batch_size=0, length=4),
                          "batch_size"),
    "train_heads": (lambda tmp: gj.train_and_evaluate(_tiny_config(model__heads=0), tmp), "config.model.heads"),
    "train_workdir_file": (lambda tmp: gj.train_and_evaluate(_tiny_config(), os.path.join(REPOSITORY, "setup.cfg")),
                           "setup.cfg"),
    "load_dataset_missing": (lambda tmp: gj.load_dataset(tmp), "meta.json"),
    "report_without_runs": (lambda tmp: gj.write_report(tmp, None), "holds no runs"),
    "experiment_graphs": (lambda tmp: gj.run_experiment(_experiment(graphs=("ring",)), tmp),
                          "config.experiment1.graphs"),
}


def _experiment(**fields):
    config = gj.load_config("experiment1:size=tiny")
    for name, value in fields.items():
        config.experiment1[name] = value
    return config


@pytest.mark.parametrize("name", sorted(API_CASES))
def test_public_api_error_is_a_short_value_error_naming_the_field(name, tmp_path):
    call, names = API_CASES[name]
    with pytest.raises(ValueError) as raised:
        call(str(tmp_path))
    assert isinstance(raised.value, UserError), raised.value
    _check_message(str(raised.value), names)


# ---- resume ----------------------------------------------------------------------------------------------
def _resume_config(**fields):
    config = _tiny_config(train__num_steps=6, train__log_every=2, train__eval_every=6, train__checkpoint_every=4,
                          train__memory_budget_gib=0.0, train__steps_per_call=1)
    for dotted, value in fields.items():
        section, name = dotted.split("__")
        config[section][name] = value
    return config


def _no_compiling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("compiled a train step: the check should have come first")

    monkeypatch.setattr(step.StepProgram, "compiled", refuse)


def test_ctrl_c_checkpoints_and_resume_compares_the_config(tmp_path, monkeypatch):
    workdir = str(tmp_path)
    run_calls = members.Ensemble.run

    def ctrl_c_during_step_2(self, state, start, steps, branch=None):
        if start <= 2 < start + steps:
            signal.raise_signal(signal.SIGINT)
        return run_calls(self, state, start, steps, branch)

    monkeypatch.setattr(members.Ensemble, "run", ctrl_c_during_step_2)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(loop.Preempted, match="SIGINT: saved a checkpoint at step 3") as raised:
        loop.train_and_evaluate(_resume_config(), workdir)
    assert raised.value.signal_number == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is handler  # the handler was restored
    checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), keep=2)
    assert checkpoints.latest_step() == 3
    checkpoints.close()
    monkeypatch.setattr(members.Ensemble, "run", run_calls)

    with monkeypatch.context() as patch:  # a changed learning rate is refused, before anything compiles
        _no_compiling(patch)
        with pytest.raises(UserError) as refused:
            loop.train_and_evaluate(_resume_config(optimizer__learning_rate=0.01), workdir)
    message = str(refused.value)
    assert "\n" not in message and "optimizer.learning_rate (0.003 -> 0.01)" in message
    assert "--config.train.allow_changes=optimizer.learning_rate" in message and "new --workdir" in message

    allowed = _resume_config(optimizer__learning_rate=0.01, train__allow_changes="optimizer.learning_rate")
    assert loop.train_and_evaluate(allowed, workdir)["final_step"] == 6
    with open(os.path.join(workdir, run_directory.CONFIG_FILE)) as file:
        assert json.load(file)["optimizer"]["learning_rate"] == 0.01  # the run's record follows the allowed change

    with monkeypatch.context() as patch:  # finished; other logging and eval frequencies change nothing
        _no_compiling(patch)
        again = loop.train_and_evaluate(_resume_config(optimizer__learning_rate=0.01, train__log_every=3,
                                                        train__eval_every=2), workdir)
    assert again["final_step"] == 6

    longer = loop.train_and_evaluate(_resume_config(optimizer__learning_rate=0.01, train__num_steps=8), workdir)
    assert longer["final_step"] == 8 and longer["tokens_seen"] == 8 * 16 * 32
    assert [record["step"] for record in run_directory.read_metrics(workdir)] == [2, 4, 6, 8]

    with pytest.raises(UserError, match="train.num_steps"):  # fewer steps than trained: a different run
        loop.train_and_evaluate(_resume_config(optimizer__learning_rate=0.01, train__num_steps=4), workdir)


def test_a_checkpoint_of_another_shape_is_one_line(tmp_path):
    workdir = str(tmp_path)
    short = {"train__num_steps": 2, "train__eval_every": 2, "train__checkpoint_every": 2, "optimizer__warmup_steps": 1}
    loop.train_and_evaluate(_resume_config(**short), workdir)
    os.remove(os.path.join(workdir, run_directory.RESULT_FILE))  # as if stopped after its last checkpoint
    wider = _resume_config(**short, model__width=64, train__allow_changes="model.width")
    with pytest.raises(UserError, match="does not fit this model") as raised:
        loop.train_and_evaluate(wider, workdir)
    assert "\n" not in str(raised.value)
    with open(os.path.join(workdir, run_directory.CONFIG_FILE)) as file:
        assert json.load(file)["model"]["width"] == 32  # the run's record is left as it was
