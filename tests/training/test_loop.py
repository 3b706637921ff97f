"""The data-parallel train step and the training loop: 8 devices == 1 device, golden metrics, learning, errors."""

import json
import math
import os

import jax
import numpy as np
import pytest

from gssm_jax import parallel
from gssm_jax.configs.base import get_config
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.gssm.kernels import sample_kernels
from gssm_jax.sampling import numpy_sampler
from gssm_jax.training import evaluation, loop, run_directory
from gssm_jax.training.run import ConfigError
from gssm_jax.training.step import init_state, loss_fn, make_optimizer, make_train_step, model_config

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def _tiny_config(**train_overrides):
    config = get_config("size=tiny")
    for key, value in train_overrides.items():
        config.train[key] = value
    return config


def _train_steps(tokens: np.ndarray, num_devices: int, num_steps: int = 2) -> dict:
    """Runs `num_steps` train steps (tiny config, no warmup) on the same `tokens` over `num_devices` devices.

    Returns the per-step metrics, the parameters after the first step, and the model's graphdef.
    """
    config = _tiny_config()
    config.optimizer.warmup_steps = 0  # a non-zero first learning rate, so the parameters move
    graph = GraphSpec.from_config(config.graph)
    optimizer, schedule = make_optimizer(config.optimizer, config.train.num_steps)
    mesh = parallel.data_parallel_mesh(jax.devices()[:num_devices])
    graphdef, state = init_state(model_config(config, graph), config.model.init_seed, optimizer)
    state = jax.device_put(state, parallel.replicated(mesh))
    step = make_train_step(graphdef, optimizer, schedule, mesh)
    history, params_after_first = [], None
    for _ in range(num_steps):
        state, step_metrics = step(state, jax.device_put(tokens, parallel.batch_sharded(mesh)))
        history.append({key: float(value) for key, value in jax.device_get(step_metrics).items()})
        params_after_first = params_after_first or jax.device_get(state["params"])
    return {"history": history, "params": params_after_first, "graphdef": graphdef}


@pytest.fixture(scope="module")
def fixed_tokens() -> np.ndarray:
    """A batch from the numpy reference sampler, so that the JAX sampler cannot move these tests."""
    config = _tiny_config()
    graph = GraphSpec.from_config(config.graph)
    return numpy_sampler.seed_batch(graph, 0, config.data.batch_size, config.data.length).astype(np.uint8)


@pytest.fixture(scope="module")
def one_device(fixed_tokens) -> dict:
    return _train_steps(fixed_tokens, 1)


def test_eight_device_step_equals_the_one_device_step(fixed_tokens, one_device):
    assert len(jax.devices()) == 8
    eight_device = _train_steps(fixed_tokens, 8)
    one, eight = one_device["history"][0], eight_device["history"][0]

    # Splitting the batch only reorders float32 sums over the N = batch x length tokens; a reordered
    # sum of N terms moves by at most N * eps * (sum of |terms|) (Higham's worst case). The loss is a
    # mean of positive terms and the gradient norm a norm of such sums: relative tolerance N * eps.
    tolerance = fixed_tokens.size * FLOAT32_EPS
    for name in ("train/loss_nats_per_token", "train/grad_norm", "train/learning_rate"):
        np.testing.assert_allclose(eight[name], one[name], rtol=tolerance, err_msg=name)

    # Adam's first update is lr * g / (|g| + eps_adam), in [-lr, lr]. A gradient entry that moves by
    # at most tau = N * eps * |grad| changes it by at most 2 lr tau / (|g| + eps_adam), and never by
    # more than 2 lr; the weight-decay term adds rounding of order eps * |p|.
    params_one, params_eight = one_device["params"], eight_device["params"]
    gradient_fn = jax.jit(jax.grad(loss_fn, argnums=1), static_argnums=0)
    grads = gradient_fn(one_device["graphdef"], _tiny_initial_params(), fixed_tokens)
    tau = tolerance * one["train/grad_norm"]
    learning_rate = one["train/learning_rate"]
    leaves = zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(params_one),
                 jax.tree.leaves(params_eight), strict=True)
    for (path, gradient), a, b in leaves:
        gradient = np.asarray(gradient)
        bound = 2 * learning_rate * np.minimum(1.0, tau / (np.abs(gradient) + 1e-8)) + 2 * FLOAT32_EPS * np.abs(a)
        assert np.all(np.abs(a - b) <= bound), f"parameter {jax.tree_util.keystr(path)} differs beyond {bound.max()}"
    # The second step sees the updated parameters: its loss agrees too, and has moved.
    np.testing.assert_allclose(eight_device["history"][1]["train/loss_nats_per_token"],
                               one_device["history"][1]["train/loss_nats_per_token"], rtol=tolerance)


def _tiny_initial_params() -> dict:
    config = _tiny_config()
    graph = GraphSpec.from_config(config.graph)
    optimizer, _ = make_optimizer(config.optimizer, config.train.num_steps)
    return init_state(model_config(config, graph), config.model.init_seed, optimizer)[1]["params"]


