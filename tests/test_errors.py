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
    _train("dataset_for_another_graph", "--config.data.source=file", "--config.data.path={tmp}/other_graph",
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
    other = gj.load_config("data:size=tiny,family=four_by_four")  # data:size=tiny is base:size=tiny's graph
    gj.generate_dataset(os.path.join(tmp, "other_graph"), other.graph.to_dict(), seed=other.seed,
                        data_seed=other.data_seed, num_train=32, num_test=other.num_test, length=other.length,
                        shard_size=other.shard_size)
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
    """base:size=tiny with `section__field=value` overrides."""
    config = get_config("size=tiny")
    config.update_from_flattened_dict({dotted.replace("__", "."): value for dotted, value in fields.items()})
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
    return _tiny_config(**{"train__num_steps": 6, "train__log_every": 2, "train__eval_every": 6,
                           "train__checkpoint_every": 4, "train__memory_budget_gib": 0.0, "train__steps_per_call": 1,
                           **fields})


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


# ---- the malformed inputs a new user tries (issue 23), through the same driver ----------------------------
CONFIG_FILES = {  # a user's config file that fails while it is loaded -> one line naming the file and the line
    "syntax.py": "def get_config(arg=None):\n    return dict(\n",
    "import.py": "import no_such_module\n\n\ndef get_config(arg=None):\n    return None\n",
    "name.py": "import ml_collections\n\n\ndef get_config(arg=None):\n    return undefined_name\n",
    "raises.py": "def get_config(arg=None):\n    raise RuntimeError('my own check')\n",
    "none.py": "def get_config(arg=None):\n    return None\n",
    "no_get_config.py": "CONFIG = {}\n",
}


@dataclasses.dataclass(frozen=True)
class Malformed:
    """A command line (`{tmp}` the workspace, `{ro}` a path that cannot be created) and the text its one error
    line must contain."""

    name: str
    module: str
    arguments: tuple[str, ...]
    names: str


def _tiny_train(name: str, *arguments: str, names: str) -> Malformed:
    return Malformed(name, TRAIN, (TINY, *arguments, f"--workdir={{tmp}}/more/{name}"), names)


MALFORMED_CLI = [
    Malformed("config_file_syntax", TRAIN, ("--config={tmp}/syntax.py", "--workdir={tmp}/unused"), "syntax.py: line 2"),
    Malformed("config_file_import", TRAIN, ("--config={tmp}/import.py", "--workdir={tmp}/unused"),
              "import.py, line 1"),
    Malformed("config_file_bug", TRAIN, ("--config={tmp}/name.py", "--workdir={tmp}/unused"), "name.py, line 5"),
    Malformed("config_file_raises", EXPERIMENT1, ("--config={tmp}/raises.py", "--workdir={tmp}/unused"),
              "raises.py, line 2 (in get_config): RuntimeError: my own check"),
    Malformed("config_file_returns_none", CALIBRATE, ("--config={tmp}/none.py", "--workdir={tmp}/unused"),
              "get_config returned None"),
    Malformed("config_file_without_get_config", DATA, ("--config={tmp}/no_get_config.py", "--workdir={tmp}/unused"),
              "defines no get_config"),
    Malformed("config_arg_unknown_key", TRAIN, ("--config=base:colour=red", "--workdir={tmp}/unused"), "colour"),
    Malformed("data_read_only", DATA, ("--config=data:size=tiny", "--workdir={ro}"), "{ro}"),
    Malformed("data_alpha_negative", DATA, ("--config=data:alpha_x=-1", "--workdir={tmp}/unused"), "alpha_x"),
    Malformed("data_family_alpha_negative", DATA, ("--config=data:family=chain,alpha_z=-0.1", "--workdir={tmp}/unused"),
              "alpha_z"),
    Malformed("experiment1_learner", EXPERIMENT1, ("--config=experiment1:learners=rnn", "--workdir={tmp}/unused"),
              "learners='rnn'"),
    Malformed("experiment1_free_alpha", EXPERIMENT1, ("--config=experiment1:free_alpha=-1", "--workdir={tmp}/unused"),
              "free_alpha"),
    Malformed("experiment1_workdir_file", EXPERIMENT1, ("--config=experiment1:size=tiny", "--workdir={tmp}/afile"),
              "{tmp}/afile"),
    Malformed("calibrate_workdir_under_a_file", CALIBRATE, ("--config=calibrate:size=tiny,graph=chain",
                                                            "--workdir={tmp}/afile/calibration"), "{tmp}/afile"),
    Malformed("data_sweep_workdir_file", DATA_SWEEP, ("--config=data_sweep:size=tiny", "--workdir={tmp}/afile"),
              "{tmp}/afile"),
    Malformed("workdir_in_use", TRAIN, (TINY, "--workdir={tmp}/held"), "in use by pid"),
    Malformed("experiment1_workdir_in_use", EXPERIMENT1, ("--config=experiment1:size=tiny", "--workdir={tmp}/held"),
              "in use by pid"),
    Malformed("difficulty_batch_size", DIFFICULTY, ("--batch_size=0", "--workdir={tmp}/unused"), "batch_size"),
    _tiny_train("dataset_is_a_file", "--config.data.source=file", "--config.data.path={tmp}/afile", names="afile"),
    _tiny_train("dataset_other_length", "--config.data.source=file", "--config.data.path={tmp}/dataset",
                "--config.data.length=16", names="length"),
    _tiny_train("dataset_too_few_sequences", "--config.data.source=file", "--config.data.path={tmp}/dataset",
                "--config.data.num_sequences=1000", names="config.data.num_sequences"),
    _tiny_train("learning_rate_nan", "--config.optimizer.learning_rate=nan", names="config.optimizer.learning_rate"),
    _tiny_train("learning_rate_negative", "--config.optimizer.learning_rate=-0.01",
                names="config.optimizer.learning_rate"),
    _tiny_train("warmup_equals_steps", "--config.optimizer.warmup_steps=40", names="config.optimizer.warmup_steps"),
    _tiny_train("beta1_one", "--config.optimizer.beta1=1.0", names="config.optimizer.beta1"),
    _tiny_train("weight_decay_negative", "--config.optimizer.weight_decay=-1",
                names="config.optimizer.weight_decay"),
]


def _read_only_path(tmp: str) -> str:
    """A directory path whose creation fails: under a read-only directory (root may write anywhere: /sys)."""
    if os.geteuid() == 0:
        return "/sys/gssm_jax_read_only/dataset"
    os.makedirs(os.path.join(tmp, "read_only"), mode=0o500)
    return os.path.join(tmp, "read_only", "dataset")


@pytest.fixture(scope="module")
def malformed_results(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("malformed"))
    _workspace(tmp)
    for name, text in CONFIG_FILES.items():
        with open(os.path.join(tmp, name), "w") as file:
            file.write(text)
    ro = _read_only_path(tmp)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from gssm_jax import locks\n"
                               "with locks.hold(sys.argv[1], 'the holder of the test'):\n"
                               "    print('held', flush=True); time.sleep(600)", os.path.join(tmp, "held")],
                              cwd=REPOSITORY, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        cases = [[case.module, [argument.format(tmp=tmp, ro=ro) for argument in case.arguments]]
                 for case in MALFORMED_CLI]
        completed = subprocess.run([sys.executable, "-m", "tests.cli_driver"], input=json.dumps(cases),
                                   cwd=REPOSITORY, capture_output=True, text=True, timeout=600)
    finally:
        holder.kill()
        holder.wait()
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout)
    return tmp, ro, {case.name: result for case, result in zip(MALFORMED_CLI, results, strict=True)}


