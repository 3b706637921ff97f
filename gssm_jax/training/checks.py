"""The checks of a training config that need no compilation, run before anything is compiled.

`check_config` refuses, with one line naming the field and the fix, everything a user can get wrong
that would otherwise surface seconds or minutes later from deep inside JAX: a workdir that is a file
or not writable, sizes < 1, a batch or held-out set that does not split over the devices, a model
shape its kind cannot build (e.g. heads that do not divide the width), an unknown data source, and a
dataset that is missing, corrupt, or generated for another graph, length or kernel seed.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import ml_collections

from gssm_jax import data, parallel
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.learners import transformer
from gssm_jax.training.step import ConfigError, model_config

SOURCES = ("onfly", "file")
# Fields that count something and must be >= 1.
POSITIVE_FIELDS = ("data.batch_size", "data.length", "eval.num_sequences", "train.num_steps", "train.log_every",
                   "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints")


class CheckedConfig(NamedTuple):
    """What the checks built on the way: the graph, the model shape, and (source "file") the opened dataset."""

    graph: GraphSpec
    shape: Any
    dataset: data.Dataset | None


def check_workdir(workdir: str) -> None:
    """Creates `workdir` if missing; ConfigError if it is a file, cannot be created, or is not writable."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir={workdir} is a file, not a directory; pass a directory path")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--workdir={workdir} cannot be created ({error.strerror}); pass a writable path") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise ConfigError(f"--workdir={workdir} is not writable; pass a directory you can write to")


def _field(config: ml_collections.ConfigDict, dotted: str) -> Any:
    section, name = dotted.split(".")
    return config[section][name]


def check_config(config: ml_collections.ConfigDict, workdir: str | None, mesh: jax.sharding.Mesh) -> CheckedConfig:
    """Runs every check of the module docstring (those of `workdir` unless None); returns what they built.

    Raises:
      ConfigError: (a `UserError`) one line naming the config field, flag or file, and the fix.
    """
    if workdir is not None:
        check_workdir(workdir)
    for dotted in POSITIVE_FIELDS:
        value = _field(config, dotted)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"config.{dotted}={value!r} must be an integer >= 1")
    if config.data.num_sequences < 0:
        raise ConfigError(f"config.data.num_sequences={config.data.num_sequences} must be >= 0 (0: all of them)")
    try:
        graph = GraphSpec.from_config(config.graph)
        shape = model_config(config, graph)
        if isinstance(shape, transformer.TransformerConfig):
            transformer.check_attention(shape, config.data.length)
        parallel.check_batch_divisible(config.data.batch_size, mesh)
        parallel.check_batch_divisible(config.eval.num_sequences, mesh, field="config.eval.num_sequences")
    except ValueError as error:
        raise ConfigError(str(error)) from error
    if config.data.source not in SOURCES:
        raise ConfigError(f"config.data.source={config.data.source!r}; valid sources are {', '.join(SOURCES)}")
    dataset = None
    if config.data.source == "file":
        if not config.data.path:
            raise ConfigError("config.data.source='file' needs config.data.path=DIR, a dataset written by "
                              "gssm-generate-data")
        dataset = data.load_dataset(config.data.path, verify=config.data.verify)
        data.check_compatible(dataset, config.graph, config.data.length, seed=config.seed)
        if config.eval.num_sequences > len(dataset.test):
            raise ConfigError(f"config.eval.num_sequences={config.eval.num_sequences} exceeds the {len(dataset.test)} "
                              f"test sequences of {config.data.path}; lower it or generate a larger test split")
    return CheckedConfig(graph, shape, dataset)
