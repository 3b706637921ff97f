"""Finite datasets on disk: generate once, verify on load, read shuffled batches that are pure in (seed, step).

A dataset directory holds

* `meta.json`, written last: parameters (canonical graph config, kernel seed, data seed, sequences per
  split, length, shard size), token dtype, library and JAX versions, and every shard's file name,
  shape and sha256. A directory without `meta.json` is never read as a dataset.
* `kernels.npz`: the kernels the sequences were sampled from, so the exact entropy can be recomputed:
  key `NAME` for a fullrank node (array `(*input_sizes, states)`), keys `NAME.I.INPUT` for the I-th
  table `(input_size, states)` of a product node (`INPUT` = `graph.inputs(NAME)[I]`).
* `train_00000.npy`, ..., `test_00000.npy`: tokens `(rows, length)`, uint8 when V <= 256 else int32,
  memory-mappable. Shard i of a split holds `shard_size` sequences (the last one fewer) sampled by
  `sample_tokens(shard_key(data_seed, split, i), ...)`, so a dataset with more sequences and the
  same shard size has this one as its prefix.

Every file is written under a temporary name, fsynced and renamed. After each shard, `progress.json`
records it; rerunning an interrupted generation re-verifies the recorded shards and samples the rest.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import io
import json
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import numpy as np

from gssm_jax.model.graph import GraphSpec
from gssm_jax.model.kernels import Kernels, sample_kernels
from gssm_jax.training import mesh as parallel

FORMAT_VERSION = 1
SPLITS = ("train", "test")
SPLIT_IDS = {"train": 0, "test": 1}  # folded into the data key; never renumber
META_FILE = "meta.json"
KERNELS_FILE = "kernels.npz"
PROGRESS_FILE = "progress.json"
# The seed's n_data grid (sequences in the training set), in half-decades; `cpu` stays laptop-sized.
DATA_SIZE_GRIDS = {
    "paper": (30, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000),
    "cpu": (30, 100, 300, 1_000),
}


class DatasetError(ValueError):
    """A dataset directory that cannot be used as asked; the message names the file or field and the fix."""


class GenerationProgress(NamedTuple):
    """Reported after each finished shard: `file` (name), `sequences_done`/`sequences_total` (both splits),
    `from_disk` (True if the shard was already finished by an earlier, interrupted run)."""

    file: str
    sequences_done: int
    sequences_total: int
    from_disk: bool


def data_size_grid(size: str) -> tuple[int, ...]:
    """Training-set sizes (sequences) of the data-size sweep for `size` in `DATA_SIZE_GRIDS`."""
    if size not in DATA_SIZE_GRIDS:
        raise ValueError(f"size={size!r}: valid sizes are {', '.join(DATA_SIZE_GRIDS)}")
    return DATA_SIZE_GRIDS[size]


def token_dtype(vocab_size: int) -> np.dtype:
    """uint8 when every token fits in a byte, else int32 (DESIGN.md §2)."""
    return np.dtype(np.uint8 if vocab_size <= 256 else np.int32)


def shard_key(data_seed: int, split: str, shard_index: int) -> jax.Array:
    """Key of shard `shard_index` of `split`: fold_in(fold_in(key(data_seed), SPLIT_IDS[split]), shard_index)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(data_seed), SPLIT_IDS[split]), shard_index)


def shard_rows(num_sequences: int, shard_size: int) -> list[int]:
    """Rows of each shard of a split: `shard_size` each, the last one the remainder."""
    full, rest = divmod(num_sequences, shard_size)
    return [shard_size] * full + ([rest] if rest else [])


def shard_file(split: str, shard_index: int) -> str:
    return f"{split}_{shard_index:05d}.npy"


def canonical_graph(graph: GraphSpec) -> dict:
    """The graph as a plain dict with every field explicit (aliases resolved), in config order."""
    return {"nodes": [{**dataclasses.asdict(node), "parents": list(node.parents)} for node in graph.nodes]}


# ---- generation ---------------------------------------------------------------------------------------


