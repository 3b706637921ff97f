"""Does the train step fit in memory? Read from XLA's compiled executable, before the first step runs.

`jax.jit(step).lower(...).compile().memory_analysis()` states the bytes one device needs for the
step's arguments (parameters, optimizer state, the batch), its outputs and its temporaries
(activations kept for the backward pass, attention scores, gradients). Their sum against a stated
budget (`config.train.memory_budget_gib`) turns an out-of-memory crash hours into a run into a
one-line error at start, naming the fields that shrink the step. The compilation is the one the
first step needs anyway (JAX caches it), so the check itself costs no extra compile.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import ml_collections

from gssm_jax import parallel
from gssm_jax.errors import UserError
from gssm_jax.gssm.graph import token_dtype

GIB = 2**30


class MemoryBudgetError(UserError):
    """The train step needs more memory per device than the budget; the message names the fields to change."""


class StepMemory(NamedTuple):
    """Bytes one device needs for a compiled step (XLA's `memory_analysis`)."""

    temp_bytes: int
    argument_bytes: int
    output_bytes: int

    @property
    def total_bytes(self) -> int:
        """temp + arguments + outputs: an upper bound (donated outputs may reuse argument buffers)."""
        return self.temp_bytes + self.argument_bytes + self.output_bytes

    def describe(self) -> str:
        return (f"{self.total_bytes / GIB:.3g} GiB per device (temporaries {self.temp_bytes / GIB:.3g}, "
                f"arguments {self.argument_bytes / GIB:.3g}, outputs {self.output_bytes / GIB:.3g})")


def step_memory(compiled: jax.stages.Compiled) -> StepMemory:
    """The per-device memory of a compiled executable."""
    analysis = compiled.memory_analysis()
    return StepMemory(int(analysis.temp_size_in_bytes), int(analysis.argument_size_in_bytes),
                      int(analysis.output_size_in_bytes))


def train_step_memory(train_step: jax.stages.Wrapped, state: Any, batch_size: int, length: int, vocab_size: int,
                      mesh: jax.sharding.Mesh) -> StepMemory:
    """Compiles (does not run) `train_step(state, tokens)` for a (batch_size, length) batch split over `mesh`."""
    tokens = jax.ShapeDtypeStruct((batch_size, length), token_dtype(vocab_size),
                                  sharding=parallel.batch_sharded(mesh))
    return step_memory(train_step.lower(state, tokens).compile())


def check_train_step(config: ml_collections.ConfigDict, train_step: jax.stages.Wrapped, state: Any,
                     vocab_size: int, mesh: jax.sharding.Mesh) -> StepMemory | None:
    """Raises MemoryBudgetError (one line) if the step needs more than config.train.memory_budget_gib per device.

    A budget of 0 skips the check (returns None).
    """
    budget = config.train.memory_budget_gib
    if not budget:
        return None
    memory = train_step_memory(train_step, state, config.data.batch_size, config.data.length, vocab_size, mesh)
    if memory.total_bytes > budget * GIB:
        per_device = config.data.batch_size // mesh.devices.size
        raise MemoryBudgetError(
            f"the train step needs {memory.describe()} > config.train.memory_budget_gib={budget:g}: lower "
            f"config.data.batch_size (now {per_device} sequences per device) or config.data.length "
            f"(now {config.data.length}), set config.model.remat=True (now {config.model.remat}) or "
            f"config.model.attention=auto or blockwise (now {config.model.attention}), or raise the budget")
    return memory
