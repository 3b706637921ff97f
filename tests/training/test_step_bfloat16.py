"""bfloat16 compute with float32 parameters, optimizer state and loss, end to end through the train step."""

import jax
import jax.numpy as jnp
import numpy as np

from gssm_jax import parallel
from gssm_jax.configs.base import get_config
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.gssm.kernels import sample_kernels
from gssm_jax.sampling import sample_tokens
from gssm_jax.training.step import init_state, make_optimizer, make_train_step, model_config


def test_bfloat16_step_keeps_float32_state_and_trains():
    config = get_config("size=tiny")
    config.model.dtype = "bfloat16"
    config.model.attention = "blockwise"
    graph = GraphSpec.from_config(config.graph)
    mesh = parallel.data_parallel_mesh()
    optimizer, schedule = make_optimizer(config.optimizer, 30)
    graphdef, state = init_state(model_config(config, graph), 0, optimizer)
    state = jax.device_put(state, parallel.replicated(mesh))
    step = make_train_step(graphdef, optimizer, schedule, mesh)
    # A fixed batch of the tiny graph's tokens: 30 steps must fit it well below the uniform loss log V.
    tokens = sample_tokens(jax.random.key(1), graph, sample_kernels(jax.random.key(0), graph), 16, 32,
                           sharding=parallel.batch_sharded(mesh))
    losses = []
    for _ in range(30):
        state, metrics = step(state, tokens)
        losses.append(float(metrics["train/loss_nats_per_token"]))
    floats = [leaf for leaf in jax.tree.leaves(state) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    assert floats and all(leaf.dtype == jnp.float32 for leaf in floats)  # params and Adam moments
    assert metrics["train/loss_nats_per_token"].dtype == jnp.float32
    assert np.isfinite(losses).all()
    assert abs(losses[0] - np.log(graph.vocab_size)) < 1e-3  # zero head: uniform predictions at step 0
    # The loss falls by a margin far above bfloat16's rounding (eps 2^-7 relative on O(1) logits).
    assert losses[-1] < losses[0] - 0.2
