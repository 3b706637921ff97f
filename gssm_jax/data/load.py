"""Opening a finished dataset: verify its files against meta.json, memory-map its shards.

Format: `gssm_jax.data.format`. Loading verifies every checksum unless told not to, and
`check_compatible` refuses a dataset generated for another graph, length or kernel seed.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import numpy as np

from gssm_jax.data.format import (
    FORMAT_VERSION,
    META_FILE,
    PROGRESS_FILE,
    SPLITS,
    DatasetError,
    canonical_graph,
    check_same,
    file_sha256,
    load_kernels,
    read_json,
)
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.gssm.kernels import Kernels


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
    meta = read_json(meta_path)
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
    if verify and file_sha256(path) != sha256:
        raise DatasetError(f"{path}: sha256 does not match meta.json (corrupt or modified); regenerate the "
                           "dataset, or read it anyway: --config.data.verify=False (gssm-train), --skip_verify "
                           "(gssm-generate-data), verify=False (load_dataset)")


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
    check_same(dataset.meta, asked, f"dataset {dataset.directory} was generated",
                fix="point config.data.path at a dataset generated for this run (gssm-generate-data)")

