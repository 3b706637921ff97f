"""Ensembles: member k of an ensemble trains exactly as the solo run of its config, on any number of devices.

The reference is independent of the step program: a plain jitted step (optax.adamw, one member, no scan, no
vmap) on the batches of `data.OnTheFlyBatches`, which also gives each step's gradients for the tolerance below.

Tolerances. A member and its solo run compute the same thing, but XLA batches the members' matmuls and
reductions (and the solo program is another program than the reference), which reorders float32 sums.
Per step: the loss, a mean of N = batch x length positive terms, moves by at most N eps relative (Higham's
bound for a reordered sum). Parameters, to first order: a reordered gradient entry moves by at most
tau_s = N eps |g_s| (|g_s| the global norm), which moves Adam's update lr_s m/(sqrt(v) + 1e-8) of an entry
with gradient g_i by at most 2 lr_s min(1, tau_s / (|g_i| + 1e-8)) (the update is scale-invariant in g); the
weight-decay term adds rounding of order eps |p|. Over S steps the bounds add up.
"""

import functools

import jax
import numpy as np
import optax
import pytest

from gssm_jax import keys, parallel
from gssm_jax.configs.base import get_config
from gssm_jax.data import OnTheFlyBatches
from gssm_jax.gssm.kernels import sample_kernels
from gssm_jax.learners import registry
from gssm_jax.sampling.tables import sampling_tables
from gssm_jax.training import loop, members, memory, run_directory, schedule
from gssm_jax.training.checkpoints import Checkpoints
from gssm_jax.training.run import ConfigError, resolve
from gssm_jax.training.step import init_state, loss_fn

FLOAT32_EPS = float(np.finfo(np.float32).eps)
NUM_STEPS = 4


def member_configs(kind: str, root: str) -> list:
    """Three tiny members that differ in kernel seed, alphas, data seed, init seed, eval seed and peak rate."""
    configs = []
    for k, (alpha_x, alpha_z, learning_rate) in enumerate([(1e-3, 0.125, 3e-3), (0.05, 0.5, 1e-2), (0.3, 1e-3, 5e-3)]):
        config = get_config(f"size=tiny,alpha_x={alpha_x},alpha_z={alpha_z}")
        config.model.update(kind=kind, width=16, depth=1, heads=2)
        config.data.update(batch_size=8, length=16, data_seed=20 + k)
        config.eval.update(num_sequences=8, validation_sequences=8, eval_seed=40 + k)
        config.train.update(num_steps=NUM_STEPS, log_every=1, eval_every=NUM_STEPS, checkpoint_every=NUM_STEPS)
        config.optimizer.update(warmup_steps=1, learning_rate=learning_rate)
        config.seed, config.model.init_seed = 10 + k, 30 + k
        config.workdir = f"{root}/{kind}/member{k}"
        configs.append(config)
    return configs


def _adamw(hyperparameters: tuple, learning_rate):
    """optax's AdamW at a constant `learning_rate`, after clipping: the reference's own optimizer.

    hyperparameters: (clip_norm, beta1, beta2, weight_decay).
    """
    clip_norm, beta1, beta2, weight_decay = hyperparameters
    adamw = optax.adamw(learning_rate, b1=beta1, b2=beta2, weight_decay=weight_decay,
                        mask=lambda params: jax.tree.map(lambda leaf: leaf.ndim >= 2, params))
    return optax.chain(optax.clip_by_global_norm(clip_norm), adamw)


@functools.lru_cache(maxsize=4)
def _reference_step(graphdef, hyperparameters: tuple):
    """One jitted step for every member of a shape (the learning rate is an argument)."""

    @jax.jit
    def step(params, opt_state, tokens, learning_rate):
        loss, grads = jax.value_and_grad(loss_fn, argnums=1)(graphdef, params, tokens)
        updates, opt_state = _adamw(hyperparameters, learning_rate).update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, grads

    return step


def reference_run(config, steps: int = NUM_STEPS) -> dict:
    """The plain single-member run of `config`'s first `steps` steps: losses, gradients, final parameters."""
    run = resolve(config, None)
    o = run.optimizer
    hyperparameters = (o.clip_norm, o.beta1, o.beta2, o.weight_decay)
    graphdef, state = init_state(run.shape, run.init_seed, _adamw(hyperparameters, 0.0))
    params, opt_state = state["params"], state["opt_state"]
    step = _reference_step(graphdef, hyperparameters)
    kernels = sample_kernels(keys.kernel_key(run.kernel_seed), run.graph)
    stream = OnTheFlyBatches(run.graph, sampling_tables(run.graph, kernels), run.data.batch_size, run.data.length,
                             keys.data_key(run.data.data_seed), parallel.data_parallel_mesh(jax.devices()[:1]))
    rates = schedule.learning_rates(schedule.schedule_fn(run.optimizer, run.num_steps), 0, run.num_steps)
    losses, gradients = [], []
    for index in range(steps):
        params, opt_state, loss, grads = step(params, opt_state, stream.batch(index), rates[index])
        losses.append(float(loss))
        gradients.append(jax.device_get(grads))
    return {"losses": np.array(losses), "gradients": gradients, "params": jax.device_get(params), "rates": rates,
            "tokens": run.tokens_per_step}


