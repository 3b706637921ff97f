"""A thin wrapper over orbax's `CheckpointManager`: the one file to change when orbax v1 lands.

A checkpoint is `Composite(state=<train state pytree>, config=<config as JSON>)` in
`workdir/checkpoints/<step>/`. Saves are asynchronous (orbax copies the arrays to host memory before
`save` returns, so the caller may donate them right after) and atomic: a save killed half-way
leaves a temporary directory that the manager ignores, so the latest *committed* step is always
restorable.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from gssm_jax.errors import UserError


class Checkpoints:
    """Saves and restores the train state of one run directory.

    Args:
      directory: `workdir/checkpoints`; created if missing.
      keep: number of most recent checkpoints kept on disk (>= 1).
    """

    def __init__(self, directory: str, keep: int):
        if keep < 1:
            raise UserError(f"config.train.keep_checkpoints={keep}; keep at least 1 checkpoint")
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def latest_step(self) -> int | None:
        """The step of the newest committed checkpoint, or None."""
        return self.manager.latest_step()

    def save(self, step: int, state: Any, config: dict) -> None:
        """Starts an asynchronous save of `state` (any pytree of arrays) and `config` (JSON-able) at `step`."""
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config)),
            force=True,
        )

    def restore(self, step: int, like: Any = None) -> Any:
        """Restores the state saved at `step`.

        With `like` (a pytree of arrays), the result has its structure, shapes, dtypes and shardings;
        without, the arrays come back as saved, on the default device (for inspection).
        """
        abstract = None
        if like is not None:
            abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        return restored.state

    def close(self) -> None:
        """Waits for pending saves to commit, then releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()
