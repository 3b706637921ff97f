"""Tests of the difficulty measures: hand-computed values on tiny inputs and bounds on known streams."""

import math
import zlib

import jax
import numpy as np
import pytest

import gssm_jax as gj
from gssm_jax import difficulty
from gssm_jax.gssm.families import FAMILIES, get_family
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.gssm.kernels import sample_kernels

# Same graph and batch shape as tests/difficulty/test_search.py, so the sampler and forward algorithm compile once.
TINY_GRAPH = {"nodes": [
    {"name": "Z1", "states": 2, "alpha": 0.1, "parents": ["X"]},
    {"name": "Z2", "states": 3, "alpha": 0.1, "parents": ["X"]},
    {"name": "X", "states": 8, "alpha": 0.1, "parents": ["Z1", "Z2"]},
]}
BATCH_SIZE, LENGTH = 16, 128
# Probability that a fixed compressor shrinks a uniformly random stream by k bits or more is at most 2**-k
# (fewer than 2**(n-k) outputs are shorter than n - k bits), so k = 40 gives a 1e-12 false-failure rate.
SLACK_BITS = 40


def test_packed_bytes_by_hand():
    tokens = np.array([[1, 2], [3, 31]])
    assert difficulty.packed_bytes(tokens, 32) == bytes([1, 2, 3, 31])
    assert difficulty.packed_bytes(tokens, 300) == bytes([1, 0, 2, 0, 3, 0, 31, 0])  # uint16 little-endian
    assert difficulty.packed_bytes(tokens, 2**17) == np.array([1, 2, 3, 31], "<u4").tobytes()
    with pytest.raises(ValueError, match="vocab_size=4"):
        difficulty.packed_bytes(tokens, 4)


def test_gzip_bytes_per_token_is_the_seeds_formula():
    tokens = np.arange(12, dtype=np.uint8).reshape(3, 4)
    expected = len(zlib.compress(np.arange(12, dtype="<i8").tobytes(), 9)) / 12
    assert difficulty.gzip_bytes_per_token(tokens) == expected


def test_compressed_bits_match_the_compressors_on_a_small_stream():
    tokens = np.array([[0, 1, 2, 3, 3, 2, 1, 0]])
    raw = bytes([0, 1, 2, 3, 3, 2, 1, 0])
    assert difficulty.compressed_bits_per_token(tokens, "zlib", 4) == 8 * len(zlib.compress(raw, 9)) / 8
    measures = difficulty.compression_measures(tokens, 4)
    for name in difficulty.COMPRESSORS:
        assert measures[f"{name}_fraction"] == measures[name] / 2.0  # log2(4) = 2 bits
    with pytest.raises(ValueError, match="valid compressors are zlib, bz2, lzma"):
        difficulty.compressed_bits_per_token(tokens, "zstd", 4)


def test_constant_stream_compresses_to_almost_nothing():
    tokens = np.zeros((16, 4096), np.uint8)
    for name in difficulty.COMPRESSORS:
        bits = difficulty.compressed_bits_per_token(tokens, name, 32)
        # Every format codes a run of 65536 equal bytes in well under 1% of a bit per byte; headers are
        # below 100 bytes, i.e. 800 / 65536 = 0.012 bits/token.
        assert 0 < bits < 0.05, (name, bits)


