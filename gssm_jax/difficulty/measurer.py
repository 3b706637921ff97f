"""The difficulty of a graph *setting* (alpha_X, alpha_Z), measured over graph seeds.

For every graph seed s, `Measurer` draws kernels with `sample_kernels(keys.kernel_key(s), graph)`,
samples one batch with `keys.calibration_data_key(s)`, measures it (`gssm_jax.difficulty.measures`,
or the exact entropy rate in nats/token) and returns each seed's value, or the mean over seeds with
its standard error. Each seed may be measured at its own setting. The same seed gives the same keys
at every setting (common random numbers), which is what the calibration search
(`gssm_jax.difficulty.search`) relies on.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from gssm_jax import inference, keys
from gssm_jax.difficulty.measures import (
    check_measure,
    compressed_bits_per_token,
    gzip_bytes_per_token,
    parallel_map,
)
from gssm_jax.errors import UserError
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.gssm.kernels import sample_kernels, sample_node_kernel
from gssm_jax.sampling import sampler
from gssm_jax.statistics import mean_and_stderr

ALPHA_NAMES = ("alpha_X", "alpha_Z")


def with_alphas(graph_config: Mapping[str, Any], alphas: Mapping[str, float]) -> dict:
    """A copy of a graph config with `alpha_X` set on the observed node and `alpha_Z` on every hidden node.

    Args:
      graph_config: `{"nodes": [...]}` accepted by `GraphSpec.from_config`.
      alphas: any of `{"alpha_X": float, "alpha_Z": float}`; missing ones keep the config's values.
    """
    unknown = set(alphas) - set(ALPHA_NAMES)
    if unknown:
        raise UserError(f"unknown alpha names {sorted(unknown)}; valid names are {', '.join(ALPHA_NAMES)}")
    graph = GraphSpec.from_config(graph_config)
    nodes = []
    for node in graph.nodes:
        fields = dataclasses.asdict(node)
        key = "alpha_X" if node.observed else "alpha_Z"
        if key in alphas:
            fields["alpha"] = float(alphas[key])
        nodes.append(fields)
    return {"nodes": nodes}


def graph_at(graph_or_family: Any, alphas: Mapping[str, float]) -> GraphSpec:
    """The graph of a setting: a `GraphFamily` (its `config(alpha_x, alpha_z)`) or a graph config dict."""
    if hasattr(graph_or_family, "config"):
        missing = set(ALPHA_NAMES) - set(alphas)
        if missing:
            raise UserError(f"a graph family needs both alphas; missing {sorted(missing)}")
        return GraphSpec.from_config(graph_or_family.config(alphas["alpha_X"], alphas["alpha_Z"]))
    return GraphSpec.from_config(with_alphas(graph_or_family, alphas))


def sample_seed_batch(graph: GraphSpec, seed: int, batch_size: int, length: int,
                      kernels: dict | None = None) -> tuple[dict, np.ndarray]:
    """Kernels and one token batch of graph seed `seed`.

    Args:
      kernels: the kernels of `sample_kernels(keys.kernel_key(seed), graph)` if already drawn.

    Returns:
      (kernels pytree drawn with `keys.kernel_key(seed)`, tokens `(batch_size, length)` as numpy).
    """
    kernels = sample_kernels(keys.kernel_key(seed), graph) if kernels is None else kernels
    # The sampler reads only graph.structure; passing it keeps the row check (jitted on the graph it is given)
    # to one compilation for every alpha, which matters when each seed of a trial has its own alpha.
    tokens = sampler.sample_tokens(keys.calibration_data_key(seed), graph.structure, kernels, batch_size, length)
    return kernels, np.asarray(tokens)


def entropy_nats_per_token(graph: GraphSpec, kernels: dict, tokens) -> float:
    """Exact entropy rate estimate on `tokens (batch, length)` (mean over the batch), in nats per token."""
    # graph.structure: one compilation of the forward algorithm serves every alpha of a search.
    return float(inference.entropy_rate(graph.structure, kernels, tokens).nats_per_token)


@dataclasses.dataclass(frozen=True)
class Difficulty:
    """A measure of one setting, over graph seeds.

    Attributes:
      mean: mean over seeds, in the measure's unit (`MEASURES`).
      stderr: standard error of the mean over seeds (sample std / sqrt(seeds)); nan for one seed.
      per_seed: the value of every seed, in `seeds` order.
    """

    mean: float
    stderr: float
    per_seed: tuple[float, ...]


Setting = tuple[tuple[str, float], ...]  # a setting's alphas as a hashable, sorted tuple


class Measurer:
    """Measures settings of one graph (family) at fixed seeds and batch shape, remembering what it did.

    Each seed can be measured at its own setting (`per_seed`: a calibration trial measures each seed at its
    own alpha); `measure` is one setting for all seeds. Seed s always draws the same keys (common random
    numbers), so its value at a setting does not depend on the other seeds'. The batches of each seed's
    last `max_cached_settings` settings are kept (entropy then gzip, the compression table sample a setting
    once), values for good. A node's kernel is reused from the seed's previous setting when its alpha did not
    change (the same draw: node i gets the key `fold_in(key(seed), i)`): eight_by_four's X has 65536
    Dirichlet rows (1-2.5 s per seed on 2 CPU cores). Sampling and the forward algorithm run one seed after
    another; the compressions of all seeds in parallel threads.

    Args:
      graph_or_family: a `gssm_jax.gssm.families.GraphFamily` or a graph config dict.
      seeds: graph seeds; seed s draws kernels from `keys.kernel_key(s)` and data from
        `keys.calibration_data_key(s)`.
      batch_size: sequences per seed.
      length: tokens per sequence.
      measures: measures taken together whenever a setting is measured (`__call__`, `per_seed`), so a
        calibration on several measures measures each setting once: their searches share the grid.
      clock: seconds, for `seconds_per_seed` (a fake one in tests).

    Attributes:
      seconds_per_seed: of every measurement that computed something, in order: its wall time divided by
        the number of seeds it measured (the first one includes compilation).
    """

    def __init__(self, graph_or_family: Any, *, seeds: Sequence[int], batch_size: int, length: int,
                 max_cached_settings: int = 8, measures: Sequence[str] = (),
                 clock: Callable[[], float] = time.perf_counter):
        if not seeds:
            raise UserError("seeds is empty; give at least one graph seed, e.g. seeds=(0, 1, 2, 3)")
        self.graph_or_family = graph_or_family
        self.seeds = tuple(int(seed) for seed in seeds)
        self.batch_size = batch_size
        self.length = length
        self.max_cached_settings = max_cached_settings
        self.measures = tuple(measures)
        for measure in self.measures:
            check_measure(measure)
        self.clock = clock
        self.seconds_per_seed: list[float] = []
        self._graphs: dict[Setting, GraphSpec] = {}
        self._batches: dict[tuple[int, Setting], tuple[dict, np.ndarray]] = {}  # (seed, setting), oldest first
        self._values: dict[tuple[int, Setting, str], float] = {}  # (seed, setting, measure) -> value
        self._node_kernels: dict[int, dict[tuple, Any]] = {}  # seed -> (index, NodeSpec, shape) -> kernel

    @staticmethod
    def _setting(alphas: Mapping[str, float]) -> Setting:
        return tuple(sorted((name, float(value)) for name, value in alphas.items()))

    def graph(self, alphas: Mapping[str, float]) -> GraphSpec:
        """The graph of a setting."""
        setting = self._setting(alphas)
        if setting not in self._graphs:
            self._graphs[setting] = graph_at(self.graph_or_family, alphas)
        return self._graphs[setting]

    def seed_kernels(self, seed: int, graph: GraphSpec) -> dict:
        """`sample_kernels(keys.kernel_key(seed), graph)`, reusing the nodes whose draw did not change."""
        previous, current = self._node_kernels.get(seed, {}), {}
        for index, node in enumerate(graph.nodes):
            cache_key = (index, node, graph.kernel_shape(node.name))
            if cache_key not in previous:
                node_key = keys.node_kernel_key(keys.kernel_key(seed), index)
                previous[cache_key] = sample_node_kernel(node_key, graph, node.name)
            current[cache_key] = previous[cache_key]
        self._node_kernels[seed] = current
        return {node.name: current[index, node, graph.kernel_shape(node.name)]
                for index, node in enumerate(graph.nodes)}

    def kernels(self, graph: GraphSpec) -> list[dict]:
        """`seed_kernels` of every seed, in `seeds` order."""
        return [self.seed_kernels(seed, graph) for seed in self.seeds]

    def seed_batch(self, seed: int, alphas: Mapping[str, float]) -> tuple[dict, np.ndarray]:
        """Kernels and tokens `(batch_size, length)` of seed `seed` at a setting (cached)."""
        cache_key = (seed, self._setting(alphas))
        if cache_key not in self._batches:
            graph = self.graph(alphas)
            batch = sample_seed_batch(graph, seed, self.batch_size, self.length, self.seed_kernels(seed, graph))
            if len(self._batches) >= self.max_cached_settings * len(self.seeds):
                self._batches.pop(next(iter(self._batches)))
            self._batches[cache_key] = batch
        return self._batches[cache_key]

    def batches(self, alphas: Mapping[str, float]) -> tuple[GraphSpec, list[tuple[dict, np.ndarray]]]:
        """The graph of a setting and `[(kernels, tokens (batch_size, length))]`, one per seed."""
        return self.graph(alphas), [self.seed_batch(seed, alphas) for seed in self.seeds]

    def per_seed(self, alphas: Mapping[int, Mapping[str, float]], measure: str) -> dict[int, float]:
        """One measure of each given seed at its own setting, taken with the measurer's other `measures`.

        Args:
          alphas: `{seed: {"alpha_X", "alpha_Z"}}` for some of the measurer's seeds.

        Returns:
          `{seed: value}` in the measure's unit (`MEASURES`), in the order of `alphas`.
        """
        values = self._measure(alphas, tuple(dict.fromkeys((measure, *self.measures))))
        return {seed: values[seed][measure] for seed in alphas}

    def is_cached(self, alphas: Mapping[int, Mapping[str, float]], measure: str) -> bool:
        """Whether `per_seed(alphas, measure)` would be answered from memory."""
        return all((int(seed), self._setting(a), measure) in self._values for seed, a in alphas.items())

    def measure(self, alphas: Mapping[str, float], measures: Sequence[str]) -> dict[str, Difficulty]:
        """`{measure: Difficulty}` (units in `MEASURES`) of one setting, every seed at it, from the same batches."""
        return self.measure_seeds({seed: alphas for seed in self.seeds}, measures)

    def measure_seeds(self, alphas: Mapping[int, Mapping[str, float]],
                      measures: Sequence[str]) -> dict[str, Difficulty]:
        """Several measures of the given seeds, each at its own setting `alphas[seed]`, over those seeds."""
        values = self._measure(alphas, tuple(measures))
        result = {}
        for measure in measures:
            per_seed = tuple(values[int(seed)][measure] for seed in alphas)
            result[measure] = Difficulty(*mean_and_stderr(per_seed), per_seed)
        return result

    def __call__(self, alphas: Mapping[str, float], measure: str) -> Difficulty:
        """One measure of one setting (see `measure`), taken with the measurer's other `measures`."""
        return self.measure(alphas, tuple(dict.fromkeys((measure, *self.measures))))[measure]

    def _measure(self, alphas: Mapping[int, Mapping[str, float]], measures: tuple[str, ...]) -> dict[int, dict]:
        """`{seed: {measure: value}}`, computing (and timing) only what is not in memory."""
        for measure in measures:
            check_measure(measure)
        unknown = sorted(set(map(int, alphas)) - set(self.seeds))
        if unknown:
            raise UserError(f"seeds {unknown} are not among the measurer's seeds {list(self.seeds)}")
        work = {int(seed): [m for m in measures if (int(seed), self._setting(a), m) not in self._values]
                for seed, a in alphas.items()}
        work = {seed: missing for seed, missing in work.items() if missing}
        if work:
            start = self.clock()
            computed = self._compute({seed: alphas[seed] for seed in work}, work)
            self.seconds_per_seed.append((self.clock() - start) / len(work))
            for seed, values in computed.items():
                for measure, value in values.items():
                    self._values[seed, self._setting(alphas[seed]), measure] = float(value)
        return {int(seed): {m: self._values[int(seed), self._setting(a), m] for m in measures}
                for seed, a in alphas.items()}

    def _compute(self, alphas: Mapping[int, Mapping[str, float]],
                 measures: Mapping[int, Sequence[str]]) -> dict[int, dict[str, float]]:
        """The work itself: `{seed: {measure: value}}` for the given seeds, settings and measures."""
        batches = {seed: (self.graph(alphas[seed]), *self.seed_batch(seed, alphas[seed])) for seed in alphas}
        values: dict[int, dict[str, float]] = {seed: {} for seed in alphas}
        for seed, (graph, kernels, tokens) in batches.items():
            if "entropy" in measures[seed]:
                values[seed]["entropy"] = entropy_nats_per_token(graph, kernels, tokens)

        def compress(seed: int) -> dict[str, float]:
            graph, _, tokens = batches[seed]
            return {m: gzip_bytes_per_token(tokens) if m == "gzip"
                    else compressed_bits_per_token(tokens, m, graph.vocab_size)
                    for m in measures[seed] if m != "entropy"}

        for seed, compressed in zip(batches, parallel_map(compress, list(batches)), strict=True):
            values[seed].update(compressed)
        return values


