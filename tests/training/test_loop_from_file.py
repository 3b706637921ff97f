"""Training from a dataset on disk: evaluation on its test split, exact mid-epoch resume, clear refusals."""

import os

import jax
import numpy as np
import pytest

from gssm_jax import data, inference
from gssm_jax.configs.base import get_config
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.training import loop, members, run_directory
from gssm_jax.training.checkpoints import Checkpoints
from gssm_jax.training.run import ConfigError, resolve

FLOAT32_EPS = float(np.finfo(np.float32).eps)
NUM_VALIDATION = 8  # the tiny config's eval.validation_sequences: the last 8 of the train split
# 24 training sequences, batch 16: an epoch is 1.5 steps, so the checkpoint at step 4 (stream position 64) is
# mid-epoch.
NUM_TRAIN = 24 + NUM_VALIDATION


def _config(path: str):
    config = get_config("size=tiny")
    config.data.source = "file"
    config.data.path = path
    config.train.num_steps = 12
    config.train.log_every = 3
    config.train.eval_every = 6
    config.train.checkpoint_every = 4
    config.eval.num_sequences = 16
    return config


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory):
    config = get_config("size=tiny")
    path = str(tmp_path_factory.mktemp("dataset"))
    data.generate_dataset(path, config.graph, seed=config.seed, data_seed=7, num_train=NUM_TRAIN, num_test=16,
                              length=config.data.length, shard_size=16)
    return path


def _final_params(workdir: str):
    checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), keep=2)
    try:
        return jax.device_get(checkpoints.restore(checkpoints.latest_step()))["params"]
    finally:
        checkpoints.close()


def test_file_training_evaluates_against_test_split_entropy(dataset_path, tmp_path):
    config = _config(dataset_path)
    result = loop.train_and_evaluate(config, str(tmp_path))
    dataset = data.load_dataset(dataset_path)
    graph = GraphSpec.from_config(config.graph)
    entropy = inference.entropy_rate(graph, jax.tree.map(np.asarray, dataset.kernels), np.asarray(dataset.test))
    np.testing.assert_allclose(result["eval/entropy_nats_per_token"], float(entropy.nats_per_token), rtol=1e-5)


def test_mid_epoch_crash_then_resume_is_bitwise_identical(dataset_path, tmp_path, monkeypatch):
    uninterrupted = str(tmp_path / "uninterrupted")
    loop.train_and_evaluate(_config(dataset_path), uninterrupted)

    interrupted = str(tmp_path / "interrupted")
    run_calls = members.Ensemble.run

    def crash_at_step_6(self, state, start, steps, branch=None):
        if start <= 6 < start + steps:  # after the checkpoint at step 4: the resume starts inside an epoch
            raise RuntimeError("simulated crash")
        return run_calls(self, state, start, steps, branch)

    monkeypatch.setattr(members.Ensemble, "run", crash_at_step_6)
    with pytest.raises(RuntimeError, match="simulated crash"):
        loop.train_and_evaluate(_config(dataset_path), interrupted)
    monkeypatch.setattr(members.Ensemble, "run", run_calls)
    loop.train_and_evaluate(_config(dataset_path), interrupted)

    for leaf, reference in zip(jax.tree.leaves(_final_params(interrupted)),
                               jax.tree.leaves(_final_params(uninterrupted)), strict=True):
        np.testing.assert_array_equal(leaf, reference)


def test_the_validation_split_is_never_trained_on(dataset_path, tmp_path, monkeypatch):
    # The batches the loop reads from disk (on the host, K steps at a time) are rows of the first
    # NUM_TRAIN - NUM_VALIDATION training sequences; the validation loss is the model's on the last ones.
    config = _config(dataset_path)
    dataset = data.load_dataset(dataset_path)
    read = []
    take = type(dataset.train).take
    monkeypatch.setattr(type(dataset.train), "take", lambda self, indices: read.append(np.asarray(indices)) or
                        take(self, indices))
    run = resolve(config, str(tmp_path))
    assert run.data.num_sequences == NUM_TRAIN - NUM_VALIDATION
    ensemble = members.Ensemble([run])
    state = ensemble.initial_state()
    read.clear()
    for start in range(0, 12, 4):
        state, _ = ensemble.run(state, start, 4)
    trained = np.unique(np.concatenate(read))
    assert trained.max() < NUM_TRAIN - NUM_VALIDATION and trained.size == NUM_TRAIN - NUM_VALIDATION
    validation = np.asarray(members.validation_tokens(run, ensemble.sources[0].kernels))
    np.testing.assert_array_equal(validation, take(dataset.train, np.arange(NUM_TRAIN - NUM_VALIDATION, NUM_TRAIN)))


def test_dataset_for_another_length_is_refused(dataset_path, tmp_path):
    config = _config(dataset_path)
    config.data.length = 16
    with pytest.raises(ValueError, match="length"):
        loop.train_and_evaluate(config, str(tmp_path))


def test_file_source_needs_a_path(tmp_path):
    config = get_config("size=tiny")
    config.data.source = "file"
    with pytest.raises(ConfigError, match=r"config\.data\.path"):
        loop.train_and_evaluate(config, str(tmp_path))


def test_an_ensemble_reads_each_members_batches(dataset_path, tmp_path):
    # Two members on one dataset with other shuffles (data seeds): each trains as its solo run (the per-step
    # loss within N eps relative, N = batch x length tokens: XLA batches the members' sums in another order).
    configs = []
    for k in range(2):
        config = _config(dataset_path)
        config.data.data_seed, config.model.init_seed, config.optimizer.warmup_steps = 5 + k, k, 1
        config.train.update(num_steps=4, log_every=1, eval_every=4, checkpoint_every=4)
        config.workdir = str(tmp_path / f"member{k}")
        configs.append(config)
    loop.train_ensemble(configs)
    members_losses = []
    for k, config in enumerate(configs):
        loop.train_and_evaluate(config, str(tmp_path / f"solo{k}"))
        member, solo = ([record["train/loss_nats_per_token"] for record in run_directory.read_metrics(workdir)]
                        for workdir in (config.workdir, str(tmp_path / f"solo{k}")))
        np.testing.assert_allclose(member, solo, rtol=config.data.batch_size * config.data.length * FLOAT32_EPS)
        members_losses.append(member)
    assert members_losses[0][1:] != members_losses[1][1:]  # other batches