@pytest.mark.parametrize("case", MALFORMED_CLI, ids=[case.name for case in MALFORMED_CLI])
def test_malformed_command_line_is_one_short_error(case, malformed_results):
    tmp, ro, results = malformed_results
    result = results[case.name]
    assert result["status"] == 2, result["output"][-3000:]
    assert result["output"].startswith("error: "), result["output"][-3000:]
    _check_message(result["output"], case.names.format(tmp=tmp, ro=ro))


def test_a_failed_check_leaves_no_empty_workdir(malformed_results):
    tmp, _, _ = malformed_results
    # Refused at the flags, or after the workdir lock created the directory (the lock removes what it created).
    for name in ("unused", "more/dataset_is_a_file", "more/dataset_other_length"):
        assert not os.path.exists(os.path.join(tmp, name)), (name, os.listdir(os.path.join(tmp, name)))


def _other_graph_kernels():
    graph = gj.GraphSpec.from_config(get_config().graph)  # four_by_four, not the tiny graph
    return gj.sample_kernels(jax.random.key(0), graph)


def _graph(**node_fields):
    nodes = [{"name": "Z1", "states": 2, "alpha": 0.1, "parents": ["X"]},
             {"name": "X", "states": 4, "alpha": 0.1, "parents": ["Z1"], "observed": True}]
    nodes[0].update(node_fields)
    return gj.GraphSpec.from_config({"nodes": nodes})


