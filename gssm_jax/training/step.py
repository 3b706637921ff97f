"""The train step, one mechanism for a run and an ensemble: M members trained in lockstep, K steps per dispatch.

A member's train state is the pytree `{"params", "opt_state", "step"}`; an ensemble of M members stacks
every leaf on a leading member axis (a solo run is an ensemble of one). `StepProgram` compiles the pure
function `(state, stream, learning_rates) -> (state, metrics)` that runs `steps` train steps under
`lax.scan`, each step `jax.vmap`-ed over the members. Each step's batch is sampled inside the program for
every member at once (source "onfly": the members' sampling tables and data keys are the `stream`, and step
s of a member trains on `sample_tokens_fn(keys.stream_key(data_key, s), ...)`, bit-identical to
`data.OnTheFlyBatches.batch(s)`), or given by the host (source "file": `stream` is the tokens
(steps, M, batch, length)). Learning rates come in as a table (steps, M) (`gssm_jax.training.schedule`), so
members may differ in peak rate and one program serves the main run and its cool-down branches.

The mesh has axes ("members", "data") with Auto axis types (Explicit ones break the embedding's gather):
members are split over the first axis, each member's batch rows over the second (XLA inserts the gradient
all-reduce), parameters are replicated along "data".
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gssm_jax import keys, parallel
from gssm_jax.gssm.graph import GraphSpec, token_dtype
from gssm_jax.gssm.initial_state import start_keywords
from gssm_jax.gssm.kernels import sample_kernels
from gssm_jax.learners import registry, token_losses
from gssm_jax.sampling.sampler import sample_tokens_fn
from gssm_jax.sampling.tables import sampling_tables
from gssm_jax.training.run import Run
from gssm_jax.training.schedule import schedule_fn

METRICS = ("train/loss_nats_per_token", "train/grad_norm", "train/learning_rate")


def model_config(config: ml_collections.ConfigDict, graph: GraphSpec):
    """The shape of the learner `config.model.kind` from `config.model`, with X's states as the vocabulary."""
    return registry.model_config(config.model.kind, graph.vocab_size, config.model)


def adamw_without_rate(clip_norm: float, beta1: float, beta2: float, weight_decay: float
                       ) -> optax.GradientTransformation:
    """AdamW after global-norm clipping, without its learning rate (weight decay on weight matrices only).

    The step multiplies its updates by minus the step's learning rate, as `optax.adamw` does.
    """

    def is_matrix(params):
        return jax.tree.map(lambda leaf: leaf.ndim >= 2, params)

    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.scale_by_adam(b1=beta1, b2=beta2),
                       optax.add_decayed_weights(weight_decay, mask=is_matrix))