def difficulty(graph_or_family: Any, alphas: Mapping[str, float], *, measure: str, seeds: Sequence[int],
               batch_size: int, length: int) -> Difficulty:
    """Mean difficulty of a setting over graph seeds, with its standard error (arguments: see `Measurer`).

    Args:
      alphas: `{"alpha_X": float, "alpha_Z": float}` (for a config dict, either may be omitted).
      measure: one of `MEASURES` ("entropy" in nats/token, "gzip" in composable-llm's bytes/token, ...).
    """
    return Measurer(graph_or_family, seeds=seeds, batch_size=batch_size, length=length)(alphas, measure)


PERFORMANCE_MEASURES = ("entropy", "zlib", "bz2", "lzma", "gzip")


def compression_performance(measurer: Measurer, alphas: Mapping[str, float] | Mapping[int, Mapping[str, float]]
                            ) -> dict[str, Difficulty]:
    """How close each compressor gets to the entropy rate at one setting (composable-llm's TODO).

    Args:
      alphas: one setting for every seed, or `{seed: setting}` (e.g. each seed's calibrated side).

    Returns:
      `{"entropy": Difficulty in nats/token, "zlib", "bz2", "lzma": Difficulty in bits/token, "gzip":
      Difficulty in composable-llm's bytes/token}`, all measured on the same batches (one per seed).
      Divide bits by log2(V) (nats by ln V) for fractions of an incompressible stream.
    """
    if all(name in ALPHA_NAMES for name in alphas):
        alphas = {seed: alphas for seed in measurer.seeds}
    return measurer.measure_seeds(alphas, PERFORMANCE_MEASURES)
