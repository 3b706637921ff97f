"""Cool-down branches and the validation split, end to end through the loop.

The reference of a branch is the run that was planned to end where the branch ends: a wsd run of
round(f * num_steps) steps decays over the same steps from the same state on the same data, so the
branch's evaluation equals that run's final one, bitwise (the same programs run the same calls).
"""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from gssm_jax import keys
from gssm_jax.configs.base import get_config
from gssm_jax.gssm.kernels import sample_kernels
from gssm_jax.learners import token_losses
from gssm_jax.sampling.sampler import sample_tokens
from gssm_jax.training import loop, members, run_directory
from gssm_jax.training.checkpoints import Checkpoints
from gssm_jax.training.run import resolve
from gssm_jax.training.step import ProgramShape, ensemble_mesh, step_program


def _config(num_steps: int = 40, cooldowns=(0.5,)):
    """wsd over `num_steps`; the branch at 0.5 of 40 steps forks at round(0.5 * 40 * 0.8) = 16 and ends at 20."""
    config = get_config("size=tiny")
    config.optimizer.update(schedule="wsd", warmup_steps=4, decay_fraction=0.2)
    config.train.update(num_steps=num_steps, cooldowns=cooldowns, log_every=4, eval_every=20, checkpoint_every=20,
                        steps_per_call=4)
    return config


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("cooldown"))
    return workdir, loop.train_and_evaluate(_config(), workdir)


def test_a_branch_equals_the_run_planned_to_end_there(uninterrupted, tmp_path):
    workdir, result = uninterrupted
    short = loop.train_and_evaluate(_config(num_steps=20, cooldowns=()), str(tmp_path / "short"))
    branch, end = result["cooldowns"]
    assert [entry["step"] for entry in result["cooldowns"]] == [20, 40]
    assert set(branch) == set(run_directory.COOLDOWN_KEYS)
    for key in run_directory.COOLDOWN_KEYS[2:]:
        assert branch[key] == short[key], key  # bitwise
        assert end[key] == result[key], key  # the main run's end is the last entry
    assert branch["tokens_seen"] == 20 * 16 * 32 and end["tokens_seen"] == result["tokens_seen"]
    # The main run did not decay at step 20: its evaluation there is another one.
    at_20 = [record for record in run_directory.read_metrics(workdir) if record["step"] == 20][0]
    assert at_20["eval/loss_nats_per_token"] != branch["eval/loss_nats_per_token"]
    assert at_20["train/learning_rate"] == pytest.approx(_config().optimizer.learning_rate)
    assert result["learning_rate"] == _config().optimizer.learning_rate


def test_the_validation_loss_is_the_model_on_the_validation_key_sequences(uninterrupted):
    workdir, result = uninterrupted
    config, run = _config(), resolve(_config(), None)
    checkpoints = Checkpoints(os.path.join(workdir, run_directory.CHECKPOINTS_DIR), keep=1)
    params = jax.device_get(checkpoints.restore(40))["params"]
    checkpoints.close()
    graphdef = step_program(ProgramShape.of(run, 1), ensemble_mesh(1)).graphdef
    kernels = sample_kernels(keys.kernel_key(config.seed), run.graph)
    tokens = sample_tokens(keys.validation_key(config.data.data_seed), run.graph, kernels,
                           config.eval.validation_sequences, config.data.length)
    expected = float(np.mean(np.asarray(token_losses(nnx.merge(graphdef, params), tokens), np.float64)))
    np.testing.assert_allclose(result["eval/validation_loss_nats_per_token"], expected, rtol=1e-5)
    evals = run_directory.read_run(workdir).evals
    assert [record["step"] for record in evals] == [20, 40]
    assert all("eval/validation_loss_nats_per_token" in record for record in evals)


def test_a_kill_during_a_branch_reruns_it_from_the_fork(uninterrupted, tmp_path, monkeypatch):
    reference, result = uninterrupted
    workdir = str(tmp_path)
    run_calls = members.Ensemble.run

    def crash_in_the_branch(self, state, start, steps, branch=None):
        if branch is not None:
            raise RuntimeError("simulated crash")
        return run_calls(self, state, start, steps, branch)

    monkeypatch.setattr(members.Ensemble, "run", crash_in_the_branch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        loop.train_and_evaluate(_config(), workdir)
    checkpoints = Checkpoints(os.path.join(workdir, run_directory.CHECKPOINTS_DIR), keep=2)
    assert checkpoints.latest_step() == 16  # the fork
    checkpoints.close()
    monkeypatch.setattr(members.Ensemble, "run", run_calls)
    again = loop.train_and_evaluate(_config(), workdir)
    assert {k: v for k, v in again.items() if k != "wall_time_s"} == {
        k: v for k, v in result.items() if k != "wall_time_s"}
    assert run_directory.read_metrics(workdir) == [
        {**record, "elapsed_s": mine["elapsed_s"], "train/tokens_per_second": mine["train/tokens_per_second"]}
        for record, mine in zip(run_directory.read_metrics(reference), run_directory.read_metrics(workdir),
                                strict=True)]
    with open(os.path.join(workdir, run_directory.COOLDOWNS_FILE)) as file:
        assert [entry["fork"] for entry in json.load(file)] == [16]
