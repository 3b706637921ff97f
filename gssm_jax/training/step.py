"""The pure train step: optimizer, model shape, train state, loss, and the jitted step over the mesh.

The train state is a plain pytree `{"params", "opt_state", "step"}` and `train_step(state, tokens)`
is a pure function of it, jitted once with replicated parameters, a batch split over the ("data",)
mesh and the state donated (`gssm_jax.parallel`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from gssm_jax import parallel
from gssm_jax.errors import UserError
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.learners import registry, token_losses

SCHEDULES = ("cosine", "constant")


class ConfigError(UserError):
    """A config the training loop cannot run; the message names the field and the fix."""


def make_optimizer(optimizer: ml_collections.ConfigDict, num_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with linear warmup then cosine decay to 0 at `num_steps` (or constant), after global-norm clipping."""
    if optimizer.schedule not in SCHEDULES:
        raise ConfigError(
            f"config.optimizer.schedule={optimizer.schedule!r}; valid schedules are {', '.join(SCHEDULES)}"
        )
    if not 0 <= optimizer.warmup_steps <= num_steps:
        raise ConfigError(f"config.optimizer.warmup_steps={optimizer.warmup_steps} must be in [0, train.num_steps]")
    if optimizer.clip_norm <= 0:
        raise ConfigError(f"config.optimizer.clip_norm={optimizer.clip_norm} must be > 0")
    peak = optimizer.learning_rate
    if optimizer.schedule == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(0.0, peak, optimizer.warmup_steps, max(num_steps, 1), 0.0)
    else:
        schedule = optax.join_schedules(
            [optax.linear_schedule(0.0, peak, optimizer.warmup_steps), optax.constant_schedule(peak)],
            [optimizer.warmup_steps],
        )

    def is_matrix(params):
        return jax.tree.map(lambda leaf: leaf.ndim >= 2, params)

    adamw = optax.adamw(schedule, b1=optimizer.beta1, b2=optimizer.beta2, weight_decay=optimizer.weight_decay,
                        mask=is_matrix)
    return optax.chain(optax.clip_by_global_norm(optimizer.clip_norm), adamw), schedule


def model_config(config: ml_collections.ConfigDict, graph: GraphSpec):
    """The shape of the learner `config.model.kind` from `config.model`, with X's states as the vocabulary."""
    return registry.model_config(config.model.kind, graph.vocab_size, config.model)


def init_state(shape, init_seed: int, optimizer: optax.GradientTransformation) -> tuple[nnx.GraphDef, dict]:
    """The model's graph definition and a fresh train state `{"params", "opt_state", "step"}` (int32 scalar).

    shape: a config made by `model_config` (any kind of `gssm_jax.learners.registry`).
    """
    graphdef, params = nnx.split(registry.build(shape, nnx.Rngs(init_seed)), nnx.Param)
    params = nnx.to_pure_dict(params)
    return graphdef, {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}


def loss_fn(graphdef: nnx.GraphDef, params: dict, tokens: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy of the model on tokens (batch, length), nats per token (scalar)."""
    return token_losses(nnx.merge(graphdef, params), tokens).mean()


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                    mesh: jax.sharding.Mesh) -> Callable[[dict, jax.Array], tuple[dict, dict]]:
    """`train_step(state, tokens) -> (state, metrics)`, jitted over `mesh`, donating `state`.

    tokens: (batch, length), rows split over the "data" axis. metrics: float32 scalars
    `train/loss_nats_per_token` (mean next-token cross-entropy of this batch before the update),
    `train/grad_norm` (global L2 norm before clipping), `train/learning_rate` (used by this update).
    """

    def train_step(state, tokens):
        loss, grads = jax.value_and_grad(loss_fn, argnums=1)(graphdef, state["params"], tokens)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        new_state = {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state,
                     "step": state["step"] + 1}
        step_metrics = {"train/loss_nats_per_token": loss, "train/grad_norm": optax.tree.norm(grads),
                        "train/learning_rate": jnp.asarray(schedule(state["step"]), jnp.float32)}
        return new_state, step_metrics

    replicated = parallel.replicated(mesh)
    return jax.jit(train_step, in_shardings=(replicated, parallel.batch_sharded(mesh)),
                   out_shardings=(replicated, replicated), donate_argnums=0)

