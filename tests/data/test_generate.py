"""Finite datasets: round trip against direct sampling, safe writes, resume, verification, batches from file."""

import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from gssm_jax import data, parallel
from gssm_jax.configs import data as data_config
from gssm_jax.gssm.graph import GraphSpec, experiment1_graph_config
from gssm_jax.gssm.kernels import sample_kernels
from gssm_jax.sampling.sampler import sample_tokens

GRAPH = experiment1_graph_config(2, 2, 5, alpha_x=0.5, alpha_z=0.5)
PARAMETERS = dict(seed=3, data_seed=7, num_train=21, num_test=5, length=12, shard_size=8)


def generate(directory, graph_config=GRAPH, progress=None, **overrides):
    return data.generate_dataset(directory, graph_config, progress=progress, **{**PARAMETERS, **overrides})


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dataset")
    generate(directory)
    return directory


@pytest.fixture
def dataset_copy(dataset_dir, tmp_path):
    return shutil.copytree(dataset_dir, tmp_path / "copy")


def files_of(directory):
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_round_trip_equals_direct_sampling_with_the_same_keys(dataset_dir):
    dataset = data.load_dataset(dataset_dir)
    graph = GraphSpec.from_config(GRAPH)
    kernels = sample_kernels(jax.random.key(PARAMETERS["seed"]), graph)
    for name in kernels:
        np.testing.assert_array_equal(dataset.kernels[name], np.asarray(kernels[name]))
    for split, rows in (("train", [8, 8, 5]), ("test", [5])):
        assert data.shard_rows(PARAMETERS[f"num_{split}"], PARAMETERS["shard_size"]) == rows
        expected = np.concatenate([
            np.asarray(sample_tokens(data.shard_key(PARAMETERS["data_seed"], split, index), graph, kernels,
                                     count, PARAMETERS["length"]))
            for index, count in enumerate(rows)
        ])
        tokens = np.asarray(getattr(dataset, split))
        assert tokens.dtype == np.uint8
        np.testing.assert_array_equal(tokens, expected)
        assert isinstance(np.load(dataset_dir / f"{split}_00000.npy", mmap_mode="r"), np.memmap)
    meta = dataset.meta
    assert meta["num_sequences"] == {"train": 21, "test": 5}
    assert (meta["seed"], meta["data_seed"], meta["length"], meta["dtype"]) == (3, 7, 12, "uint8")
    assert [entry["shape"] for entry in meta["shards"]["train"]] == [[8, 12], [8, 12], [5, 12]]
    assert sorted(path.name for path in dataset_dir.iterdir()) == [
        "kernels.npz", "meta.json", "test_00000.npy", "train_00000.npy", "train_00001.npy", "train_00002.npy"]


def test_a_larger_dataset_with_the_same_shard_size_extends_the_smaller_one(dataset_dir, tmp_path):
    larger = generate(tmp_path, num_train=29)  # shards 8, 8, 8, 5: no new sampler shape
    np.testing.assert_array_equal(np.asarray(larger.train)[:21], np.asarray(data.load_dataset(dataset_dir).train))


def test_product_kernels_are_stored_one_table_per_input(tmp_path):
    graph = GraphSpec.from_config(experiment1_graph_config(2, 2, 5, alpha_x=0.5, alpha_z=0.5, kernel="product"))
    rng = np.random.default_rng(0)  # any tables of the right shapes: the layout is under test, not the draw
    kernels = {node.name: tuple(rng.random((size, node.states), np.float32) for size in graph.input_sizes(node.name))
               for node in graph.nodes}
    (tmp_path / "kernels.npz").write_bytes(data.format.kernels_bytes(graph, kernels))
    with np.load(tmp_path / "kernels.npz") as stored:
        assert sorted(stored.files) == ["X.0.Z1", "X.1.Z2", "Z1.0.Z1", "Z1.1.X", "Z2.0.Z2", "Z2.1.X"]
    loaded = data.load_kernels(tmp_path / "kernels.npz", graph)
    assert jax.tree.structure(loaded) == jax.tree.structure(kernels)
    for stored_table, table in zip(jax.tree.leaves(loaded), jax.tree.leaves(kernels), strict=True):
        np.testing.assert_array_equal(stored_table, np.asarray(table))


@pytest.mark.slow  # ~30 s on 2 busy cores: compiles the sampler and kernels for a new graph
def test_product_kernels_and_int32_tokens_round_trip(tmp_path):
    graph_config = experiment1_graph_config(2, 2, 300, alpha_x=0.5, alpha_z=0.5, kernel="product")
    dataset = generate(tmp_path, graph_config, num_train=3, num_test=0, length=4, shard_size=4)
    graph = GraphSpec.from_config(graph_config)
    kernels = sample_kernels(jax.random.key(PARAMETERS["seed"]), graph)
    for stored_table, table in zip(jax.tree.leaves(dataset.kernels), jax.tree.leaves(kernels), strict=True):
        np.testing.assert_array_equal(stored_table, np.asarray(table))
    assert dataset.train.dtype == np.int32 and dataset.meta["dtype"] == "int32" and dataset.test.shape == (0, 4)
    expected = sample_tokens(data.shard_key(PARAMETERS["data_seed"], "train", 0), graph, kernels, 3, 4)
    np.testing.assert_array_equal(np.asarray(dataset.train), np.asarray(expected))


