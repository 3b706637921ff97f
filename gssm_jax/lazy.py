"""Lazy re-exports for the package `__init__` files (PEP 562): a name is imported on first use.

`import gssm_jax.difficulty.sides` runs `gssm_jax/difficulty/__init__.py` first; with eager re-exports that
would import the measurer and JAX (about 3 s) before a config could even be checked. Each subpackage
therefore lists its everyday names here and pays for a module only when one of its names is used, so a
command line fails on a bad flag before anything heavy is imported (`tests/cli/test_startup.py`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def exports(package: str, names: Mapping[str, Sequence[str]]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for `package`, re-exporting `names` (defining module -> its public names).

    A name equal to its module's last component (`"gssm_jax.learners.registry": ("registry",)`) is the module.
    """
    where = {name: module for module, listed in names.items() for name in listed}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(where[name])
        value = module if where[name].rpartition(".")[2] == name else getattr(module, name)
        setattr(sys.modules[package], name, value)  # later uses are plain attribute lookups
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__
