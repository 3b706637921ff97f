"""Shim: `python -m experiments.data_sweep` from a checkout = `gssm-data-sweep` (gssm_jax/cli/data_sweep.py)."""

from gssm_jax.cli.data_sweep import run

if __name__ == "__main__":
    run()