def generate_dataset(directory: str | os.PathLike, graph_config: Any, *, seed: int, data_seed: int, num_train: int,
                     num_test: int, length: int, shard_size: int,
                     progress: Callable[[GenerationProgress], None] | None = None) -> Dataset:
    """Samples a dataset into `directory` (created if needed), resuming an interrupted generation.

    Args:
      directory: dataset directory.
      graph_config: graph config accepted by `GraphSpec.from_config`.
      seed: kernel seed: kernels = `sample_kernels(jax.random.key(seed), graph)`.
      data_seed: seed of the sequences (see `shard_key`).
      num_train, num_test: sequences in each split (num_train >= 1, num_test >= 0).
      length: tokens per sequence.
      shard_size: sequences per shard file; also the batch sampled on device at once.
      progress: called with a `GenerationProgress` after each shard.

    Returns:
      the finished dataset (loaded without re-verification).

    Raises:
      DatasetError: `directory` holds a finished or partial dataset with other parameters.
    """
    graph = GraphSpec.from_config(graph_config)
    for name, value, minimum in (("seed", seed, 0), ("data_seed", data_seed, 0), ("num_train", num_train, 1),
                                 ("num_test", num_test, 0), ("length", length, 1), ("shard_size", shard_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise DatasetError(f"{name}={value!r}: must be an integer >= {minimum}")
    parameters = {
        "format": FORMAT_VERSION, "graph": canonical_graph(graph), "seed": int(seed), "data_seed": int(data_seed),
        "num_sequences": {"train": int(num_train), "test": int(num_test)}, "length": int(length),
        "shard_size": int(shard_size),
    }
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / META_FILE).exists():
        _check_same(_read_json(directory / META_FILE), parameters, f"{directory} holds a finished dataset")
        (directory / PROGRESS_FILE).unlink(missing_ok=True)
        return load_dataset(directory, verify=False)

    finished = _verified_progress(directory, parameters)
    dtype = token_dtype(graph.vocab_size)
    kernels = sample_kernels(jax.random.key(seed), graph)
    kernels_record = _write_atomic(directory / KERNELS_FILE, _kernels_bytes(graph, kernels))
    jobs = [(split, index, rows) for split in SPLITS
            for index, rows in enumerate(shard_rows(parameters["num_sequences"][split], shard_size))]
    total = num_train + num_test
    done = 0
    for split, index, rows in jobs:
        if shard_file(split, index) in finished:
            done += rows
            if progress:
                progress(GenerationProgress(shard_file(split, index), done, total, True))

    from gssm_jax.sampling.sampler import sample_tokens, sampling_tables  # lazy: the sampler pulls in jit machinery

    tables = sampling_tables(graph, kernels)  # built once for all shards

    def sample(job: tuple[str, int, int]) -> jax.Array:
        split, index, rows = job
        return sample_tokens(shard_key(data_seed, split, index), graph, tables, rows, length,
                             sharding=_local_batch_sharding(rows))

    pending = [job for job in jobs if shard_file(job[0], job[1]) not in finished]
    for (split, index, rows), tokens in _dispatched_ahead(pending, sample):
        name = shard_file(split, index)
        array = np.asarray(tokens).astype(dtype, copy=False)
        finished[name] = {"shape": list(array.shape), **_write_atomic(directory / name, _npy_bytes(array))}
        _write_atomic(directory / PROGRESS_FILE, _json_bytes({"parameters": parameters, "shards": finished}))
        done += rows
        if progress:
            progress(GenerationProgress(name, done, total, False))

    meta = {
        **parameters,
        "vocab_size": graph.vocab_size,
        "dtype": dtype.name,
        "library_version": _version("gssm_jax"),
        "jax_version": jax.__version__,
        "kernels": {"file": KERNELS_FILE, **kernels_record},
        "shards": {split: [{"file": shard_file(s, i), **finished[shard_file(s, i)]} for s, i, _ in jobs if s == split]
                   for split in SPLITS},
    }
    _write_atomic(directory / META_FILE, _json_bytes(meta))
    (directory / PROGRESS_FILE).unlink()
    return load_dataset(directory, verify=False)


def _dispatched_ahead(jobs: list, sample: Callable) -> Iterator[tuple[Any, jax.Array]]:
    """Yields `(job, sample(job))`, dispatching the next job to the device before yielding the current one,
    so sampling shard i+1 overlaps with writing shard i."""
    previous = None
    for job in jobs:
        current = (job, sample(job))
        if previous is not None:
            yield previous
        previous = current
    if previous is not None:
        yield previous


def _local_batch_sharding(rows: int) -> jax.sharding.Sharding | None:
    """Rows split across this host's devices when they divide evenly (samples are identical either way)."""
    devices = jax.local_devices()
    if len(devices) == 1 or rows % len(devices):
        return None
    return parallel.batch_sharded(parallel.data_parallel_mesh(devices))


def _verified_progress(directory: pathlib.Path, parameters: dict) -> dict[str, dict]:
    """Shards finished by an interrupted run with the same parameters whose files still match their checksum."""
    path = directory / PROGRESS_FILE
    if not path.exists():
        return {}
    record = _read_json(path)
    _check_same(record.get("parameters", {}), parameters, f"{directory} holds an unfinished dataset")
    return {name: entry for name, entry in record.get("shards", {}).items()
            if (directory / name).exists() and _sha256(directory / name) == entry["sha256"]}


def _check_same(found: dict, asked: dict, what: str, fix: str = "delete it or choose another directory") -> None:
    differences = _differences(found, asked)
    if differences:
        shown = "; ".join(f"{field}: {theirs!r} there, {ours!r} asked" for field, theirs, ours in differences[:3])
        raise DatasetError(f"{what} with other parameters ({shown}); {fix}")


def _differences(found: Any, asked: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted field, found value, asked value) for every leaf where the two JSON-like trees differ."""
    if isinstance(asked, dict) and isinstance(found, dict):
        return [d for key in asked for d in _differences(found.get(key), asked[key], f"{path}.{key}" if path else key)]
    if isinstance(asked, list) and isinstance(found, list) and len(asked) == len(found):
        pairs = enumerate(zip(found, asked, strict=True))
        return [d for i, (theirs, ours) in pairs for d in _differences(theirs, ours, f"{path}[{i}]")]
    return [] if found == asked else [(path, found, asked)]


# ---- files --------------------------------------------------------------------------------------------


def _write_atomic(path: pathlib.Path, data: bytes | memoryview) -> dict:
    """Writes `data` to a temporary file, fsyncs it, renames it to `path`, fsyncs the directory.

    Returns:
      `{"sha256": hex digest of data}`.
    """
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return {"sha256": hashlib.sha256(data).hexdigest()}


def _npy_bytes(array: np.ndarray) -> memoryview:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getbuffer()


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=1) + "\n").encode()


def _kernels_bytes(graph: GraphSpec, kernels: Kernels) -> memoryview:
    arrays = {}
    for node in graph.nodes:
        if node.kernel == "fullrank":
            arrays[node.name] = np.asarray(kernels[node.name])
        else:
            for index, (input_name, table) in enumerate(zip(graph.inputs(node.name), kernels[node.name], strict=True)):
                arrays[f"{node.name}.{index}.{input_name}"] = np.asarray(table)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getbuffer()


def load_kernels(path: str | os.PathLike, graph: GraphSpec) -> Kernels:
    """Kernels from a `kernels.npz` (layout in the module docstring), as numpy arrays / tuples of arrays."""
    with np.load(path, allow_pickle=False) as stored:
        return {
            node.name: stored[node.name] if node.kernel == "fullrank" else tuple(
                stored[f"{node.name}.{index}.{input_name}"] for index, input_name in enumerate(graph.inputs(node.name))
            )
            for node in graph.nodes
        }


def _sha256(path: pathlib.Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _read_json(path: pathlib.Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: unreadable or corrupt JSON ({error}); regenerate the dataset") from None
    if not isinstance(value, dict):
        raise DatasetError(f"{path}: expected a JSON object; regenerate the dataset")
    return value


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ---- loading ------------------------------------------------------------------------------------------


class ShardedSplit:
    """The sequences of one split, backed by memory-mapped shard files; reads only the rows asked for.

    Attributes:
      shape: (num_sequences, length).
      dtype: token dtype (uint8 or int32).
    """

    def __init__(self, shards: list[np.ndarray], shard_size: int, length: int, dtype: np.dtype):
        self._shards = shards
        self._shard_size = shard_size
        self.shape = (sum(len(shard) for shard in shards), length)
        self.dtype = dtype

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Tokens `(len(indices), length)` of the sequences at `indices` (int, in [0, len(self)))."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"sequence index out of range [0, {len(self)})")
        tokens = np.empty((indices.size, self.shape[1]), self.dtype)
        shard_of = indices // self._shard_size
        for shard in np.unique(shard_of):
            rows = shard_of == shard
            tokens[rows] = self._shards[shard][indices[rows] - shard * self._shard_size]
        return tokens

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        tokens = np.concatenate(self._shards) if self._shards else np.empty(self.shape, self.dtype)
        return tokens if dtype is None else tokens.astype(dtype)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A finished dataset: `meta` (meta.json), `graph`, `kernels` (numpy), `train` and `test` splits."""

    directory: pathlib.Path
    meta: dict
    graph: GraphSpec
    kernels: Kernels
    train: ShardedSplit
    test: ShardedSplit

    @property
    def length(self) -> int:
        return self.meta["length"]


def load_dataset(directory: str | os.PathLike, *, verify: bool = True) -> Dataset:
    """Opens a finished dataset, memory-mapping its shards.

    Args:
      directory: a directory written by `generate_dataset`.
      verify: recompute every file's sha256 and compare it with meta.json (reads the whole dataset once).

    Raises:
      DatasetError: meta.json missing or corrupt, or a file missing, of the wrong shape/dtype, or (verify)
        with the wrong checksum; the message names the file.
    """
    directory = pathlib.Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.exists():
        hint = " (generation was interrupted: rerun it to resume)" if (directory / PROGRESS_FILE).exists() else ""
        raise DatasetError(f"{meta_path} not found: {directory} is not a finished dataset{hint}")
    meta = _read_json(meta_path)
    try:
        if meta["format"] != FORMAT_VERSION:
            raise DatasetError(f"{meta_path}: format {meta['format']}, this library reads {FORMAT_VERSION}")
        graph = GraphSpec.from_config(meta["graph"])
        length, shard_size, dtype = meta["length"], meta["shard_size"], np.dtype(meta["dtype"])
        kernels_path = directory / meta["kernels"]["file"]
        _check_file(kernels_path, meta["kernels"]["sha256"], verify)
        splits = {}
        for split in SPLITS:
            shards = [_open_shard(directory / entry["file"], entry, dtype, verify) for entry in meta["shards"][split]]
            splits[split] = ShardedSplit(shards, shard_size, length, dtype)
            if len(splits[split]) != meta["num_sequences"][split]:
                raise DatasetError(f"{meta_path}: {split} shards hold {len(splits[split])} sequences, "
                                   f"num_sequences.{split} says {meta['num_sequences'][split]}; regenerate the dataset")
    except (KeyError, TypeError) as error:
        raise DatasetError(f"{meta_path}: missing or malformed field {error}; regenerate the dataset") from None
    try:
        kernels = load_kernels(kernels_path, graph)
    except (OSError, ValueError, KeyError) as error:
        raise DatasetError(f"{kernels_path}: unreadable kernels ({error}); regenerate the dataset") from None
    return Dataset(directory, meta, graph, kernels, splits["train"], splits["test"])


def _check_file(path: pathlib.Path, sha256: str, verify: bool) -> None:
    if not path.exists():
        raise DatasetError(f"{path}: listed in meta.json but missing; regenerate the dataset")
    if verify and _sha256(path) != sha256:
        raise DatasetError(f"{path}: sha256 does not match meta.json (corrupt or modified); regenerate the "
                           f"dataset, or pass verify=False (--skip_verify) to read it anyway")


def _open_shard(path: pathlib.Path, entry: dict, dtype: np.dtype, verify: bool) -> np.ndarray:
    _check_file(path, entry["sha256"], verify)
    try:
        tokens = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: not a readable .npy array (truncated?): {error}; regenerate the dataset") from None
    if tokens.shape != tuple(entry["shape"]) or tokens.dtype != dtype:
        raise DatasetError(f"{path}: holds {tokens.dtype} {tokens.shape}, meta.json says {dtype} "
                           f"{tuple(entry['shape'])}; regenerate the dataset")
    return tokens


def check_compatible(dataset: Dataset, graph_config: Any, length: int, *, seed: int | None = None) -> None:
    """Refuses a dataset generated for another graph, sequence length or (if given) kernel seed.

    Raises:
      DatasetError: naming the first differing fields, the dataset's value and the asked one.
    """
    asked = {"graph": canonical_graph(GraphSpec.from_config(graph_config)), "length": length}
    if seed is not None:
        asked["seed"] = seed
    _check_same(dataset.meta, asked, f"dataset {dataset.directory} was generated",
                fix="point config.data.path at a dataset generated for this run (python -m experiments.generate_data)")


# ---- training from a dataset --------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, num_sequences: int) -> np.ndarray:
    """The order of epoch `epoch`: a permutation of range(num_sequences), int64, read-only.

    Drawn by numpy's PCG64 from `SeedSequence([seed, epoch])`: pure in its arguments, the same on every host.
    """
    permutation = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch]))).permutation(
        num_sequences)
    permutation.flags.writeable = False
    return permutation


