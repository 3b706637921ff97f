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


class MemberCheckpoints:
    """The checkpoints of an ensemble's members, one `Checkpoints` per run directory, saved and restored together.

    Saves of one step start only after every member's previous save has committed, so after a kill at any
    moment the members share a committed step; `resume_step` is the latest such step, and the members'
    checkpoints after it are deleted (they would be rewritten, bitwise the same, by the resumed run).

    Args:
      directories: each member's `workdir/checkpoints`.
      keep: checkpoints kept on disk per member (>= 1).
    """

    def __init__(self, directories: list[str], keep: int):
        self.members = [Checkpoints(directory, keep) for directory in directories]
        self.saved_step: int | None = None  # the last step saved or restored

    def resume_step(self) -> int:
        """The latest step every member has a checkpoint of (0: none); later checkpoints are deleted."""
        steps = set.intersection(*(set(member.manager.all_steps()) for member in self.members))
        step = max(steps, default=0)
        for member in self.members:
            for later in [saved for saved in member.manager.all_steps() if saved > step]:
                member.manager.delete(later)
        self.saved_step = step or None
        return step

    def save(self, step: int, states: list[Any], configs: list[dict]) -> None:
        """Saves every member's state at `step` (asynchronously, after the previous saves have committed)."""
        for member in self.members:
            member.manager.wait_until_finished()
        for member, state, config in zip(self.members, states, configs, strict=True):
            member.save(step, state, config)
        self.saved_step = step

    def restore(self, step: int, like: Any) -> list[Any]:
        """Every member's state saved at `step`, shaped like `like` (one member's state)."""
        return [member.restore(step, like) for member in self.members]

    def close(self) -> None:
        for member in self.members:
            member.close()
