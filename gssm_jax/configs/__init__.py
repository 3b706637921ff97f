"""Experiment configurations shipped with the package: one file per experiment, each with `get_config(arg)`.

A config is named on the command line by a file path or by the name of a shipped config, with the
optional argument after `:` (`--config=experiment1:size=cpu`, `--config=/path/to/my_config.py:size=tiny`).
A path that does not exist resolves to the shipped config of the same file name, so the commands of a
checkout (`--config=configs/base.py`) work from any directory. From Python: `load("base:size=tiny")`.
"""

from __future__ import annotations

import importlib
import os

import ml_collections

from gssm_jax.errors import UserError

DIRECTORY = os.path.dirname(os.path.abspath(__file__))
_NOT_CONFIGS = ("__init__", "common")


def names() -> tuple[str, ...]:
    """The shipped configs' names (their file names without `.py`)."""
    return tuple(sorted(name[:-3] for name in os.listdir(DIRECTORY)
                        if name.endswith(".py") and name[:-3] not in _NOT_CONFIGS))


def path(name: str) -> str:
    """The file of the shipped config `name`; a ValueError lists the shipped names."""
    if name not in names():
        raise UserError(f"no shipped config named {name!r}; shipped configs are {', '.join(names())}")
    return os.path.join(DIRECTORY, f"{name}.py")


def resolve(spec: str) -> str:
    """`FILE[:ARG]` or `NAME[:ARG]` -> an existing file path, with `:ARG` kept.

    An existing file is kept as given; otherwise the shipped config with the same file name is used
    (`base`, `base.py`, `configs/base.py` and `/anywhere/configs/base.py` all name the shipped `base`).

    Raises:
      ValueError: neither a file nor a shipped config; the message lists the shipped names.
    """
    file, separator, arg = spec.partition(":")
    if os.path.isfile(file):
        return spec
    name = os.path.basename(file)
    name = name[:-3] if name.endswith(".py") else name
    if name not in names():
        raise UserError(f"--config={spec}: no file {file!r} and no shipped config named {name!r}; pass a config "
                        f"file or one of {', '.join(names())}")
    return path(name) + separator + arg


def load(spec: str) -> ml_collections.ConfigDict:
    """The config of `NAME[:ARG]` (a shipped config), as `get_config(ARG)` returns it."""
    name, _, arg = spec.partition(":")
    path(name)  # a clear error for an unknown name
    module = importlib.import_module(f"gssm_jax.configs.{name}")
    return module.get_config(arg or None)
