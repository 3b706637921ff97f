"""The numpy reference sampler: composable-llm's recipe, its gzip table, and its transition frequencies."""

import numpy as np
import pytest
from scipy import stats

from gssm_jax.difficulty import gzip_bytes_per_token
from gssm_jax.gssm.graph import GraphSpec, experiment1_graph_config
from gssm_jax.sampling import numpy_sampler

FALSE_FAILURE_RATE = 1e-6

# Composable-llm's table: (num_hidden, vocab, length, alpha_x, alpha_z) -> gzip difficulty at seed 42,
# 1024 sequences, 4 states per hidden node, to two decimals.
SEED_TABLE = [
    (4, 32, 2048, 1e-3, 0.125, 0.74),
    (4, 32, 2048, 5e-2, 1e-3, 0.72),
    (4, 32, 2048, 1e-3, 0.142, 0.74),
    (4, 32, 2048, 5.7e-2, 1e-3, 0.75),
    (8, 64, 4096, 1e-3, 4e-3, 0.74),
    (8, 64, 4096, 2e-3, 1e-3, 0.73),
]


def _seed_difficulty(num_hidden, vocab, length, alpha_x, alpha_z):
    graph = GraphSpec.from_config(experiment1_graph_config(num_hidden, 4, vocab, alpha_x, alpha_z))
    return gzip_bytes_per_token(numpy_sampler.seed_batch(graph, 42, 1024, length))


def test_reproduces_first_seed_table_row():
    *setting, expected = SEED_TABLE[0]
    assert round(_seed_difficulty(*setting), 2) == expected


@pytest.mark.slow
@pytest.mark.parametrize("row", SEED_TABLE, ids=lambda row: f"n{row[0]}_ax{row[3]}_az{row[4]}")
def test_reproduces_seed_table(row):
    *setting, expected = row
    assert round(_seed_difficulty(*setting), 2) == expected


def test_kernel_recipe_is_the_seeds():
    # hidden nodes in config order, rows (z_prev * V + x_prev), then X; one stream.
    graph = GraphSpec.from_config(experiment1_graph_config(2, 4, 5, 0.3, 0.7))
    tables = numpy_sampler.draw_tables(numpy_sampler.seed_generator(42), graph)
    rng = np.random.default_rng(np.random.SeedSequence(42).spawn(1)[0])
    for name in ("Z1", "Z2"):
        np.testing.assert_array_equal(tables[name].reshape(-1, 4), rng.dirichlet(np.full(4, 0.7), size=4 * 5))
    np.testing.assert_array_equal(tables["X"].reshape(-1, 5), rng.dirichlet(np.full(5, 0.3), size=16))


def _chi_square_p_value(counts: np.ndarray, table: np.ndarray) -> float:
    """Pooled Pearson chi-square over every input row with at least one count.

    counts, table: (rows, states). Each row is multinomial(n_row, table_row) under the null, so the
    statistic sums to a chi-square with sum over rows of (states - 1) degrees of freedom.
    """
    seen = counts.sum(axis=1) > 0
    counts, table = counts[seen], table[seen]
    expected = counts.sum(axis=1, keepdims=True) * table
    statistic = np.sum((counts - expected) ** 2 / expected)
    return stats.chi2.sf(statistic, df=seen.sum() * (table.shape[1] - 1))


def test_transition_frequencies_match_tables():
    graph = GraphSpec.from_config(experiment1_graph_config(2, 2, 3, 2.0, 2.0))
    rng = np.random.default_rng(0)
    tables = numpy_sampler.draw_tables(rng, graph)
    tokens, latents = numpy_sampler.sample(rng, graph, tables, 400, 100, return_latents=True)
    z1, z2 = latents["Z1"], latents["Z2"]
    previous_x = np.concatenate([np.zeros((400, 1), int), tokens[:, :-1]], axis=1)
    previous_z1 = np.concatenate([np.zeros((400, 1), int), z1[:, :-1]], axis=1)
    counts = np.zeros((2, 3, 2))
    np.add.at(counts, (previous_z1, previous_x, z1), 1)
    assert _chi_square_p_value(counts.reshape(-1, 2), tables["Z1"].reshape(-1, 2)) > FALSE_FAILURE_RATE
    counts = np.zeros((2, 2, 3))
    np.add.at(counts, (z1, z2, tokens), 1)
    assert _chi_square_p_value(counts.reshape(-1, 3), tables["X"].reshape(-1, 3)) > FALSE_FAILURE_RATE


def test_first_step_reads_zero_previous_values():
    graph = GraphSpec.from_config(experiment1_graph_config(1, 2, 2, 1.0, 1.0))
    tables = {"Z1": np.zeros((2, 2, 2)), "X": np.array([[1.0, 0.0], [0.0, 1.0]])}
    tables["Z1"][0, 0] = [0.0, 1.0]  # from the all-zero start, Z1 jumps to 1 ...
    tables["Z1"][1, 1] = [1.0, 0.0]  # ... then back to 0 once X has emitted 1
    tables["Z1"][0, 1] = tables["Z1"][1, 0] = [0.5, 0.5]
    tokens = numpy_sampler.sample(np.random.default_rng(0), graph, tables, 4, 2)
    np.testing.assert_array_equal(tokens, [[1, 0]] * 4)
