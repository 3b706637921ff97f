"""Resume is exact: a run or an ensemble interrupted anywhere (crash, SIGTERM, SIGKILL) ends bitwise like an
uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gssm_jax.configs.base import get_config
from gssm_jax.training import loop, members, run_directory
from gssm_jax.training.checkpoints import Checkpoints, MemberCheckpoints

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def hook_calls(monkeypatch, step: int, action) -> None:
    """Runs `action()` when the loop dispatches the call of the main run that trains step `step` (0-based)."""
    run_calls = members.Ensemble.run

    def run(self, state, start, steps, branch=None):
        if branch is None and start <= step < start + steps:
            action()
        return run_calls(self, state, start, steps, branch)

    monkeypatch.setattr(members.Ensemble, "run", run)


def _config(num_steps=30):
    config = get_config("size=tiny")
    config.train.num_steps = num_steps
    config.train.log_every = 5
    config.train.eval_every = 15
    config.train.checkpoint_every = 10
    return config


def _final_state(workdir: str):
    checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), keep=2)
    try:
        return jax.device_get(checkpoints.restore(checkpoints.latest_step()))
    finally:
        checkpoints.close()


def _assert_bitwise_equal(state, reference_state):
    leaves = jax.tree_util.tree_leaves_with_path(state)
    reference_leaves = jax.tree.leaves(reference_state)
    assert len(leaves) == len(reference_leaves)
    for (path, leaf), reference_leaf in zip(leaves, reference_leaves, strict=True):
        np.testing.assert_array_equal(leaf, reference_leaf, err_msg=jax.tree_util.keystr(path))


def _train_records(workdir: str) -> list[tuple]:
    return [(record["step"], record["train/loss_nats_per_token"], record.get("eval/loss_nats_per_token"))
            for record in run_directory.read_metrics(workdir)]


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """The four runs below compile the same programs: a persistent cache compiles them once."""
    options = {"jax_compilation_cache_dir": str(tmp_path_factory.mktemp("jax_cache")),
               "jax_persistent_cache_min_compile_time_secs": 0.0,
               "jax_persistent_cache_min_entry_size_bytes": 0}
    previous = {name: getattr(jax.config, name) for name in options}
    for name, value in options.items():
        jax.config.update(name, value)
    yield
    for name, value in previous.items():
        jax.config.update(name, value)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    result = loop.train_and_evaluate(_config(), workdir)
    return {"workdir": workdir, "result": result, "state": _final_state(workdir)}


def test_crash_then_sigterm_then_resume_is_bitwise_identical(tmp_path, monkeypatch, uninterrupted):
    # Calls of 5 steps (gcd of train.steps_per_call=20, eval_every=15 and checkpoint_every=10).
    workdir = str(tmp_path)

    def crash():
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as patch:  # a crash between checkpoints: steps 11..15 are redone after the resume
        hook_calls(patch, 14, crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            loop.train_and_evaluate(_config(), workdir)
    assert [record["step"] for record in run_directory.read_metrics(workdir)][-1] == 10

    with monkeypatch.context() as patch:  # what a preempting scheduler sends, during the call of steps 21..25
        hook_calls(patch, 22, lambda: signal.raise_signal(signal.SIGTERM))
        with pytest.raises(loop.Preempted, match="step 25"):
            loop.train_and_evaluate(_config(), workdir)
    checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), keep=2)
    assert checkpoints.latest_step() == 25  # saved at the end of that call, off the checkpoint_every grid
    checkpoints.close()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was restored

    result = loop.train_and_evaluate(_config(), workdir)

    _assert_bitwise_equal(_final_state(workdir), uninterrupted["state"])
    # metrics.jsonl: every logged step once, in order, with the same values as the uninterrupted run.
    assert _train_records(workdir) == _train_records(uninterrupted["workdir"])
    expected = {key: value for key, value in uninterrupted["result"].items() if key != "wall_time_s"}
    assert {key: value for key, value in result.items() if key != "wall_time_s"} == expected
    with np.load(os.path.join(workdir, run_directory.PER_POSITION_FILE)) as curves:
        np.testing.assert_array_equal(curves["steps"], [15, 30])


def _train_command(workdir: str) -> list[str]:
    return [sys.executable, "-m", "gssm_jax.cli.train", "--config=configs/base.py:size=tiny",
            "--config.train.num_steps=30", "--config.train.log_every=5", "--config.train.eval_every=15",
            "--config.train.checkpoint_every=10", f"--workdir={workdir}"]


@pytest.mark.slow  # three Python processes that each import JAX and compile (~1-2 min on 2 cores)
def test_sigkill_then_rerunning_the_command_is_bitwise_identical(tmp_path, uninterrupted):
    workdir = str(tmp_path)
    environment = {**os.environ, "JAX_NUM_CPU_DEVICES": "8"}
    process = subprocess.Popen(_train_command(workdir), cwd=REPOSITORY, env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints_dir = os.path.join(workdir, "checkpoints")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if os.path.isdir(os.path.join(checkpoints_dir, "10")):  # committed (orbax renames tmp dirs at the end)
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not os.path.exists(os.path.join(workdir, run_directory.RESULT_FILE)), "killed too late to test anything"

    completed = subprocess.run(_train_command(workdir), cwd=REPOSITORY, env=environment, capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    _assert_bitwise_equal(_final_state(workdir), uninterrupted["state"])
    assert _train_records(workdir) == _train_records(uninterrupted["workdir"])


def test_members_resume_from_their_latest_common_checkpoint(tmp_path):
    state = {"weights": np.arange(3, dtype=np.float32)}
    directories = [str(tmp_path / f"member{k}" / "checkpoints") for k in range(2)]
    saver = MemberCheckpoints(directories, keep=3)
    saver.save(10, [state, state], [{}, {}])
    saver.members[0].save(20, state, {})  # member 1's save of step 20 never committed (killed)
    saver.close()
    resumed = MemberCheckpoints(directories, keep=3)
    assert resumed.resume_step() == 10
    assert [member.latest_step() for member in resumed.members] == [10, 10]  # step 20 is trained again
    resumed.close()


def ensemble_configs(root: str) -> list:
    """Three members that differ in kernel seed, alpha_X, data seed, init seed, eval seed and peak learning rate."""
    configs = []
    for k, (alpha_x, learning_rate) in enumerate([(1e-3, 3e-3), (0.05, 5e-3), (0.3, 2e-3)]):
        config = get_config(f"size=tiny,alpha_x={alpha_x}")
        config.train.update(num_steps=30, log_every=5, eval_every=15, checkpoint_every=10)
        config.seed, config.data.data_seed, config.model.init_seed = 10 + k, 20 + k, 30 + k
        config.eval.eval_seed, config.optimizer.learning_rate = 40 + k, learning_rate
        config.workdir = os.path.join(root, f"member{k}")
        configs.append(config)
    return configs


# Trains the ensemble of `ensemble_configs(argv[1])` and SIGKILLs itself when dispatching the call of steps
# 21..25, right after the (asynchronous) saves of step 20 started.
KILLED_ENSEMBLE = """
import os, signal, sys
from gssm_jax.training import loop, members
from tests.training.test_checkpoints import ensemble_configs