def assert_close_to_reference(losses, params, reference: dict, what: str) -> None:
    """The tolerances of the module docstring."""
    tokens = reference["tokens"]
    np.testing.assert_allclose(losses, reference["losses"], rtol=tokens * FLOAT32_EPS,
                               err_msg=f"{what}: per-step losses")
    bound = jax.tree.map(lambda leaf: 2 * len(losses) * FLOAT32_EPS * np.abs(leaf), reference["params"])
    for rate, gradient in zip(reference["rates"], reference["gradients"], strict=False):
        tau = tokens * FLOAT32_EPS * float(optax.tree.norm(gradient))
        bound = jax.tree.map(lambda total, g, rate=rate, tau=tau: total + 2 * rate * np.minimum(
            1.0, tau / (np.abs(g) + 1e-8)), bound, gradient)
    leaves = zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(reference["params"]),
                 jax.tree.leaves(bound), strict=True)
    for (path, leaf), expected, tolerance in leaves:
        excess = np.abs(leaf - expected) - tolerance
        assert np.all(excess <= 0), f"{what}: parameter {jax.tree_util.keystr(path)} off by {excess.max():.3g} " \
                                    "beyond the bound"


def _losses(workdir: str) -> np.ndarray:
    return np.array([record["train/loss_nats_per_token"] for record in run_directory.read_metrics(workdir)])


def _params(workdir: str):
    checkpoints = Checkpoints(f"{workdir}/{run_directory.CHECKPOINTS_DIR}", keep=1)
    try:
        return jax.device_get(checkpoints.restore(checkpoints.latest_step()))["params"]
    finally:
        checkpoints.close()


@pytest.mark.parametrize("kind", registry.KINDS)
def test_each_member_trains_as_its_solo_run(kind, tmp_path):
    configs = member_configs(kind, str(tmp_path / "ensemble"))
    ensemble_results = loop.train_ensemble(configs)
    for k, config in enumerate(configs):
        solo = config.copy_and_resolve_references()
        solo.workdir = str(tmp_path / "ensemble" / kind / f"solo{k}")  # beside: shares the exact losses' cache
        solo_result = loop.train_and_evaluate(solo, solo.workdir)
        member_losses, solo_losses = _losses(config.workdir), _losses(solo.workdir)
        assert len(member_losses) == NUM_STEPS
        member_params, solo_params = _params(config.workdir), _params(solo.workdir)
        if all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(member_params), jax.tree.leaves(solo_params),
                                                      strict=True)):
            np.testing.assert_array_equal(member_losses, solo_losses)  # bitwise: XLA allowed it
        reference = reference_run(config)
        assert_close_to_reference(member_losses, member_params, reference, f"{kind} member {k}")
        assert_close_to_reference(solo_losses, solo_params, reference, f"{kind} solo {k}")
        for key in ("eval/excess_loss_nats_per_token", "eval/validation_loss_nats_per_token"):
            np.testing.assert_allclose(ensemble_results[k][key], solo_result[key], rtol=1e-4, err_msg=key)
        assert ensemble_results[k]["learning_rate"] == config.optimizer.learning_rate


def test_eight_devices_give_the_one_device_ensemble(tmp_path):
    # Two members on 8 devices: a (2, 4) mesh splits the members and each member's batch.
    configs = member_configs("transformer", str(tmp_path))[:2]
    runs = [resolve(config, None) for config in configs]
    histories = {}
    for devices in (jax.devices()[:1], jax.devices()):
        ensemble = members.Ensemble(runs, devices)
        assert dict(ensemble.mesh.shape) == ({"members": 1, "data": 1} if len(devices) == 1 else
                                             {"members": 2, "data": 4})
        state, metrics = ensemble.run(ensemble.initial_state(), 0, 2)  # one call of two steps
        histories[len(devices)] = jax.device_get(metrics)["train/loss_nats_per_token"], ensemble.member_states(state)
    for k, config in enumerate(configs):
        reference = reference_run(config, steps=2)
        for count, (losses, states) in histories.items():
            assert_close_to_reference(losses[:, k], states[k]["params"], reference, f"{count} devices, member {k}")


def test_a_member_of_another_shape_is_refused_in_one_line(tmp_path):
    configs = member_configs("transformer", str(tmp_path))
    configs[2].model.width = 32
    with pytest.raises(ConfigError) as raised:
        loop.train_ensemble(configs)
    message = str(raised.value)
    assert "\n" not in message and "member 2" in message and "model.width: 32 vs 16" in message
    configs = member_configs("transformer", str(tmp_path))
    configs[1].data.batch_size = 16
    with pytest.raises(ConfigError, match="data.batch_size: 16 vs 8"):
        loop.train_ensemble(configs)
    configs = member_configs("transformer", str(tmp_path))
    configs[1].workdir = configs[0].workdir
    with pytest.raises(ConfigError, match="share a workdir"):
        loop.train_ensemble(configs)


def test_the_program_samples_each_members_stream_bitwise():
    # Inside the step program every member's batch of step s is sampled on the (2, 4) mesh: the rows of
    # `data.OnTheFlyBatches(...).batch(s)` of that member's kernels and data seed, bit for bit.
    runs = [resolve(config, None) for config in member_configs("transformer", "/unused")[:2]]
    ensemble = members.Ensemble(runs)
    steps = jax.numpy.array([3, 7], jax.numpy.int32)
    tokens = jax.jit(ensemble.program.sample)(ensemble.stream, steps)
    for k, (source, step) in enumerate(zip(ensemble.sources, (3, 7), strict=True)):
        np.testing.assert_array_equal(np.asarray(tokens[k]), np.asarray(source.stream.batch(step)))


def test_the_ensemble_memory_holds_every_members_state():
    config = member_configs("transformer", "/unused")[0]
    one, three = memory.ensemble_memory(config, 1), memory.ensemble_memory(config, 3)
    # Arguments: parameters, optimizer state and sampling tables, per member (the learning rates are tiny).
    assert 2.9 * one.argument_bytes <= three.argument_bytes <= 3.1 * one.argument_bytes
