"""The backbone every learner shares: one builder, one model class, its parameter count and tree, pinned init."""

import hashlib
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gssm_jax.learners import LanguageModel, count_parameters, registry, token_losses

FLOAT32_EPS = float(np.finfo(np.float32).eps)
LEARNERS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "gssm_jax", "learners")
SMALL = {"width": 32, "depth": 2, "heads": 4}
# The embedding, the norms, the zero head and the losses: written in backbone.py and nowhere else.
BACKBONE_ONLY = r"nnx\.(Embed|RMSNorm)\(|zeros_init|def (token_losses|count_parameters|next_token_inputs)"
WITH_MLP = ("transformer", "hawk")  # the kinds whose blocks have a gated MLP after the mixer

# sha256 (16 hex digits) of each kind's initial parameters (leaves in tree order) and of its logits with
# a random head, recorded with the code before the backbone existed (per-kind model classes). A
# failure means a kind's initialisation or forward pass changed: old checkpoints and results no longer
# reproduce. CPU float rounding.
PINNED = {
    "transformer": ("d9c7fa10f6167f6c", "46726dcdbfbc0047"),
    "mamba": ("57201a971be4eb91", "a8cf1e67d43a3cc6"),
    "hawk": ("9717e20b473c20c1", "fb7a07eb759b087a"),
    "mingru": ("fccb2af435caad48", "20ee58c29271fa45"),
    "minlstm": ("acbe4f05845a8961", "0950bd339cdbb79c"),
    "lstm": ("a0624f961415cfc8", "7c3afa6bc1f64e8f"),
}


def _build(kind: str, vocab_size: int = 11, fields: dict = SMALL, **overrides) -> LanguageModel:
    return registry.build(registry.model_config(kind, vocab_size, {**fields, **overrides}), nnx.Rngs(0))


def _digest(*arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        array = np.asarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize("kind", registry.KINDS)
def test_every_kind_is_the_one_backbone(kind):
    model = _build(kind)
    assert type(model) is LanguageModel
    assert isinstance(model.config, type(registry.model_config(kind, 11, SMALL)))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    # The tree checkpoints and the parameter count read: the same top level and block parts for every kind.
    assert sorted(params) == ["blocks", "embed", "final_norm", "head"]
    parts = ["mixer_norm", "mixer", *(["mlp_norm", "mlp"] if kind in WITH_MLP else [])]
    assert sorted(params["blocks"]) == list(range(SMALL["depth"]))
    assert all(sorted(block) == sorted(parts) for block in params["blocks"].values())


def test_only_the_backbone_defines_the_embedding_head_and_blocks():
    assert LanguageModel.__subclasses__() == []
    for name in sorted(os.listdir(LEARNERS)):
        if name.endswith(".py") and name != "backbone.py":
            source = open(os.path.join(LEARNERS, name)).read()
            assert not re.search(BACKBONE_ONLY, source), name


def _shared_parameters(config, mlp: bool) -> int:
    """The backbone's own parameters, by hand: embedding (V + 1 rows), norms, gated MLPs, head."""
    vocab, width = config.vocab_size, config.width
    per_block = width + (width + 3 * width * config.mlp_hidden if mlp else 0)  # mixer norm (+ MLP norm, MLP)
    return (vocab + 1) * width + config.depth * per_block + width + width * vocab


@pytest.mark.parametrize("kind", registry.KINDS)
def test_parameter_count_is_the_shared_parts_plus_the_mixers(kind):
    fields = {"width": 48, "depth": 3, "heads": 4, "mlp_ratio": 2.5}
    config = registry.model_config(kind, 7, fields)
    model = registry.build(config, nnx.Rngs(0))
    mixers = sum(leaf.size for block in model.blocks for leaf in jax.tree.leaves(nnx.state(block.mixer, nnx.Param)))
    expected = _shared_parameters(config, kind in WITH_MLP) + mixers
    assert count_parameters(model) == expected
    assert count_parameters(nnx.state(model, nnx.Param)) == expected
    assert registry.parameter_count(kind, 7, fields) == expected


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="digests are of CPU float rounding")
@pytest.mark.parametrize("kind", registry.KINDS)
def test_initial_parameters_and_logits_are_pinned(kind):
    model = _build(kind)
    params = jax.tree.leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    model.head.kernel[...] = jax.random.normal(jax.random.key(3), model.head.kernel.shape)
    logits = nnx.jit(lambda model, inputs: model(inputs))(model, jax.random.randint(jax.random.key(1), (2, 24), 0, 11))
    assert (_digest(*params), _digest(logits)) == PINNED[kind]


def _loss_and_grads(model: LanguageModel, tokens: jax.Array):
    graphdef, params = nnx.split(model, nnx.Param)
    return jax.jit(jax.value_and_grad(lambda params: token_losses(nnx.merge(graphdef, params), tokens).mean()))(params)


@pytest.mark.parametrize("kind", registry.KINDS)
def test_remat_leaves_loss_and_gradients_unchanged(kind):
    # The backbone recomputes each block in the backward pass for every kind: same function, float32
    # rounding only (a few eps of the largest gradient).
    tokens = jax.random.randint(jax.random.key(6), (2, 20), 0, 11)
    models = [_build(kind, remat=remat, attention="xla") for remat in (False, True)]
    head = jax.random.normal(jax.random.key(7), models[0].head.kernel.shape)
    for model in models:
        model.head.kernel[...] = head
    (loss, grads), (remat_loss, remat_grads) = (_loss_and_grads(model, tokens) for model in models)
    np.testing.assert_allclose(remat_loss, loss, rtol=16 * FLOAT32_EPS)
    for grad, remat_grad in zip(jax.tree.leaves(grads), jax.tree.leaves(remat_grads), strict=True):
        np.testing.assert_allclose(remat_grad, grad, atol=64 * FLOAT32_EPS * float(jnp.abs(grad).max()) + 1e-12)


def test_decode_needs_a_step_form_and_shapes_name_the_field():
    with pytest.raises(TypeError, match="CausalSelfAttention has no step form"):
        _build("transformer").decode(jnp.zeros((1, 3), jnp.int32))
    for kind in registry.KINDS:
        with pytest.raises(ValueError, match=r"config.model.width=0 and config.model.depth=2 must be >= 1"):
            registry.model_config(kind, 8, {"width": 0})
