"""Every size=paper step program fits 40 GiB per device (compiled, not run), and one that cannot fit fails at start."""

import time

import jax
import pytest

from gssm_jax.configs import base, experiment1
from gssm_jax.training import loop, memory
from gssm_jax.training.run import ConfigError

BUDGET_GIB = 40.0
NUM_DEVICES = 8  # per-device batch = global batch / 8, as on one 8-accelerator host


def _paper_configs():
    """(name, config) for every size=paper shape in configs/: base, and Experiment 1's graphs x model sizes."""
    yield "base", base.get_config("size=paper")
    for graph in ("four_by_four", "eight_by_four"):
        for model, fields in experiment1.MODELS["paper"].items():
            config = experiment1.get_config(f"graph={graph},size=paper")
            config.model.update(fields)
            yield f"experiment1 {graph} {model}", config


PAPER = dict(_paper_configs())
# One shape per config file in the default suite (the largest of experiment1); the rest are slow.
DEFAULT = ("base", "experiment1 eight_by_four base")


def _step_memory(config) -> memory.StepMemory:
    """The memory of the run's program (a solo run: one member) on one device with 1/8 of the batch.

    (XLA's CPU partitioner reports more per device for the 8-way split program than for this one: 31 vs 17 GiB
    at size=paper's base shape, the same before and after the step moved into the scanned program.)
    """
    config.data.batch_size //= NUM_DEVICES
    return memory.ensemble_memory(config, 1, devices=jax.devices()[:1])


@pytest.mark.parametrize("name", [pytest.param(name, marks=() if name in DEFAULT else pytest.mark.slow)
                                  for name in PAPER])
def test_paper_shapes_fit_40_gib_per_device(name):
    started = time.perf_counter()
    needed = _step_memory(PAPER[name])
    print(f"{name}: {needed.describe()}, compiled in {time.perf_counter() - started:.1f} s")
    assert needed.total_bytes <= BUDGET_GIB * memory.GIB, f"{name}: {needed.describe()}"


def test_a_step_over_budget_fails_at_start_naming_the_fields(tmp_path):
    # The reference attention at T=2048 keeps (batch, heads, T, T) float32 scores per layer: far over 1 GiB.
    config = base.get_config("size=cpu")
    config.data.length, config.model.attention, config.train.memory_budget_gib = 2048, "xla", 1.0
    started = time.perf_counter()
    with pytest.raises(ConfigError) as raised:
        loop.train_and_evaluate(config, str(tmp_path))
    message = str(raised.value)
    assert "\n" not in message and "config.train.memory_budget_gib=1" in message
    for field in ("config.data.batch_size", "config.data.length", "config.model.remat", "config.model.attention"):
        assert field in message
    assert time.perf_counter() - started < 60 and not (tmp_path / "metrics.jsonl").exists()