def _held_twice(tmp):
    from gssm_jax import locks  # noqa: PLC0415

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from gssm_jax import locks\n"
                               "with locks.hold(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)", tmp],
                              cwd=REPOSITORY, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with locks.hold(tmp):
            pass
    finally:
        holder.kill()
        holder.wait()


MALFORMED_API = {
    "kernels_of_another_graph": (lambda tmp: gj.entropy_rate(_tiny_graph()[0], _other_graph_kernels(),
                                                             np.zeros((2, 4), np.uint8)), "another graph"),
    "kernels_of_another_graph_losses": (lambda tmp: gj.token_losses(
        gj.GraphSpec.from_config(get_config().graph), _tiny_graph()[1], np.zeros((2, 4), np.uint8)), "another graph"),
    "kernels_not_a_dict": (lambda tmp: gj.token_losses(_tiny_graph()[0], [1, 2], np.zeros((2, 4), np.uint8)),
                           "kernels must be a dict"),
    "graph_config_not_a_graph": (lambda tmp: gj.token_losses(get_config("size=tiny").graph, _tiny_graph()[1],
                                                             np.zeros((2, 4), np.uint8)), "GraphSpec"),
    "tokens_one_dimensional": (lambda tmp: gj.entropy_rate(*_tiny_graph(), np.zeros(4, np.uint8)), "(batch, length)"),
    "tokens_strings": (lambda tmp: gj.token_losses(*_tiny_graph(), np.array([["a", "b"]])), "tokens"),
    "graph_alpha_negative": (lambda tmp: _graph(alpha=-1.0), "alpha"),
    "graph_states_zero": (lambda tmp: _graph(states=0), "states"),
    "graph_unknown_parent": (lambda tmp: _graph(parents=["Y"]), "Y"),
    "generate_read_only": (lambda tmp: gj.generate_dataset(_read_only_path(tmp), get_config("size=tiny").graph,
                                                           seed=0, data_seed=1, num_train=4, num_test=0, length=4,
                                                           shard_size=4), "cannot write the dataset"),
    "generate_length_zero": (lambda tmp: gj.generate_dataset(tmp, get_config("size=tiny").graph, seed=0, data_seed=1,
                                                             num_train=4, num_test=0, length=0, shard_size=4),
                             "length"),
    "load_dataset_a_file": (lambda tmp: gj.load_dataset(os.path.join(REPOSITORY, "setup.cfg")), "setup.cfg"),
    "load_config_unknown_key": (lambda tmp: gj.load_config("data:colour=red"), "colour"),
    "workdir_held": (_held_twice, "in use by pid"),
    "train_learning_rate_nan": (lambda tmp: gj.train_and_evaluate(_tiny_config(optimizer__learning_rate=float("nan")),
                                                                  tmp), "config.optimizer.learning_rate"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_API))
def test_malformed_api_call_is_one_short_user_error(name, tmp_path):
    call, names = MALFORMED_API[name]
    with pytest.raises(UserError) as raised:
        call(str(tmp_path))
    _check_message(str(raised.value), names)


def test_the_malformed_table_is_large():
    assert len(MALFORMED_CLI) + len(MALFORMED_API) >= 15 + 8  # 15 more than issue 23 asked, and its named cases
