"""Which runs of the sweep train together, and how many processes train at once.

Runs of one program (`Cell.program`: the same graph family and model entry, so the same length, learner and
shapes; any measure, side, seed and learning rate) differ only in kernels, seeds and scalars, so they train as
one ensemble (`gssm_jax.training.loop.train_ensemble`). `config.experiment1.ensemble` sets how many:

* "auto": on an accelerator as many as fit `config.train.memory_budget_gib` per device by the compiled memory of
  the ensemble program (`gssm_jax.training.memory.ensemble_memory`, halving until it fits); on a CPU one, where
  XLA's batched matmuls of a vmapped step lose to separate runs (benchmarks/RESULTS.md, "Sweep");
* "off": one run each;
* a number: at most that many runs per program.

A program's runs are split into ensembles of nearly equal size. `config.experiment1.workers` is how many local
processes train at once ("auto": `AUTO_CPU_WORKERS` on a CPU, one on an accelerator, which a single process
owns; or a number).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import ml_collections

from gssm_jax.errors import UserError

GIB = 2**30
# Local training processes on a CPU with "auto": separate processes share the cores better than one process's
# thread pool at the sweep's small shapes (benchmarks/RESULTS.md, "Sweep").
AUTO_CPU_WORKERS = 2


def _setting(config: ml_collections.ConfigDict, field: str, words: tuple[str, ...]) -> str | int:
    value = str(config.experiment1[field]).strip()
    if value in words:
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise UserError(f"config.experiment1.{field}={value!r}: give {' or '.join(words)} or a whole number >= 1")


def check_settings(config: ml_collections.ConfigDict) -> None:
    """Refuses a bad `config.experiment1.ensemble` or `.workers` in one line naming the field."""
    _setting(config, "ensemble", ("auto", "off"))
    _setting(config, "workers", ("auto",))


def _on_cpu() -> bool:
    import jax  # noqa: PLC0415 (the backend is asked only when a sweep trains)

    return jax.default_backend() == "cpu"


def ensemble_limit(config: ml_collections.ConfigDict, example: ml_collections.ConfigDict, runs: int,
                   memory: Callable[[ml_collections.ConfigDict, int], int] | None = None) -> int:
    """The most runs of `example`'s program to train as one ensemble, out of `runs` waiting (>= 1).

    memory: `(run config, members) -> bytes per device` of the compiled ensemble program (default: compiled by
      `gssm_jax.training.memory.ensemble_memory`); asked only with "auto" on an accelerator.
    """
    setting = _setting(config, "ensemble", ("auto", "off"))
    if setting == "off" or runs <= 1:
        return 1
    if isinstance(setting, int):
        return min(setting, runs)
    if _on_cpu():
        return 1
    if memory is None:
        from gssm_jax.training.memory import ensemble_memory  # noqa: PLC0415

        def memory(run, members):
            return ensemble_memory(run, members).total_bytes
    budget = config.train.memory_budget_gib * GIB
    members = runs
    while members > 1 and memory(example, members) > budget:
        members = math.ceil(members / 2)
    return members


def split(items: Sequence, limit: int) -> list[list]:
    """`items` in order, cut into ceil(len / limit) consecutive pieces of nearly equal size (at most `limit`)."""
    count = math.ceil(len(items) / max(limit, 1))
    bounds = [round(index * len(items) / count) for index in range(count + 1)] if count else [0]
    return [list(items[start:stop]) for start, stop in zip(bounds, bounds[1:], strict=False)]


def workers(config: ml_collections.ConfigDict) -> int:
    """Local processes that train at once."""
    setting = _setting(config, "workers", ("auto",))
    if isinstance(setting, int):
        return setting
    return AUTO_CPU_WORKERS if _on_cpu() else 1