def make_optimizer(optimizer, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`adamw_without_rate` of `optimizer` (a `run.Optimizer` or `config.optimizer`) and the run's schedule."""
    transformation = adamw_without_rate(optimizer.clip_norm, optimizer.beta1, optimizer.beta2,
                                        optimizer.weight_decay)
    return transformation, schedule_fn(optimizer, num_steps)


def init_state(shape, init_seed: int, optimizer: optax.GradientTransformation) -> tuple[nnx.GraphDef, dict]:
    """The model's graph definition and a fresh member state `{"params", "opt_state", "step"}` (int32 scalar).

    shape: a config made by `registry.model_config` (any kind).
    """
    graphdef, params = nnx.split(registry.build(shape, nnx.Rngs(init_seed)), nnx.Param)
    params = nnx.to_pure_dict(params)
    return graphdef, {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}


def loss_fn(graphdef: nnx.GraphDef, params: dict, tokens: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy of the model on tokens (batch, length), nats per token (scalar)."""
    return token_losses(nnx.merge(graphdef, params), tokens).mean()


def member_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation) -> Callable:
    """`step(state, tokens, learning_rate) -> (state, metrics)` of one member (pure; vmap it over members).

    tokens: (batch, length). metrics: float32 scalars `train/loss_nats_per_token` (this batch, before the
    update), `train/grad_norm` (global L2 norm before clipping), `train/learning_rate` (this update's).
    """

    def step(state, tokens, learning_rate):
        loss, grads = jax.value_and_grad(loss_fn, argnums=1)(graphdef, state["params"], tokens)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        step_size = -learning_rate
        updates = jax.tree.map(lambda update: jnp.array(step_size, dtype=update.dtype) * update, updates)
        new_state = {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state,
                     "step": state["step"] + 1}
        metrics = {"train/loss_nats_per_token": loss, "train/grad_norm": optax.tree.norm(grads),
                   "train/learning_rate": jnp.asarray(learning_rate, jnp.float32)}
        return new_state, metrics

    return step


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                    mesh: Mesh) -> Callable[[dict, jax.Array], tuple[dict, dict]]:
    """One member's step on a given batch, `(state, tokens) -> (state, metrics)`, jitted over a ("data",) mesh.

    The same `member_step` the training programs run, for benchmarks and tests of a single step; tokens
    (batch, length) split over "data", the state replicated and donated.
    """
    step = member_step(graphdef, optimizer)
    replicated = parallel.replicated(mesh)
    return jax.jit(lambda state, tokens: step(state, tokens, schedule(state["step"])),
                   in_shardings=(replicated, parallel.batch_sharded(mesh)), out_shardings=(replicated, replicated),
                   donate_argnums=0)


def ensemble_mesh(members: int, devices: list[jax.Device] | None = None) -> Mesh:
    """A ("members", "data") mesh over `devices` (default: all): gcd(members, devices) along "members"."""
    devices = jax.devices() if devices is None else list(devices)
    along_members = math.gcd(members, len(devices))
    return jax.make_mesh((along_members, len(devices) // along_members), ("members", "data"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2, devices=devices)


@dataclasses.dataclass(frozen=True)
class ProgramShape:
    """Everything a step program is compiled for (hashable): the runs' shared shape and the member count."""

    graph: GraphSpec
    model: Any
    source: str
    batch_size: int
    length: int
    burn_in: int  # unobserved sampling steps before the first token (`gssm_jax.gssm.initial_state`)
    optimizer: tuple[float, float, float, float]  # clip_norm, beta1, beta2, weight_decay
    members: int

    @classmethod
    def of(cls, run: Run, members: int) -> ProgramShape:
        o = run.optimizer
        return cls(run.graph.structure, run.shape, run.data.source, run.data.batch_size, run.data.length,
                   run.data.burn_in, (o.clip_norm, o.beta1, o.beta2, o.weight_decay), members)


class StepProgram:
    """The step programs of one `ProgramShape` on one mesh, compiled once per number of steps per call.

    Call `program(steps, state, stream, learning_rates) -> (state, metrics)`:
      state: the stacked member states (`abstract_state()` gives their shapes and shardings), donated.
      stream: (onfly) `(tables, key_words)`: the members' stacked `SamplingTables` and uint32 (M, 2) data-key
        words; (file) tokens (steps, M, batch, length).
      learning_rates: float32 (steps, M).
      metrics: `{name: float32 (steps, M)}` for each of `METRICS`.
    """

    def __init__(self, shape: ProgramShape, mesh: Mesh):
        self.shape, self.mesh = shape, mesh
        self.optimizer = adamw_without_rate(*shape.optimizer)
        model = nnx.eval_shape(lambda: registry.build(shape.model, nnx.Rngs(0)))
        self.graphdef = nnx.split(model, nnx.Param)[0]
        self.members_sharding = NamedSharding(mesh, PartitionSpec("members"))
        self.batch_sharding = NamedSharding(mesh, PartitionSpec("members", "data"))
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self._compiled: dict[int, jax.stages.Compiled] = {}

    def abstract_state(self) -> Any:
        """`jax.ShapeDtypeStruct`s of the stacked member states, with their shardings."""
        one = jax.eval_shape(lambda: init_state(self.shape.model, 0, self.optimizer)[1])
        return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct((self.shape.members, *leaf.shape), leaf.dtype,
                                                              sharding=self.members_sharding), one)

    def stream_sharding(self) -> NamedSharding:
        if self.shape.source == "file":
            return NamedSharding(self.mesh, PartitionSpec(None, "members", "data"))
        return self.members_sharding

    def sample(self, stream, steps: jax.Array) -> jax.Array:
        """Every member's batch of its step `steps` (M,): tokens (M, batch, length), rows split over "data"."""
        shape, mesh = self.shape, self.mesh
        local_batch = shape.batch_size // mesh.shape["data"]

        def per_device(tables, key_words, steps):
            first_row = jax.lax.axis_index("data") * local_batch

            def one_member(tables, key_words, step):
                key = keys.stream_key(jax.random.wrap_key_data(key_words), step)
                return sample_tokens_fn(key, shape.graph, tables, local_batch, shape.length, first_row=first_row,
                                        **start_keywords(shape.burn_in))

            return jax.vmap(one_member)(tables, key_words, steps)

        members = PartitionSpec("members")
        return jax.shard_map(per_device, mesh=mesh, in_specs=(members, members, members),
                             out_specs=PartitionSpec("members", "data"), check_vma=False)(*stream, steps)

    def _program(self, steps: int) -> Callable:
        step = jax.vmap(member_step(self.graphdef, self.optimizer))
        on_the_fly = self.shape.source == "onfly"

        def run_steps(state, stream, learning_rates):
            def body(state, inputs):
                rates, tokens = inputs
                if on_the_fly:
                    tokens = self.sample(stream, state["step"])
                tokens = jax.lax.with_sharding_constraint(tokens, self.batch_sharding)
                return step(state, tokens, rates)

            return jax.lax.scan(body, state, (learning_rates, None if on_the_fly else stream), length=steps)

        return jax.jit(run_steps, in_shardings=(self.members_sharding, self.stream_sharding(), self.replicated),
                       out_shardings=(self.members_sharding, self.replicated), donate_argnums=0)

    def abstract_stream(self, steps: int) -> Any:
        """The `stream` argument's shapes (tables shapes from the graph) for `compile`."""
        shape = self.shape
        if shape.source == "file":
            return jax.ShapeDtypeStruct((steps, shape.members, shape.batch_size, shape.length),
                                        token_dtype(shape.graph.vocab_size), sharding=self.stream_sharding())
        tables = jax.eval_shape(lambda: sampling_tables(shape.graph, sample_kernels(jax.random.key(0), shape.graph)))
        stacked = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct((shape.members, *leaf.shape), leaf.dtype,
                                                                 sharding=self.members_sharding), tables)
        return stacked, jax.ShapeDtypeStruct((shape.members, 2), jnp.uint32, sharding=self.members_sharding)

    def compiled(self, steps: int) -> jax.stages.Compiled:
        """The program of `steps` steps per call, compiled on first use (never run here)."""
        if steps not in self._compiled:
            rates = jax.ShapeDtypeStruct((steps, self.shape.members), jnp.float32, sharding=self.replicated)
            lowered = self._program(steps).lower(self.abstract_state(), self.abstract_stream(steps), rates)
            self._compiled[steps] = lowered.compile()
        return self._compiled[steps]

    def __call__(self, steps: int, state, stream, learning_rates) -> tuple[Any, dict]:
        return self.compiled(steps)(state, stream, learning_rates)


@functools.lru_cache(maxsize=8)
def step_program(shape: ProgramShape, mesh: Mesh) -> StepProgram:
    """The `StepProgram` of `shape` on `mesh`, shared by every run of that shape in this process."""
    return StepProgram(shape, mesh)
