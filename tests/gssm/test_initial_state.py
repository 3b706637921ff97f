"""The initial-state keywords: resolved to the burn-in steps once, errors naming the config field."""

import numpy as np
import pytest

from gssm_jax.gssm.initial_state import DEFAULT_BURN_IN, INITIAL_STATES, burn_in_steps


def test_burn_in_steps_resolves_and_checks():
    assert INITIAL_STATES == ("zeros", "stationary") and DEFAULT_BURN_IN == 256
    assert burn_in_steps("zeros", 100) == 0
    assert burn_in_steps("stationary", np.int64(100)) == 100
    assert burn_in_steps("stationary", 0) == 0
    with pytest.raises(ValueError, match="^config.data.initial_state is 'Zeros'; use one of zeros, stationary$"):
        burn_in_steps("Zeros", 1)
    for bad in (-1, 1.0, True, "8"):
        with pytest.raises(ValueError, match=r"^config.data.burn_in is .*; use an integer >= 0"):
            burn_in_steps("zeros", bad)
