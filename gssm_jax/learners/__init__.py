"""The sequence models trained on GSSM tokens: one backbone (`backbone`) around each kind's sequence mixer.

`registry.model_config(kind, vocab_size, fields)` and `registry.build(shape, rngs)` make any kind
(`KINDS`); `token_losses(model, tokens)` gives its per-token cross-entropy in nats. The names are
re-exported here, imported on first use (`gssm_jax.lazy`): `kinds` (the kind names) needs no flax.
"""

from gssm_jax import lazy

_NAMES = {
    "gssm_jax.learners.registry": ("registry",),
    "gssm_jax.learners.backbone": ("LanguageModel", "count_parameters", "next_token_inputs", "token_losses"),
    "gssm_jax.learners.kinds": ("KINDS",),
}
__getattr__, __dir__ = lazy.exports(__name__, _NAMES)
__all__ = sorted(name for names in _NAMES.values() for name in names)
