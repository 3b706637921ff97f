"""The finite-data sweep: config, one run per size on prefixes of one dataset, the table."""

import json
import os

import ml_collections
import pytest

from gssm_jax.configs import base
from gssm_jax.configs.data_sweep import get_config
from gssm_jax.experiment1 import data_sweep


def test_config_sizes_and_errors():
    config = get_config()
    assert list(config.data_sweep.num_sequences) == [30, 100, 300, 1000]
    assert config.data.source == "file"
    assert config.data_sweep.num_test >= config.eval.num_sequences
    assert len(get_config("size=paper").data_sweep.num_sequences) == 10
    with pytest.raises(ValueError, match="valid values are cpu, paper, tiny"):
        get_config("size=huge")


def test_tiny_sweep_trains_one_run_per_size_and_writes_the_table(tmp_path):
    config = base.get_config("size=tiny")
    config.train.num_steps = 4
    config.train.log_every = 2
    config.train.eval_every = 4
    config.train.checkpoint_every = 4
    config.eval.num_sequences = 16
    config.optimizer.warmup_steps = 1
    with config.unlocked():
        config.data_sweep = ml_collections.ConfigDict({"num_sequences": [20, 8], "num_test": 16, "shard_size": 16})
    rows = data_sweep.run_data_sweep(config, str(tmp_path), log=lambda message: None)
    assert [row["num_sequences"] for row in rows] == [8, 20]
    assert rows[0]["epochs"] == pytest.approx(4 * 16 / 8)
    for row in rows:
        result = json.load(open(tmp_path / "runs" / f"n{row['num_sequences']}" / "result.json"))
        assert row["eval/excess_loss_nats_per_token"] == result["eval/excess_loss_nats_per_token"]
        assert json.load(open(tmp_path / "runs" / f"n{row['num_sequences']}" / "config.json"))["data"][
            "num_sequences"] == row["num_sequences"]
    table = (tmp_path / "data_sweep.md").read_text()
    assert table.count("\n") == 4 and "| 20 |" in table
    assert json.load(open(tmp_path / "data_sweep.json")) == rows
    assert os.path.exists(tmp_path / "dataset" / "meta.json")


def test_sizes_must_be_positive(tmp_path):
    config = get_config()
    config.data_sweep.num_sequences = [0, 10]
    with pytest.raises(ValueError, match=r"config\.data_sweep\.num_sequences"):
        data_sweep.run_data_sweep(config, str(tmp_path), log=lambda message: None)
