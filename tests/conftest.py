"""Test setup: 8 virtual CPU devices (before JAX starts its backend)."""

import jax

# Must run before any JAX computation creates the CPU backend: the data-parallel and sharded
# sampler paths then run in the ordinary suite on a 2-core machine.
jax.config.update("jax_num_cpu_devices", 8)
