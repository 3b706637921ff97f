"""The learner kinds by name, without importing flax: what a config or a command line may check a name against.

`gssm_jax.learners.registry` builds each kind; `tests/cli/test_startup.py` checks that its kinds are these, in
this order (the order of `learners=all` and of the report's rows).
"""

KINDS = ("transformer", "mamba", "hawk", "mingru", "minlstm", "lstm")