def test_golden_metrics_after_one_step(one_device):
    # Pins the model's init, architecture, loss and optimizer on a fixed token batch. Step 1's loss is
    # log V exactly (the head starts at zero); step 1's gradient norm and, after one update, step 2's
    # loss and gradient norm are the golden values.
    # If this fails, you changed init, the architecture, the loss or the optimizer: if on purpose,
    # update the numbers (and expect old checkpoints and results to be incomparable).
    history = one_device["history"]
    np.testing.assert_allclose(history[0]["train/loss_nats_per_token"], math.log(8), rtol=4 * FLOAT32_EPS)
    golden = {"grad_norm_1": 4.4196734, "loss_2": 1.9625038, "grad_norm_2": 4.329506}
    measured = {"grad_norm_1": history[0]["train/grad_norm"], "loss_2": history[1]["train/loss_nats_per_token"],
                "grad_norm_2": history[1]["train/grad_norm"]}
    # Rounding differences between CPU builds stay within ~1e-5 relative on these O(1) numbers.
    np.testing.assert_allclose(list(measured.values()), list(golden.values()), rtol=1e-5, err_msg=str(measured))


def test_schedules_warm_up_then_decay_or_stay_constant():
    config = _tiny_config()
    config.optimizer.warmup_steps = 10
    _, cosine = make_optimizer(config.optimizer, 110)
    peak = config.optimizer.learning_rate
    np.testing.assert_allclose([cosine(0), cosine(5), cosine(10), cosine(60), cosine(110)],
                               [0, peak / 2, peak, peak / 2, 0], atol=1e-9)
    config.optimizer.schedule = "constant"
    _, constant = make_optimizer(config.optimizer, 110)
    np.testing.assert_allclose([constant(5), constant(10), constant(100)], [peak / 2, peak, peak], atol=1e-9)


@pytest.mark.slow  # ~20 s alone on 2 idle cores (four compiles + 150 steps); ~60 s on a loaded machine
def test_a_short_run_learns_most_of_the_structure(tmp_path):
    # The tiny graph (2 hidden nodes x 2 states, 8 tokens) has an entropy rate well below the entropy
    # of its token frequencies. A model that learned nothing sequential would pay at least the gap
    # H(unigram) - H(rate) in excess loss; we require it to close at least half of that gap.
    # The measured excess is a mean over held-out sequences, so we allow 3 standard errors on top
    # (a false failure probability of ~0.1% when the true excess sits exactly at the bound).
    config = _tiny_config(num_steps=150, eval_every=150, checkpoint_every=150, log_every=50)
    result = loop.train_and_evaluate(config, str(tmp_path))
    graph = GraphSpec.from_config(config.graph)
    kernels = sample_kernels(jax.random.key(config.seed), graph)
    heldout = np.asarray(evaluation.heldout_tokens(graph, kernels, config.eval.num_sequences, config.data.length,
                                                   config.eval.eval_seed))
    frequencies = np.bincount(heldout.ravel(), minlength=graph.vocab_size) / heldout.size
    unigram_entropy = -np.sum(frequencies[frequencies > 0] * np.log(frequencies[frequencies > 0]))
    gap = unigram_entropy - result["eval/entropy_nats_per_token"]
    assert gap > 0.1, f"the tiny graph is too easy for this test to mean anything (gap {gap:.3f} nats)"
    bound = 0.5 * gap + 3 * result["eval/excess_loss_standard_error"]
    assert result["eval/excess_loss_nats_per_token"] < bound, (result, gap)

    # The run directory follows the contract.
    records = run_directory.read_metrics(str(tmp_path))
    assert [record["step"] for record in records] == [50, 100, 150]
    assert "eval/excess_loss_nats_per_token" in records[-1]
    with np.load(os.path.join(tmp_path, run_directory.PER_POSITION_FILE)) as curves:
        assert curves["model_loss"].shape == (1, config.data.length)
        np.testing.assert_allclose(curves["model_loss"].mean(), result["eval/loss_nats_per_token"], rtol=1e-5)
        np.testing.assert_allclose(curves["optimal_loss"].mean(), result["eval/entropy_nats_per_token"], rtol=1e-5)
    with open(os.path.join(tmp_path, run_directory.CONFIG_FILE)) as file:
        assert json.load(file)["train"]["num_steps"] == 150
    assert result["tokens_seen"] == 150 * config.data.batch_size * config.data.length
    # A finished run is not retrained: rerunning returns the stored result.
    assert loop.train_and_evaluate(config, str(tmp_path)) == result


@pytest.mark.slow
def test_divergence_raises_naming_the_step_range(tmp_path):
    config = _tiny_config(num_steps=3, log_every=1)
    config.optimizer.warmup_steps = 0
    config.optimizer.learning_rate = 1e30  # the first update sends the parameters to +-1e30
    with pytest.raises(FloatingPointError, match=r"steps 2\.\.2"):
        loop.train_and_evaluate(config, str(tmp_path))


def test_check_finite_names_the_range():
    run_directory.check_finite(5, {"loss": 1.0}, 4)
    with pytest.raises(FloatingPointError, match=r"steps 11\.\.20"):
        run_directory.check_finite(20, {"loss": float("nan")}, 10)


def test_indivisible_batch_is_one_clear_error(tmp_path):
    mesh = parallel.data_parallel_mesh()
    with pytest.raises(ValueError, match=r"config.data.batch_size=12 is not divisible by the number of devices \(8\)"):
        parallel.check_batch_divisible(12, mesh)
    config = _tiny_config()
    config.data.batch_size = 12
    with pytest.raises(ConfigError, match="config.data.batch_size=12"):
        loop.train_and_evaluate(config, str(tmp_path))