run_calls = members.Ensemble.run

def run(self, state, start, steps, branch=None):
    if start <= 22 < start + steps:
        os.kill(os.getpid(), signal.SIGKILL)
    return run_calls(self, state, start, steps, branch)

members.Ensemble.run = run
loop.train_ensemble(ensemble_configs(sys.argv[1]))
"""


def test_sigkill_during_an_ensemble_then_rerun_is_bitwise_identical(tmp_path_factory):
    uninterrupted = str(tmp_path_factory.mktemp("ensemble"))
    loop.train_ensemble(ensemble_configs(uninterrupted))
    killed = str(tmp_path_factory.mktemp("killed_ensemble"))
    environment = {**os.environ, "JAX_NUM_CPU_DEVICES": "8", "GSSM_JAX_CACHE_DIR": jax.config.jax_compilation_cache_dir}
    completed = subprocess.run([sys.executable, "-c", KILLED_ENSEMBLE, killed], cwd=REPOSITORY, env=environment,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == -signal.SIGKILL, completed.stderr[-2000:]
    assert not any(run_directory.is_finished(os.path.join(killed, f"member{k}")) for k in range(3))

    results = loop.train_ensemble(ensemble_configs(killed))
    for k, result in enumerate(results):
        member, reference = os.path.join(killed, f"member{k}"), os.path.join(uninterrupted, f"member{k}")
        _assert_bitwise_equal(_final_state(member), _final_state(reference))
        assert _train_records(member) == _train_records(reference)
        expected = {key: value for key, value in run_directory.read_result(reference).items() if key != "wall_time_s"}
        assert {key: value for key, value in result.items() if key != "wall_time_s"} == expected
        with open(os.path.join(member, run_directory.CONFIG_FILE)) as file:
            assert json.load(file)["workdir"] == member  # each member's directory is a solo run's