def batch_indices(step: int, *, batch_size: int, seed: int, num_sequences: int) -> np.ndarray:
    """Indices (batch_size,) int64 of the training sequences of global step `step`.

    The training stream is the concatenation of epochs 0, 1, 2, ..., epoch e being
    `epoch_permutation(seed, e, num_sequences)`; step s takes its positions s*batch_size ... (s+1)*batch_size - 1.
    So every sequence appears exactly once per epoch, and a batch that straddles an epoch boundary takes the
    end of one epoch and the start of the next. Pure in its arguments: resuming at any step is exact.
    """
    if num_sequences < 1:
        raise ValueError(f"num_sequences={num_sequences}: need at least one training sequence")
    positions = step * batch_size + np.arange(batch_size, dtype=np.int64)
    epochs, offsets = np.divmod(positions, num_sequences)
    indices = np.empty(batch_size, np.int64)
    for epoch in np.unique(epochs):
        in_epoch = epochs == epoch
        indices[in_epoch] = epoch_permutation(seed, int(epoch), num_sequences)[offsets[in_epoch]]
    return indices


def check_num_sequences(split: ShardedSplit, num_sequences: int, field: str = "config.data.num_sequences") -> None:
    """One-line ValueError naming `field` if the split has fewer than `num_sequences` (>= 1) sequences."""
    if not 1 <= num_sequences <= len(split):
        raise ValueError(f"{field}={num_sequences}: must be between 1 and the {len(split)} sequences of the split")


