"""Resume is exact: a run interrupted anywhere (crash, SIGTERM, SIGKILL) ends bitwise like an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gssm_jax.configs.base import get_config
from gssm_jax.data import OnTheFlyBatches
from gssm_jax.training import loop, run_directory
from gssm_jax.training.checkpoints import Checkpoints

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    workdir = str(tmp_path)
    sample_batch = OnTheFlyBatches.batch

    def crash_at_step_14(self, step):
        if step == 14:  # a crash between checkpoints: steps 11..14 are redone after the resume
            raise RuntimeError("simulated crash")
        return sample_batch(self, step)

    monkeypatch.setattr(OnTheFlyBatches, "batch", crash_at_step_14)
    with pytest.raises(RuntimeError, match="simulated crash"):
        loop.train_and_evaluate(_config(), workdir)
    assert [record["step"] for record in run_directory.read_metrics(workdir)][-1] == 10

    def sigterm_during_step_22(self, step):
        if step == 22:
            signal.raise_signal(signal.SIGTERM)  # what a preempting scheduler sends
        return sample_batch(self, step)

    monkeypatch.setattr(OnTheFlyBatches, "batch", sigterm_during_step_22)
    with pytest.raises(loop.Preempted, match="step 23"):
        loop.train_and_evaluate(_config(), workdir)
    checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), keep=2)
    assert checkpoints.latest_step() == 23  # saved before exiting, off the checkpoint_every grid
    checkpoints.close()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was restored

    monkeypatch.setattr(OnTheFlyBatches, "batch", sample_batch)
    result = loop.train_and_evaluate(_config(), workdir)

    _assert_bitwise_equal(_final_state(workdir), uninterrupted["state"])
    # run_directory.jsonl: every logged step once, in order, with the same values as the uninterrupted run.
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
