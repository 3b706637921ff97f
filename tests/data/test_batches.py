"""The on-the-fly stream samples from the initial state it is given, as the sampler does."""

import jax
import numpy as np
import pytest

from gssm_jax import keys, parallel
from gssm_jax.data.batches import OnTheFlyBatches
from gssm_jax.gssm.graph import GraphSpec, experiment1_graph_config
from gssm_jax.gssm.kernels import sample_kernels
from gssm_jax.sampling import sampler, tables


def test_on_the_fly_batches_take_the_initial_state():
    graph = GraphSpec.from_config(experiment1_graph_config(2, 2, 5, 0.3, 0.3))
    kernels = sample_kernels(jax.random.key(0), graph)
    mesh = parallel.data_parallel_mesh()
    data_key = keys.data_key(3)
    stream = OnTheFlyBatches(graph, tables.sampling_tables(graph, kernels), 8, 6, data_key, mesh,
                             initial_state="stationary", burn_in=9)
    expected = sampler.sample_tokens(keys.stream_key(data_key, 2), graph, kernels, 8, 6, initial_state="stationary",
                                     burn_in=9)
    np.testing.assert_array_equal(np.asarray(stream.batch(2)), np.asarray(expected))
    zeros = OnTheFlyBatches(graph, tables.sampling_tables(graph, kernels), 8, 6, data_key, mesh)
    np.testing.assert_array_equal(np.asarray(zeros.batch(2)),
                                  np.asarray(sampler.sample_tokens(keys.stream_key(data_key, 2), graph, kernels, 8, 6)))
    with pytest.raises(ValueError, match="config.data.initial_state is 'stationnary'"):
        OnTheFlyBatches(graph, tables.sampling_tables(graph, kernels), 8, 6, data_key, mesh,
                        initial_state="stationnary")