def test_uniform_random_stream_is_incompressible():
    rng = np.random.default_rng(0)
    n = 1 << 16
    for vocab_size, packed_bits in ((256, 8), (32, 8)):
        tokens = rng.integers(0, vocab_size, (8, n // 8))
        entropy_bits = math.log2(vocab_size)
        for name in difficulty.COMPRESSORS:
            bits = difficulty.compressed_bits_per_token(tokens, name, vocab_size)
            assert bits >= entropy_bits - SLACK_BITS / n, (name, vocab_size, bits)
            # No format expands its input by more than 2% plus a 200-byte header (zlib's stored blocks
            # cost 5 bytes per 64 KiB; bz2 and lzma fall back similarly).
            assert bits <= packed_bits * 1.02 + 8 * 200 / n, (name, vocab_size, bits)


def test_parallel_map_keeps_order():
    assert difficulty.parallel_map(lambda x: x * x, list(range(20)), max_workers=3) == [x * x for x in range(20)]


def test_with_alphas_sets_observed_and_hidden():
    graph = GraphSpec.from_config(difficulty.with_alphas(TINY_GRAPH, {"alpha_X": 0.5, "alpha_Z": 2.0}))
    assert graph.node("X").alpha == 0.5 and graph.node("Z1").alpha == 2.0
    with pytest.raises(ValueError, match="valid names are alpha_X, alpha_Z"):
        difficulty.with_alphas(TINY_GRAPH, {"alpha_Y": 1.0})


def test_families_build_valid_graphs_with_the_seed_shapes():
    shapes = {"four_by_four": (4, 32, 2048), "eight_by_four": (8, 64, 4096), "chain": (3, 32, 2048)}
    for name, family in FAMILIES.items():
        graph = GraphSpec.from_config(family.config(*family.reference))
        assert (len(graph.hidden_nodes), graph.vocab_size, family.length) == shapes[name]
        assert graph.node("X").alpha == family.reference[0]
        assert all(node.alpha == family.reference[1] for node in graph.hidden_nodes)
    assert get_family("eight_by_four").reference == (1e-3, 4e-3)
    assert GraphSpec.from_config(get_family("chain").config(1, 1)).hidden_order == ("Z1", "Z2", "Z3")
    with pytest.raises(ValueError, match="valid families are four_by_four, eight_by_four, chain"):
        get_family("four")


def test_measurer_uses_common_random_numbers_and_caches():
    measurer = difficulty.Measurer(TINY_GRAPH, seeds=(0, 1), batch_size=BATCH_SIZE, length=LENGTH)
    alphas = {"alpha_X": 0.1, "alpha_Z": 0.1}
    first = measurer.measure(alphas, ("entropy", "gzip", "lzma"))
    # A fresh measurer with the same seeds draws the same keys, so it reproduces every value exactly.
    fresh = difficulty.Measurer(TINY_GRAPH, seeds=(0, 1), batch_size=BATCH_SIZE, length=LENGTH)
    again = fresh.measure(alphas, ("entropy", "gzip"))
    assert again["entropy"] == first["entropy"] and again["gzip"] == first["gzip"]
    graph, batches = measurer.batches(alphas)
    tokens = batches[1][1]
    assert tokens.shape == (BATCH_SIZE, LENGTH) and first["gzip"].per_seed[1] == difficulty.gzip_bytes_per_token(tokens)
    assert first["lzma"].per_seed[0] == difficulty.compressed_bits_per_token(batches[0][1], "lzma", 8)
    assert first["entropy"].mean == pytest.approx(np.mean(first["entropy"].per_seed))
    assert difficulty.difficulty(TINY_GRAPH, alphas, measure="entropy", seeds=(0, 1), batch_size=BATCH_SIZE,
                                 length=LENGTH) == first["entropy"]
    # Different seeds draw different kernels.
    assert first["entropy"].per_seed[0] != first["entropy"].per_seed[1]


def test_measurer_takes_its_measures_together_at_each_setting(monkeypatch):
    measurer = difficulty.Measurer(TINY_GRAPH, seeds=(0,), batch_size=BATCH_SIZE, length=LENGTH,
                                   measures=("entropy", "gzip"))
    alphas = {"alpha_X": 0.1, "alpha_Z": 0.1}
    entropy = measurer(alphas, "entropy")
    monkeypatch.setattr(measurer, "batches", lambda alphas: pytest.fail("the setting was sampled a second time"))
    assert measurer(alphas, "gzip") == difficulty.Measurer(TINY_GRAPH, seeds=(0,), batch_size=BATCH_SIZE,
                                                            length=LENGTH)(alphas, "gzip")
    assert measurer(alphas, "entropy") == entropy
    with pytest.raises(ValueError, match="bogus"):
        difficulty.Measurer(TINY_GRAPH, seeds=(0,), batch_size=BATCH_SIZE, length=LENGTH, measures=("bogus",))


def test_measurer_kernels_equal_sample_kernels_when_reused():
    measurer = difficulty.Measurer(TINY_GRAPH, seeds=(3, 4), batch_size=BATCH_SIZE, length=LENGTH)
    for alpha_z in (0.1, 0.2):  # the second setting reuses X's kernel from the first
        graph = difficulty.graph_at(TINY_GRAPH, {"alpha_X": 0.5, "alpha_Z": alpha_z})
        for seed, kernels in zip((3, 4), measurer.kernels(graph), strict=True):
            expected = sample_kernels(jax.random.key(seed), graph)
            for name in expected:
                np.testing.assert_array_equal(kernels[name], expected[name])


def test_entropy_measure_is_in_nats_below_log_vocab_and_zero_for_deterministic_graph():
    measurer = difficulty.Measurer(TINY_GRAPH, seeds=(0, 1), batch_size=BATCH_SIZE, length=LENGTH)
    entropy = measurer({"alpha_X": 1.0, "alpha_Z": 1.0}, "entropy")
    assert 0 < entropy.mean < math.log(8)  # nats: ln V, not log2 V
    graph, batches = measurer.batches({"alpha_X": 1.0, "alpha_Z": 1.0})
    rate = gj.entropy_rate(graph, *batches[0])
    assert entropy.per_seed[0] == float(rate.nats_per_token)  # the forward pass's nats, unconverted
    # alpha -> 0 makes every row one-hot in float32 (entries below ~1e-38 underflow): zero entropy.
    assert measurer({"alpha_X": 1e-4, "alpha_Z": 1e-4}, "entropy").mean == pytest.approx(0.0, abs=1e-3)


def test_measurer_measures_each_seed_at_its_own_setting():
    measurer = difficulty.Measurer(TINY_GRAPH, seeds=(0, 1, 2), batch_size=BATCH_SIZE, length=LENGTH)
    settings = {0: {"alpha_X": 0.1, "alpha_Z": 0.3}, 2: {"alpha_X": 0.5, "alpha_Z": 0.02}}
    values = measurer.per_seed(settings, "entropy")
    assert list(values) == [0, 2]
    # A seed's value does not depend on the other seeds' settings: each equals a measurer of that seed alone at
    # one setting (the same keys), and equal settings give exactly what `measure` gives.
    for seed, alphas in settings.items():
        alone = difficulty.Measurer(TINY_GRAPH, seeds=(seed,), batch_size=BATCH_SIZE, length=LENGTH)
        assert values[seed] == alone(alphas, "entropy").mean
    same = measurer.per_seed({seed: settings[0] for seed in (0, 1, 2)}, "entropy")
    assert tuple(same.values()) == measurer(settings[0], "entropy").per_seed
    assert measurer.is_cached({1: settings[0]}, "entropy") and not measurer.is_cached({1: settings[2]}, "entropy")
    performance = difficulty.compression_performance(measurer, settings)
    assert performance["entropy"].per_seed == (values[0], values[2])
    with pytest.raises(ValueError, match=r"seeds \[5\] are not among the measurer's seeds \[0, 1, 2\]"):
        measurer.per_seed({5: settings[0]}, "entropy")


def test_measurer_times_its_work_on_its_clock():
    now = [0.0]

    def clock():
        now[0] += 1.0  # every reading one second later: each measurement takes exactly 1 s
        return now[0]

    measurer = difficulty.Measurer(TINY_GRAPH, seeds=(0, 1), batch_size=BATCH_SIZE, length=LENGTH, clock=clock)
    measurer({"alpha_X": 0.1, "alpha_Z": 0.1}, "gzip")
    measurer({"alpha_X": 0.1, "alpha_Z": 0.1}, "gzip")  # from memory: not timed
    measurer.per_seed({1: {"alpha_X": 0.2, "alpha_Z": 0.1}}, "gzip")
    assert measurer.seconds_per_seed == [0.5, 1.0]


def test_measurer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="seeds is empty"):
        difficulty.Measurer(TINY_GRAPH, seeds=(), batch_size=BATCH_SIZE, length=LENGTH)
    with pytest.raises(ValueError, match="valid measures are entropy, gzip"):
        difficulty.Measurer(TINY_GRAPH, seeds=(0,), batch_size=BATCH_SIZE, length=LENGTH)({"alpha_X": 1.0}, "gz")
    with pytest.raises(ValueError, match="needs both alphas"):
        difficulty.graph_at(get_family("chain"), {"alpha_X": 1.0})
