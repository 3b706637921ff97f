"""The recurrent learners: recurrence methods, parallel form == step-by-step recurrence, causality, shapes, widths."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gssm_jax.configs.base import get_config
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.learners import count_parameters, recurrence, registry, token_losses
from gssm_jax.learners.selective_scan import selective_scan
from gssm_jax.training.step import model_config

FLOAT32_EPS = float(np.finfo(np.float32).eps)
RECURRENT = tuple(kind for kind in registry.KINDS if kind != "transformer")
SMALL = {"width": 32, "depth": 2, "heads": 4}


def _build(kind: str, vocab_size: int, fields: dict) -> nnx.Module:
    return registry.build(registry.model_config(kind, vocab_size, fields), nnx.Rngs(0))


def _model(kind: str, vocab_size: int = 11, **overrides) -> nnx.Module:
    model = _build(kind, vocab_size, {**SMALL, **overrides})
    # A random head, so that the logits carry the hidden states (the zero head would hide them).
    model.head.kernel[...] = jax.random.normal(jax.random.key(3), model.head.kernel.shape)
    return model


@nnx.jit
def _logits(model, inputs):
    return model(inputs)


@nnx.jit
def _decoded(model, inputs):
    return model.decode(inputs)


@pytest.mark.parametrize("method", recurrence.METHODS)
@pytest.mark.parametrize("length", [1, 50, 130])  # below, not a multiple of, and above the chunk (64)
def test_linear_recurrence_matches_a_python_loop(method, length):
    keys = jax.random.split(jax.random.key(0), 3)
    a = jax.random.uniform(keys[0], (3, length, 2, 5))
    b = jax.random.normal(keys[1], (3, length, 2, 5))
    h0 = jax.random.normal(keys[2], (3, 2, 5))
    h, expected = np.asarray(h0, np.float64), []
    for t in range(length):
        h = np.asarray(a[:, t], np.float64) * h + np.asarray(b[:, t], np.float64)
        expected.append(h)
    expected = np.stack(expected, axis=1)
    result = jax.jit(recurrence.linear_recurrence, static_argnames="method")(a, b, h0, method=method)
    # Each output is a sum of at most `length` products rounded in float32 (each of at most `length`
    # factors in [0, 1]): its error is at most ~2 length eps times the sum of |terms|.
    scale = np.abs(np.asarray(b)).sum(axis=1, keepdims=True) + np.abs(np.asarray(h0))[:, None]
    assert np.all(np.abs(result - expected) <= 2 * length * FLOAT32_EPS * scale)


def test_linear_recurrence_gradients_agree_across_methods():
    a = jax.random.uniform(jax.random.key(1), (2, 70, 3))
    b = jax.random.normal(jax.random.key(2), (2, 70, 3))

    def loss(a, b, method):
        return jnp.sum(jnp.sin(recurrence.linear_recurrence(a, b, method=method)))

    gradients = {method: jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(a, b, method)
                 for method in recurrence.METHODS}
    for method in recurrence.METHODS[1:]:
        for reference, other in zip(gradients["associative"], gradients[method], strict=True):
            np.testing.assert_allclose(other, reference, atol=2 * 70 * FLOAT32_EPS * float(jnp.abs(reference).max()))


def test_causal_conv_matches_the_shifted_sum_and_its_step():
    conv = recurrence.CausalConv(3, 4, jnp.float32, rngs=nnx.Rngs(0))
    conv.conv.bias[...] = jnp.array([0.1, -0.2, 0.3])
    x = jax.random.normal(jax.random.key(4), (2, 9, 3))
    kernel, bias = np.asarray(conv.conv.kernel[...])[:, 0], np.asarray(conv.conv.bias[...])
    padded = np.concatenate([np.zeros((2, 3, 3)), np.asarray(x)], axis=1)
    expected = bias + sum(kernel[k] * padded[:, k:k + 9] for k in range(4))  # y_t = sum_k w_k x_{t-3+k}
    np.testing.assert_allclose(conv(x), expected, atol=8 * FLOAT32_EPS * np.abs(padded).max())
    np.testing.assert_allclose(conv(x), conv.conv(x), atol=8 * FLOAT32_EPS * np.abs(padded).max())  # XLA's convolution
    cache, stepped = conv.initial_cache(2, 3, jnp.float32), []
    for t in range(9):
        cache, y = conv.step(cache, x[:, t])
        stepped.append(y)
    np.testing.assert_allclose(jnp.stack(stepped, axis=1), expected, atol=8 * FLOAT32_EPS * np.abs(padded).max())


@pytest.mark.parametrize("kind", RECURRENT)
def test_parallel_form_matches_the_step_by_step_recurrence(kind):
    # model(inputs) runs each layer over the whole sequence (the backend's scan method, convolutions
    # over time); decode runs every layer one token at a time. They differ by the order of float32
    # rounding only: ~length eps relative per recurrence (the scan reorders a length-term sum). The
    # scan methods are pinned to each other above.
    inputs = jax.random.randint(jax.random.key(1), (3, 40), 0, 12)
    model = _model(kind)
    logits, decoded = _logits(model, inputs), _decoded(model, inputs)
    np.testing.assert_allclose(decoded, logits, rtol=0, atol=4 * 40 * FLOAT32_EPS * float(jnp.abs(logits).max()))


def test_mamba_scans_agree():
    # Mamba's "sequential" method forms a_t, b_t inside a per-token step (never the whole
    # (batch, length, E D, N) arrays); the others materialise them for linear_recurrence.
    inputs = jax.random.randint(jax.random.key(1), (3, 40), 0, 12)
    logits = {method: _logits(_model("mamba", scan=method), inputs) for method in recurrence.METHODS}
    for method in recurrence.METHODS[1:]:
        np.testing.assert_allclose(logits[method], logits["associative"], rtol=0,
                                   atol=4 * 40 * FLOAT32_EPS * float(jnp.abs(logits["associative"]).max()))


def _selective_scan_inputs(length, batch=3, states=4, channels=5):
    keys = jax.random.split(jax.random.key(7), 5)
    decay = -jnp.exp(jax.random.normal(keys[0], (states, channels)))
    step = jax.nn.softplus(jax.random.normal(keys[1], (length, batch, channels)) - 1)
    u, input_matrix, output_matrix = (jax.random.normal(key, shape) for key, shape in zip(
        keys[2:], [(length, batch, channels), (length, batch, states), (length, batch, states)], strict=True))
    return decay, step, u, input_matrix, output_matrix


def _plain_selective_scan(decay, step, u, input_matrix, output_matrix):
    """The recurrence as written in the paper, one token at a time, left to autodiff."""
    def token(h, x):
        step, u, input_matrix, output_matrix = x
        h = jnp.exp(step[:, None, :] * decay) * h + (step * u)[:, None, :] * input_matrix[..., None]
        return h, jnp.sum(h * output_matrix[..., None], axis=1)

    start = jnp.zeros((u.shape[1], decay.shape[0], u.shape[2]))
    return jax.lax.scan(token, start, (step, u, input_matrix, output_matrix))[1]


@pytest.mark.parametrize("length", [1, 31, 32, 77])
def test_selective_scan_values_and_gradients_match_autodiff_of_the_plain_recurrence(length):
    # The hand-written backward (states recomputed per chunk of 32 from saved start states, one reverse
    # recurrence) against autodiff of the plain loop: lengths inside one chunk, exactly one, and
    # several with padding. Both are float32 sums over <= length terms: tolerance length eps relative.
    inputs = _selective_scan_inputs(length)
    weights = jax.random.normal(jax.random.key(8), (length, 3, 5))

    def loss(scan, *inputs):
        return jnp.sum(jnp.sin(scan(*inputs)) * weights)

    y, expected_y = selective_scan(*inputs), _plain_selective_scan(*inputs)
    np.testing.assert_allclose(y, expected_y, rtol=0, atol=4 * length * FLOAT32_EPS * float(jnp.abs(expected_y).max()))
    gradients = jax.grad(loss, argnums=(1, 2, 3, 4, 5))(selective_scan, *inputs)
    expected = jax.grad(loss, argnums=(1, 2, 3, 4, 5))(_plain_selective_scan, *inputs)
    for name, gradient, reference in zip(["decay", "step", "u", "B", "C"], gradients, expected, strict=True):
        np.testing.assert_allclose(gradient, reference, rtol=0, err_msg=name,
                                   atol=8 * length * FLOAT32_EPS * float(jnp.abs(reference).max()))


def test_selective_scan_gradient_keeps_a_state_per_chunk():
    # The backward keeps the state at the start of each 32-token chunk (1/32 of the (length, batch, N,
    # E D) states that differentiating the per-token scan keeps) plus one chunk's working set (a few
    # chunk-sized arrays: ~4/32 at length 1024): under 8/32 of one full state array, compiled.
    inputs = _selective_scan_inputs(1024, batch=8, states=16, channels=64)
    loss = jax.grad(lambda *inputs: jnp.sum(selective_scan(*inputs) ** 2), argnums=(0, 1, 2, 3, 4))
    temporaries = jax.jit(loss).lower(*inputs).compile().memory_analysis().temp_size_in_bytes
    assert temporaries < 8 / 32 * 1024 * 8 * 16 * 64 * 4, temporaries


@pytest.mark.parametrize("kind", registry.KINDS)
def test_outputs_before_a_change_do_not_depend_on_it(kind):
    model = _model(kind)
    inputs = jax.random.randint(jax.random.key(1), (3, 12), 0, 11)
    changed = inputs.at[:, 5:].set((inputs[:, 5:] + 1) % 11)
    logits, changed_logits = _logits(model, inputs), _logits(model, changed)
    np.testing.assert_allclose(logits[:, :5], changed_logits[:, :5], rtol=0, atol=1e-6)
    assert not np.allclose(logits[:, 5:], changed_logits[:, 5:], atol=1e-3)  # the change is visible later


@pytest.mark.parametrize("kind", registry.KINDS)
def test_initial_loss_is_log_vocab(kind):
    model = _build(kind, 11, SMALL)  # zero head: uniform predictions
    tokens = jax.random.randint(jax.random.key(2), (2, 9), 0, 11).astype(jnp.uint8)
    losses = nnx.jit(token_losses)(model, tokens)
    assert losses.shape == (2, 9)
    np.testing.assert_allclose(losses, math.log(11), rtol=4 * FLOAT32_EPS)


@pytest.mark.parametrize("kind", RECURRENT)
def test_bfloat16_computation_tracks_float32(kind):
    # Same parameters, bfloat16 projections (the recurrences stay float32): bfloat16 keeps 8 mantissa
    # bits (eps 2^-7); two blocks of O(1) activations through a unit-variance head give logits that
    # agree to ~0.1 absolute, as for the transformer (tests/learners/test_transformer.py).
    inputs = jax.random.randint(jax.random.key(5), (2, 10), 0, 11)
    model32, model16 = _model(kind), _model(kind, dtype="bfloat16")
    head = jax.random.normal(jax.random.key(4), model32.head.kernel.shape) / 6
    model32.head.kernel[...] = head
    model16.head.kernel[...] = head
    logits16 = _logits(model16, inputs)
    assert logits16.dtype == jnp.float32
    np.testing.assert_allclose(logits16, _logits(model32, inputs), atol=0.1)


def _expected_parameters(kind: str, vocab: int, width: int, depth: int, heads: int, mlp_ratio: float) -> int:
    """Closed-form parameter counts from each paper's layer list (the models' docstrings)."""
    shared = (vocab + 1) * width + width + width * vocab  # embedding (with BOS), final norm, head
    if kind == "transformer":
        hidden = int(round(mlp_ratio * width))
        mixer = 4 * width * width + 3 * width * hidden + width  # qkv, out, gated MLP, MLP norm
    elif kind in ("mingru", "minlstm"):
        hidden = 3 * width
        mixer = (3 if kind == "mingru" else 4) * width * hidden + hidden * width
    elif kind == "lstm":
        mixer = 4 * width * (width + 1) + width * 4 * width + width * width  # W, bias, U, out
    elif kind == "hawk":
        hidden = heads * math.ceil(4 * width / 3 / heads)
        mixer = (2 * width * hidden + 4 * hidden + hidden + 2 * hidden * hidden // heads + 3 * hidden
                 + hidden * width + 3 * width * int(round(mlp_ratio * width)) + width)
    else:  # mamba: E = 2, N = 16, R = ceil(width / 16), conv width 4
        channels, rank = 2 * width, math.ceil(width / 16)
        mixer = (width * 2 * channels + 5 * channels + channels * (rank + 32) + rank * channels + channels
                 + 16 * channels + channels + channels * width)
    return shared + depth * (mixer + width)  # + the mixer's norm


@pytest.mark.parametrize("kind", registry.KINDS)
def test_parameter_count_matches_the_closed_form(kind):
    fields = {"width": 48, "depth": 3, "heads": 4, "mlp_ratio": 2.5}
    model = _build(kind, 7, fields)
    expected = _expected_parameters(kind, 7, **fields)
    assert count_parameters(model) == expected
    assert registry.parameter_count(kind, 7, fields) == expected


@pytest.mark.parametrize("size", ["cpu", "paper"])
def test_matched_widths_are_within_ten_percent_and_nearest(size):
    config = get_config(f"size={size}")
    vocab_size = GraphSpec.from_config(config.graph).vocab_size
    matches = registry.matched_widths(vocab_size, config.model)
    target = registry.parameter_count("transformer", vocab_size, config.model)
    for kind, match in matches.items():
        assert match.target_parameters == target
        assert abs(match.relative_error) <= registry.PARAMETER_TOLERANCE, match
        assert match.parameters == registry.parameter_count(kind, vocab_size, {**config.model, "width": match.width})
        if kind != "transformer":
            for neighbour in (match.width - 1, match.width + 1):
                count = registry.parameter_count(kind, vocab_size, {**config.model, "width": neighbour})
                assert abs(count - target) >= abs(match.parameters - target), (kind, neighbour)


def test_config_model_fields_reach_each_kind():
    config = get_config("size=cpu")
    config.model.kind = "mamba"
    graph = GraphSpec.from_config(config.graph)
    shape = model_config(config, graph)  # expansion and state_size unset (None): the kind's defaults
    assert (shape.width, shape.depth, shape.expansion, shape.state_size, shape.scan) == (64, 2, 2.0, 16, "auto")
    config.model.expansion, config.model.state_size, config.model.scan = 1.5, 8, "chunked"
    shape = model_config(config, graph)
    assert (shape.expansion, shape.state_size, shape.scan, shape.hidden) == (1.5, 8, "chunked", 96)
    config.model.kind = "hawk"
    assert model_config(config, graph).heads == config.model.heads


def test_bad_kind_and_shapes_name_the_field():
    with pytest.raises(ValueError, match="config.model.kind='gru'; valid kinds are transformer, mamba"):
        registry.model_config("gru", 8, {})
    with pytest.raises(ValueError, match="config.model.expansion"):
        registry.model_config("mingru", 8, {"expansion": 0.0})
    with pytest.raises(ValueError, match="config.model.scan='fast'"):
        registry.model_config("mamba", 8, {"scan": "fast"})
    with pytest.raises(ValueError, match="config.model.dtype"):
        registry.model_config("hawk", 8, {"dtype": "float16"})
    with pytest.raises(ValueError, match="no lstm width gives 10 parameters"):
        registry.match_width("lstm", 8, {"depth": 2}, 10)