def test_corrupt_shard_is_named_and_verify_false_opts_out(dataset_copy):
    shard = dataset_copy / "train_00001.npy"
    content = bytearray(shard.read_bytes())
    content[-1] ^= 1  # one token of the last row
    shard.write_bytes(bytes(content))
    with pytest.raises(data.DatasetError, match="train_00001.npy: sha256 does not match"):
        data.load_dataset(dataset_copy)
    assert len(data.load_dataset(dataset_copy, verify=False).train) == 21


def test_truncated_shard_is_named_even_without_verification(dataset_copy):
    shard = dataset_copy / "test_00000.npy"
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(data.DatasetError, match="test_00000.npy"):
        data.load_dataset(dataset_copy, verify=False)


def test_shard_of_the_wrong_shape_is_named(dataset_copy):
    np.save(dataset_copy / "train_00002.npy", np.zeros((4, 12), np.uint8))
    message = r"train_00002.npy: holds uint8 \(4, 12\), meta.json says uint8 \(5, 12\)"
    with pytest.raises(data.DatasetError, match=message):
        data.load_dataset(dataset_copy, verify=False)


def test_missing_and_corrupt_meta_json(dataset_copy):
    (dataset_copy / "meta.json").write_text('{"format": 1, "graph"')
    with pytest.raises(data.DatasetError, match="meta.json: unreadable or corrupt JSON"):
        data.load_dataset(dataset_copy)
    (dataset_copy / "meta.json").write_text('{"format": 1}')
    with pytest.raises(data.DatasetError, match="meta.json: missing or malformed field 'graph'"):
        data.load_dataset(dataset_copy)
    (dataset_copy / "meta.json").unlink()
    with pytest.raises(data.DatasetError, match="meta.json not found: .* is not a finished dataset"):
        data.load_dataset(dataset_copy)


def test_interrupted_generation_resumes_bit_for_bit(dataset_dir, tmp_path):
    class Interrupt(Exception):
        pass

    def interrupt_after_two(event):
        if event.sequences_done >= 16:
            raise Interrupt

    with pytest.raises(Interrupt):
        generate(tmp_path, progress=interrupt_after_two)
    assert not (tmp_path / "meta.json").exists()
    with pytest.raises(data.DatasetError, match="generation was interrupted: rerun it to resume"):
        data.load_dataset(tmp_path)
    # A finished shard damaged on disk is re-verified and sampled again, not trusted.
    (tmp_path / "train_00001.npy").write_bytes(b"garbage")
    events = []
    generate(tmp_path, progress=events.append)
    assert [(event.file, event.from_disk) for event in events] == [
        ("train_00000.npy", True), ("train_00001.npy", False), ("train_00002.npy", False), ("test_00000.npy", False)]
    assert files_of(tmp_path) == files_of(dataset_dir)  # no temporary or progress file left, every byte equal


def test_refuses_other_parameters_in_a_finished_or_partial_dataset(dataset_copy, tmp_path):
    message = r"holds a finished dataset with other parameters \(num_sequences.train: 21 there, 22 asked"
    with pytest.raises(data.DatasetError, match=message):
        generate(dataset_copy, num_train=22)
    generate(dataset_copy)  # the same parameters: nothing to do
    other_graph = experiment1_graph_config(2, 2, 5, alpha_x=0.25, alpha_z=0.5)

    def stop(event):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "partial", progress=stop)
    with pytest.raises(data.DatasetError, match=r"unfinished dataset with other parameters \(graph.nodes\[2\].alpha"):
        generate(tmp_path / "partial", other_graph)


def test_incompatible_dataset_is_refused_naming_the_field(dataset_dir):
    dataset = data.load_dataset(dataset_dir, verify=False)
    data.check_compatible(dataset, GRAPH, 12, seed=3)
    with pytest.raises(data.DatasetError, match=r"length: 12 there, 16 asked"):
        data.check_compatible(dataset, GRAPH, 16)
    with pytest.raises(data.DatasetError, match=r"graph.nodes\[2\].states: 5 there, 6 asked"):
        data.check_compatible(dataset, experiment1_graph_config(2, 2, 6, alpha_x=0.5, alpha_z=0.5), 12)
    with pytest.raises(data.DatasetError, match=r"seed: 3 there, 0 asked"):
        data.check_compatible(dataset, GRAPH, 12, seed=0)
    # A graph with another number of nodes differs as a whole list: shown cut short, on one line.
    with pytest.raises(data.DatasetError, match=r"graph.nodes: \[.{50,60}\.\.\. there") as refused:
        data.check_compatible(dataset, experiment1_graph_config(4, 2, 5, alpha_x=0.5, alpha_z=0.5), 12)
    assert len(str(refused.value)) < 400 and "\n" not in str(refused.value)


