"""The difficulty of a graph *setting* (alpha_X, alpha_Z), measured over graph seeds.

For every graph seed s, `Measurer` draws kernels with `sample_kernels(keys.kernel_key(s), graph)`,
samples one batch with `keys.calibration_data_key(s)`, measures it (`gssm_jax.difficulty.measures`,
or the exact entropy rate) and returns the mean over seeds with its standard error. The same seeds
give the same keys at every setting (common random numbers), which is what the calibration search
(`gssm_jax.difficulty.search`) relies on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gssm_jax import inference, keys
from gssm_jax.difficulty.measures import (
    NATS_PER_BIT,
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
    tokens = sampler.sample_tokens(keys.calibration_data_key(seed), graph, kernels, batch_size,
                                   length)
    return kernels, np.asarray(tokens)


def entropy_bits_per_token(graph: GraphSpec, kernels: dict, tokens) -> float:
    """Exact entropy rate estimate on `tokens` (mean over the batch), converted from nats to bits per token."""
    # graph.structure: one compilation of the forward algorithm serves every alpha of a search.
    nats = inference.entropy_rate(graph.structure, kernels, tokens).nats_per_token
    return float(nats) / NATS_PER_BIT


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


class Measurer:
    """Measures settings of one graph (family) at fixed seeds and batch shape, remembering what it did.

    Batches of the most recent `max_cached_settings` settings are kept, so several measures of the
    same setting (calibration on entropy then gzip, the compression table) sample it once. A node's
    kernel is reused from the previous setting when its alpha did not change (it is the same draw:
    `sample_kernels` gives node i the key `fold_in(key(seed), i)`), which matters on large graphs
    (eight_by_four: X's 65536 Dirichlet rows take 1-2.5 s per seed on 2 CPU cores). Sampling and
    the forward algorithm run on the JAX device one seed after another; compressions of all seeds
    run in parallel threads.

    Args:
      graph_or_family: a `gssm_jax.gssm.families.GraphFamily` or a graph config dict.
      seeds: graph seeds; seed s draws kernels from `keys.kernel_key(s)` and data from
        `keys.calibration_data_key(s)`.
      batch_size: sequences per seed.
      length: tokens per sequence.
      measures: measures taken together whenever a setting is measured (`__call__`), so a
        calibration on several measures measures each setting once: their searches share the grid.
    """

    def __init__(self, graph_or_family: Any, *, seeds: Sequence[int], batch_size: int, length: int,
                 max_cached_settings: int = 8, measures: Sequence[str] = ()):
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
        self._batches: dict[tuple, tuple[GraphSpec, list]] = {}
        self._values: dict[tuple, Difficulty] = {}
        self._node_kernels: dict[tuple, Any] = {}  # (seed, node index, NodeSpec, shape) -> kernel, last setting

    def kernels(self, graph: GraphSpec) -> list[dict]:
        """`sample_kernels(keys.kernel_key(seed), graph)` for every seed, reusing unchanged nodes' draws."""
        current, per_seed = {}, []
        for seed in self.seeds:
            kernels = {}
            for index, node in enumerate(graph.nodes):
                cache_key = (seed, index, node, graph.kernel_shape(node.name))
                if cache_key not in self._node_kernels:
                    node_key = keys.node_kernel_key(keys.kernel_key(seed), index)
                    self._node_kernels[cache_key] = sample_node_kernel(node_key, graph, node.name)
                kernels[node.name] = current[cache_key] = self._node_kernels[cache_key]
            per_seed.append(kernels)
        self._node_kernels = current
        return per_seed

    def _setting(self, alphas: Mapping[str, float]) -> tuple:
        return tuple(sorted((name, float(value)) for name, value in alphas.items()))

    def batches(self, alphas: Mapping[str, float]) -> tuple[GraphSpec, list[tuple[dict, np.ndarray]]]:
        """The graph of a setting and `[(kernels, tokens (batch_size, length))]`, one per seed."""
        setting = self._setting(alphas)
        if setting not in self._batches:
            graph = graph_at(self.graph_or_family, alphas)
            batches = [sample_seed_batch(graph, seed, self.batch_size, self.length, kernels)
                       for seed, kernels in zip(self.seeds, self.kernels(graph), strict=True)]
            if len(self._batches) >= self.max_cached_settings:
                self._batches.pop(next(iter(self._batches)))
            self._batches[setting] = (graph, batches)
        return self._batches[setting]

    def measure(self, alphas: Mapping[str, float], measures: Sequence[str]) -> dict[str, Difficulty]:
        """Several measures of one setting from the same batches.

        Returns:
          `{measure: Difficulty}` for each requested measure (units in `MEASURES`).
        """
        for measure in measures:
            check_measure(measure)
        setting = self._setting(alphas)
        missing = [m for m in measures if (setting, m) not in self._values]
        if missing:
            graph, batches = self.batches(alphas)
            per_seed: dict[str, list[float]] = {}
            if "entropy" in missing:
                per_seed["entropy"] = [entropy_bits_per_token(graph, kernels, tokens) for kernels, tokens in batches]
            compressed = [m for m in missing if m != "entropy"]
            if compressed:
                def compress(tokens: np.ndarray) -> dict[str, float]:
                    return {m: gzip_bytes_per_token(tokens) if m == "gzip"
                            else compressed_bits_per_token(tokens, m, graph.vocab_size) for m in compressed}

                rows = parallel_map(compress, [tokens for _, tokens in batches])
                per_seed.update({m: [row[m] for row in rows] for m in compressed})
            for name, values in per_seed.items():
                self._values[(setting, name)] = Difficulty(*mean_and_stderr(values), tuple(values))
        return {m: self._values[(setting, m)] for m in measures}

    def __call__(self, alphas: Mapping[str, float], measure: str) -> Difficulty:
        """One measure of one setting (see `measure`), taken with the measurer's other `measures`."""
        return self.measure(alphas, tuple(dict.fromkeys((measure, *self.measures))))[measure]


def difficulty(graph_or_family: Any, alphas: Mapping[str, float], *, measure: str, seeds: Sequence[int],
               batch_size: int, length: int) -> Difficulty:
    """Mean difficulty of a setting over graph seeds, with its standard error.

    Args:
      graph_or_family: a `gssm_jax.gssm.families.GraphFamily` or a graph config dict.
      alphas: `{"alpha_X": float, "alpha_Z": float}` (for a config dict, either may be omitted).
      measure: one of `MEASURES` ("entropy" in bits/token, "gzip" in composable-llm's bytes/token, ...).
      seeds: graph seeds; seed s draws kernels from `keys.kernel_key(s)` and data from
        `keys.calibration_data_key(s)`.
      batch_size: sequences per seed.
      length: tokens per sequence.
    """
    return Measurer(graph_or_family, seeds=seeds, batch_size=batch_size, length=length)(alphas, measure)


PERFORMANCE_MEASURES = ("entropy", "zlib", "bz2", "lzma", "gzip")


def compression_performance(measurer: Measurer, alphas: Mapping[str, float]) -> dict[str, Difficulty]:
    """How close each compressor gets to the entropy rate at one setting (composable-llm's TODO).

    Returns:
      `{"entropy", "zlib", "bz2", "lzma": Difficulty in bits/token, "gzip": Difficulty in composable-llm's
      bytes/token}`, all measured on the same batches (one per seed). Divide by log2(V) for fractions
      of an incompressible stream.
    """
    return measurer.measure(alphas, PERFORMANCE_MEASURES)