def file_batch(split: ShardedSplit, step: int, *, batch_size: int, seed: int, num_sequences: int) -> np.ndarray:
    """Tokens (batch_size, length) of global step `step`, from the first `num_sequences` sequences of `split`."""
    check_num_sequences(split, num_sequences)
    return split.take(batch_indices(step, batch_size=batch_size, seed=seed, num_sequences=num_sequences))


def device_batch(split: ShardedSplit, step: int, *, batch_size: int, seed: int, num_sequences: int,
                 sharding: jax.sharding.Sharding) -> jax.Array:
    """`file_batch` as a global array with `sharding`; each device's rows are read from disk for that device only."""
    check_num_sequences(split, num_sequences)
    indices = batch_indices(step, batch_size=batch_size, seed=seed, num_sequences=num_sequences)
    return jax.make_array_from_callback((batch_size, split.shape[1]), sharding,
                                        lambda index: split.take(indices[index[0]]))


@dataclasses.dataclass(frozen=True)
class FileBatches:
    """The training stream from a dataset: `batch(step)` is `device_batch` of the first `num_sequences`
    sequences of `split`, shuffled per epoch from `seed`; a drop-in for the on-the-fly stream."""

    split: ShardedSplit
    batch_size: int
    seed: int
    num_sequences: int
    sharding: jax.sharding.Sharding

    def __post_init__(self):
        check_num_sequences(self.split, self.num_sequences)

    def batch(self, step: int) -> jax.Array:
        """Tokens (batch_size, length) of step `step`, rows split as `sharding` says."""
        return device_batch(self.split, step, batch_size=self.batch_size, seed=self.seed,
                            num_sequences=self.num_sequences, sharding=self.sharding)
