"""The runs of an Experiment 1 program, and the step program timed as the training loop runs it.

`member_configs` gives the training configs of M runs of one program of the sweep (one graph, one model entry:
both sides alternating, seeds 0, 0, 1, 1, ...), exactly as `gssm_jax.experiment1.plan.run_config` writes them.
`TimedProgram` builds their `gssm_jax.training.members.Ensemble` (a solo run is an ensemble of one) and times
`Ensemble.run`, the call the loop makes: K steps per call (`schedule.timeline(run).call_steps`), each step's
batch sampled inside the program for every member, calls dispatched back to back and waited on at the end
of each repetition. Compile time is measured apart, before the first call.
"""

from __future__ import annotations

import statistics
import time

import jax
import ml_collections

from gssm_jax.configs import experiment1
from gssm_jax.difficulty.sides import get_side
from gssm_jax.experiment1.plan import Cell, run_config
from gssm_jax.gssm.families import get_family
from gssm_jax.learners import transformer
from gssm_jax.training import members, memory, schedule
from gssm_jax.training.run import resolve


def sweep_config(graph: str, size: str) -> ml_collections.ConfigDict:
    """`experiment1:graph=<graph>,size=<size>`, the config the sweep plans its runs from."""
    return experiment1.get_config(f"graph={graph},size={size}")


def member_configs(config: ml_collections.ConfigDict, members_count: int, workdir: str = "runs/benchmark"
                   ) -> list[ml_collections.ConfigDict]:
    """The training configs of `members_count` runs of the first (graph, model entry) program of `config`.

    Member k is side k % 2 (of config.experiment1.sides) and graph seed k // 2; its alphas are the side's small
    alpha and the family's reference alpha_Z as the calibrated one (the shapes, not the alphas, set the time).
    Each run directory is `<workdir>/runs/...`, as the sweep names it (nothing is written here).
    """
    graph, model = config.experiment1.graphs[0], next(iter(config.experiment1.models))
    sides, measure = config.experiment1.sides, config.calibration.measures[0]
    free_alpha = get_family(graph).reference[1]
    configs = []
    for k in range(members_count):
        cell = Cell(measure, graph, sides[k % len(sides)], k // len(sides), model)
        configs.append(run_config(config, cell, get_side(cell.side).alphas(free_alpha), workdir))
    return configs


class TimedProgram:
    """The ensemble of `configs` with its K-step program compiled and warmed up, ready to be timed.

    Attributes: ensemble, setup_s (its kernels, sampling tables and eval sets), compile_s, memory (the
    compiled program's `memory.StepMemory` per device), tokens_per_call (every member's tokens of one call).
    """

    def __init__(self, configs: list[ml_collections.ConfigDict]):
        started = time.perf_counter()
        self.ensemble = members.Ensemble([resolve(config, None) for config in configs])
        self.setup_s = time.perf_counter() - started
        self.steps = self.ensemble.timeline.call_steps
        started = time.perf_counter()
        self.ensemble.program.compiled(self.steps)
        self.compile_s = time.perf_counter() - started
        # The ensemble's own compiled program: `memory.ensemble_memory` finds it in the step-program cache.
        self.memory = memory.ensemble_memory(configs[0], len(configs))
        self.tokens_per_call = len(configs) * self.steps * self.ensemble.runs[0].tokens_per_step
        self.state = self.ensemble.initial_state()
        self.calls_made = 0
        self.train(1)  # warm-up: first touch of every buffer

    def train(self, calls: int) -> int:
        """Dispatches `calls` K-step calls back to back, waits for the last; the tokens trained (all members)."""
        num_steps, metrics = self.ensemble.timeline.num_steps, None
        for _ in range(calls):
            # Any start on the schedule's grid: it only picks the learning rates of the call.
            start = (self.calls_made * self.steps) % (num_steps - self.steps + 1)
            self.state, metrics = self.ensemble.run(self.state, start, self.steps)
            self.calls_made += 1
        jax.block_until_ready((self.state, metrics))
        return calls * self.tokens_per_call

    def row(self, calls: int, repeats: int) -> dict:
        """`{"members", "call_steps" (K), "tokens_per_s" (aggregate over the members: median of `repeats`
        repetitions of `calls` calls), "per_member_tokens_per_s", "call_s", "compile_s", "setup_s", "memory"}`."""
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.train(calls)
            seconds.append((time.perf_counter() - start) / calls)
        call_s = float(statistics.median(seconds))
        tokens_per_s = self.tokens_per_call / call_s
        return {"members": self.ensemble.members, "call_steps": self.steps, "tokens_per_s": tokens_per_s,
                "per_member_tokens_per_s": tokens_per_s / self.ensemble.members, "call_s": call_s,
                "compile_s": self.compile_s, "setup_s": self.setup_s, "memory": self.memory}


def time_program(configs: list[ml_collections.ConfigDict], calls: int, repeats: int) -> dict:
    """`TimedProgram(configs).row(calls, repeats)`: the step program of the ensemble of `configs`, timed."""
    return TimedProgram(configs).row(calls, repeats)


def describe(config: ml_collections.ConfigDict) -> str:
    """One line: graph, T, batch, model shape, compute dtype and attention of the first run of `config`."""
    run = resolve(member_configs(config, 1)[0], None)
    shape = run.shape
    text = (f"{config.experiment1.graphs[0]}, T={run.data.length}, batch {run.data.batch_size} per run, "
            f"{shape.depth} x {shape.width}")
    if isinstance(shape, transformer.TransformerConfig):
        text += f" ({shape.heads} heads, attention {transformer.check_attention(shape, run.data.length).name})"
    return f"{text}, {shape.dtype}, K={schedule.timeline(run).call_steps} steps per call"
