"""The dataset format on disk: file names, the shard keys, the kernels file, metadata checks.

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

Every file is written by `gssm_jax.files` (temporary name, fsync, rename, directory fsync). After each
shard, `progress.json` records it; rerunning an interrupted generation re-verifies the recorded shards and
samples the rest (`gssm_jax.data.generate`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import io
import json
import os
import pathlib
from typing import Any

import numpy as np

from gssm_jax.errors import UserError, shortened
from gssm_jax.gssm.graph import GraphSpec, token_dtype
from gssm_jax.gssm.kernels import Kernels
from gssm_jax.keys import SPLIT_IDS, shard_key

FORMAT_VERSION = 1
SPLITS = ("train", "test")
META_FILE = "meta.json"
KERNELS_FILE = "kernels.npz"
PROGRESS_FILE = "progress.json"
# Re-exported here: the shards' token dtype, the splits' ids and the shards' keys (`gssm_jax.keys`).
__all__ = ["SPLIT_IDS", "shard_key", "token_dtype"]


class DatasetError(UserError):
    """A dataset directory that cannot be used as asked; the message names the file or field and the fix."""


def shard_rows(num_sequences: int, shard_size: int) -> list[int]:
    """Rows of each shard of a split: `shard_size` each, the last one the remainder."""
    full, rest = divmod(num_sequences, shard_size)
    return [shard_size] * full + ([rest] if rest else [])


def shard_file(split: str, shard_index: int) -> str:
    return f"{split}_{shard_index:05d}.npy"


def canonical_graph(graph: GraphSpec) -> dict:
    """The graph as a plain dict with every field explicit (aliases resolved), in config order."""
    return {"nodes": [{**dataclasses.asdict(node), "parents": list(node.parents)} for node in graph.nodes]}


def npy_bytes(array: np.ndarray) -> memoryview:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getbuffer()


def kernels_bytes(graph: GraphSpec, kernels: Kernels) -> memoryview:
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


def file_sha256(path: pathlib.Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def read_json(path: pathlib.Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: unreadable or corrupt JSON ({error}); regenerate the dataset") from None
    if not isinstance(value, dict):
        raise DatasetError(f"{path}: expected a JSON object; regenerate the dataset")
    return value


def library_version(package: str = "gssm_jax") -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def check_same(found: dict, asked: dict, what: str, fix: str = "delete it or choose another directory") -> None:
    differences = _differences(found, asked)
    if differences:
        # A differing value can be a whole graph: each is cut to 60 characters to keep the message one line.
        shown = "; ".join(f"{field}: {shortened(repr(theirs), 60)} there, {shortened(repr(ours), 60)} asked"
                          for field, theirs, ours in differences[:3])
        raise DatasetError(f"{what} with other parameters ({shown}); {fix}")


def _differences(found: Any, asked: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted field, found value, asked value) for every leaf where the two JSON-like trees differ."""
    if isinstance(asked, dict) and isinstance(found, dict):
        return [d for key in asked for d in _differences(found.get(key), asked[key], f"{path}.{key}" if path else key)]
    if isinstance(asked, list) and isinstance(found, list) and len(asked) == len(found):
        pairs = enumerate(zip(found, asked, strict=True))
        return [d for i, (theirs, ours) in pairs for d in _differences(theirs, ours, f"{path}[{i}]")]
    return [] if found == asked else [(path, found, asked)]

