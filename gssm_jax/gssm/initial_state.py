"""Where a sequence starts: the zero state (the default) or after an unobserved burn-in ("stationary").

* "zeros": before the first step every previous value (hidden nodes and X) is 0; the first emitted token is
  drawn at step 0 (composable-llm's semantics, and every seeded number of this library).
* "stationary": the chain starts from the zero state and runs `burn_in` steps whose tokens are not emitted;
  the first emitted token is the one of step `burn_in`. Its latent state is then drawn from the chain's
  distribution after `burn_in` steps, close to the stationary one when `burn_in` exceeds the mixing time, so
  that sequences do not all start from the same near-deterministic path.

The sampler (`gssm_jax.sampling.sampler`), the on-the-fly stream (`gssm_jax.data.batches.OnTheFlyBatches`) and
the exact forward pass (`gssm_jax.inference.token_losses`, which marginalises the unobserved burn-in exactly)
take the same two keywords, `initial_state` and `burn_in`, the fields `config.data.initial_state` and
`config.data.burn_in` of a run.
"""

from __future__ import annotations

import numpy as np

from gssm_jax.errors import UserError

INITIAL_STATES = ("zeros", "stationary")
# Unobserved steps before the first emitted token under "stationary". Measured with the exact distribution of
# the hidden values after B steps (inference.factorised.burn_in_prior), total variation from the one after
# 1024-4096 steps, kernel seeds 0-1: four_by_four and chain at (alpha_X, alpha_Z) = (1e-3, 0.125), (0.05, 1e-3)
# and (0.01, 0.03) are within 1e-5 from B = 64 (one chain seed keeps a 1e-3 sliver that mixes slowly);
# eight_by_four at (1e-3, 0.125) and (0.05, 1e-3) within 1e-5 at B = 64, at its reference (1e-3, 4e-3) 0.135 at
# B = 64 and 0.005 at B = 256. With both alphas near 1e-3 the chains are nearly reducible (0.3-1.0 even at
# B = 1024): no practical burn-in mixes them. 256 is 4x the typical mixing and within 0.5% of the slowest measured
# Experiment 1 setting; it adds 12.5% to the sampling of a T = 2048 sequence
# (tests/inference/test_initial_state.py checks the small graphs).
DEFAULT_BURN_IN = 256


def burn_in_steps(initial_state: str, burn_in: int) -> int:
    """The unobserved steps run before the first emitted token: 0 for "zeros", `burn_in` for "stationary".

    Raises:
      UserError: an unknown `initial_state` or a `burn_in` that is not an integer >= 0, naming the config field.
    """
    if initial_state not in INITIAL_STATES:
        raise UserError(f"config.data.initial_state is {initial_state!r}; use one of {', '.join(INITIAL_STATES)}")
    if isinstance(burn_in, bool) or not isinstance(burn_in, int | np.integer) or burn_in < 0:
        raise UserError(f"config.data.burn_in is {burn_in!r}; use an integer >= 0 (steps run before the first "
                        "emitted token under initial_state='stationary')")
    return int(burn_in) if initial_state == "stationary" else 0


def start_keywords(burn_in: int) -> dict[str, str | int]:
    """The sampler's and the forward pass's initial-state keywords for `burn_in` unobserved steps (the result of
    `burn_in_steps`; 0: the zero state)."""
    return {"initial_state": "stationary", "burn_in": burn_in} if burn_in else {"initial_state": "zeros"}