def test_batches_are_pure_in_step_and_cover_every_sequence_once_per_epoch():
    num_sequences, batch_size = 10, 4
    stream = np.concatenate([data.batch_indices(step, batch_size=batch_size, seed=5, num_sequences=num_sequences)
                             for step in range(15)])  # 60 positions = 6 epochs; steps 2, 7, 12 straddle two
    for epoch in range(6):
        epoch_indices = stream[epoch * num_sequences:(epoch + 1) * num_sequences]
        np.testing.assert_array_equal(np.sort(epoch_indices), np.arange(num_sequences))
        np.testing.assert_array_equal(epoch_indices, data.epoch_permutation(5, epoch, num_sequences))
    # Two epochs share their order with probability 1/10! per pair: distinct orders show the reshuffle.
    assert len({tuple(stream[e * 10:(e + 1) * 10]) for e in range(6)}) == 6
    np.testing.assert_array_equal(data.batch_indices(7, batch_size=4, seed=5, num_sequences=10), stream[28:32])
    assert not np.array_equal(data.batch_indices(7, batch_size=4, seed=6, num_sequences=10), stream[28:32])
    # A batch larger than the data set spans several whole epochs.
    big = data.batch_indices(0, batch_size=25, seed=5, num_sequences=10)
    third_epoch_start = np.isin(np.arange(10), data.epoch_permutation(5, 2, 10)[:5])
    np.testing.assert_array_equal(np.bincount(big, minlength=10), 2 + third_epoch_start)
    np.testing.assert_array_equal(big[:20], stream[:20])


def test_file_batch_reads_a_prefix_of_the_training_split(dataset_dir):
    train = data.load_dataset(dataset_dir, verify=False).train
    all_tokens = np.asarray(train)
    for step in (0, 1, 5):
        indices = data.batch_indices(step, batch_size=6, seed=1, num_sequences=9)
        assert indices.max() < 9
        np.testing.assert_array_equal(data.file_batch(train, step, batch_size=6, seed=1, num_sequences=9),
                                      all_tokens[indices])
    with pytest.raises(ValueError, match=r"config.data.num_sequences=22: must be between 1 and the 21 sequences"):
        data.file_batch(train, 0, batch_size=6, seed=1, num_sequences=22)


def test_sharded_placement_equals_unsharded_and_each_device_reads_its_rows(dataset_dir):
    train = data.load_dataset(dataset_dir, verify=False).train
    mesh = parallel.data_parallel_mesh()
    rows_read = []
    original_take = train.take

    def counting_take(indices):
        rows_read.append(len(indices))
        return original_take(indices)

    train.take = counting_take
    batch = data.device_batch(train, 3, batch_size=16, seed=2, num_sequences=21, sharding=parallel.batch_sharded(mesh))
    assert jax.device_count() == 8 and rows_read == [2] * 8
    expected = data.file_batch(train, 3, batch_size=16, seed=2, num_sequences=21)
    assert batch.sharding == parallel.batch_sharded(mesh)
    np.testing.assert_array_equal(np.asarray(batch), expected)
    for shard in batch.addressable_shards:
        np.testing.assert_array_equal(np.asarray(shard.data), expected[shard.index])
    stream = data.FileBatches(train, batch_size=16, seed=2, num_sequences=21, sharding=parallel.batch_sharded(mesh))
    np.testing.assert_array_equal(np.asarray(stream.batch(3)), expected)


def test_data_size_grid_and_config():
    assert data.data_size_grid("paper")[0] == 30 and data.data_size_grid("paper")[-1] == 1_000_000
    # The largest training set of the sweep plus the validation sequences that training keeps apart.
    assert data_config.get_config().num_train == max(data.data_size_grid("cpu")) + 64
    paper = data_config.get_config("size=paper,family=eight_by_four")
    assert (paper.num_train, paper.length) == (1_000_000 + 256, 4096)
    assert GraphSpec.from_config(paper.graph).vocab_size == 64
    with pytest.raises(ValueError, match="family=.ring.: valid values are base, four_by_four"):
        data_config.get_config("family=ring")


def test_command_line_config_typo_is_one_line():
    command = [sys.executable, "-m", "gssm_jax.cli.generate_data", "--config=configs/data.py", "--workdir=unused",
               "--config.num_trian=6"]
    typo = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert typo.returncode == 2 and typo.stderr.strip().count("\n") == 0 and "num_trian" in typo.stderr


@pytest.mark.slow  # ~15-30 s: a fresh process compiles the sampler
def test_command_line_generates_verifies_and_reports_progress(tmp_path):
    command = [sys.executable, "-m", "gssm_jax.cli.generate_data", "--config=configs/data.py", f"--workdir={tmp_path}",
               "--config.num_train=6", "--config.num_test=0", "--config.length=8", "--config.shard_size=3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "train_00001.npy written: 6/6 sequences" in result.stderr and "checksums verified" in result.stderr
    assert len(data.load_dataset(tmp_path).train) == 6
    rerun = subprocess.run([*command, "--skip_verify"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "checksums verified" not in rerun.stderr, rerun.stderr
