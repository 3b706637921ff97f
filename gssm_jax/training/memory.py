"""Does the step program fit in memory? Read from XLA's compiled executable, before the first step runs.

`compiled.memory_analysis()` states the bytes one device needs for the program's arguments (the members'
parameters and optimizer states, the sampling tables or tokens), its outputs and its temporaries
(activations kept for the backward pass, attention scores, gradients, the sampled batch). Their sum
against a stated budget (`config.train.memory_budget_gib`) turns an out-of-memory crash hours into a run
into a one-line error at start, naming the fields that shrink the step. The program checked is the one
the run then executes (`step.StepProgram.compiled`), so the check costs no extra compile.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import ml_collections

from gssm_jax.training import schedule, step
from gssm_jax.training.run import ConfigError, Run, resolve

GIB = 2**30


class MemoryBudgetError(ConfigError):
    """The train step needs more memory per device than the budget; the message names the fields to change."""


class StepMemory(NamedTuple):
    """Bytes one device needs for a compiled program (XLA's `memory_analysis`)."""

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


def program_memory(run: Run, members: int, devices: list[jax.Device] | None = None) -> StepMemory:
    """The per-device memory of the step program of `members` copies of `run` (K steps per call), compiled."""
    mesh = step.ensemble_mesh(members, devices)
    program = step.step_program(step.ProgramShape.of(run, members), mesh)
    return step_memory(program.compiled(schedule.timeline(run).call_steps))


def ensemble_memory(config: ml_collections.ConfigDict, members: int,
                    devices: list[jax.Device] | None = None) -> StepMemory:
    """Compiles (never runs) the ensemble program of `members` copies of `config`; its per-device `StepMemory`.

    devices: the devices of the mesh (default: all), members split over gcd(members, devices) of them.
    """
    return program_memory(resolve(config, None), members, devices)


def check_program(run: Run, program: step.StepProgram, steps: int) -> StepMemory | None:
    """Raises MemoryBudgetError (one line) if the program needs more than run.memory_budget_gib per device.

    A budget of 0 skips the check (returns None). Compiles the program of `steps` steps per call if needed.
    """
    budget = run.memory_budget_gib
    if not budget:
        return None
    memory = step_memory(program.compiled(steps))
    if memory.total_bytes > budget * GIB:
        mesh, model = program.mesh, run.config["model"]
        per_device = run.data.batch_size // mesh.shape["data"]
        members = f"{program.shape.members // mesh.shape['members']} members x " if program.shape.members > 1 else ""
        raise MemoryBudgetError(
            f"the train step needs {memory.describe()} > config.train.memory_budget_gib={budget:g}: lower "
            f"config.data.batch_size (now {members}{per_device} sequences per device) or config.data.length "
            f"(now {run.data.length}), set config.model.remat=True (now {model['remat']}) or "
            f"config.model.attention=auto or blockwise (now {model['attention']}), or raise the budget")
    return memory
