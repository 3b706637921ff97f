"""Training from a dataset on disk: evaluation on its test split, exact mid-epoch resume, clear refusals."""

import os

import jax
import numpy as np
import pytest

from gssm_jax import data, inference
from gssm_jax.configs.base import get_config
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.training import loop
from gssm_jax.training.checkpoints import Checkpoints
from gssm_jax.training.step import ConfigError

NUM_TRAIN = 24  # batch 16: an epoch is 1.5 steps, so the checkpoint at step 4 (stream position 64 or 80) is mid-epoch


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
    file_batch = data.FileBatches.batch

    def crash_at_step_6(self, step):
        if step == 6:  # after the checkpoint at step 4: the resume starts inside an epoch and redoes steps 5, 6
            raise RuntimeError("simulated crash")
        return file_batch(self, step)

    monkeypatch.setattr(data.FileBatches, "batch", crash_at_step_6)
    with pytest.raises(RuntimeError, match="simulated crash"):
        loop.train_and_evaluate(_config(dataset_path), interrupted)
    monkeypatch.setattr(data.FileBatches, "batch", file_batch)
    loop.train_and_evaluate(_config(dataset_path), interrupted)

    for leaf, reference in zip(jax.tree.leaves(_final_params(interrupted)),
                               jax.tree.leaves(_final_params(uninterrupted)), strict=True):
        np.testing.assert_array_equal(leaf, reference)


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
