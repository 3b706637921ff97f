"""Shim: `python -m experiments.experiment1` from a checkout = `gssm-experiment1` (gssm_jax/cli/experiment1.py)."""

from gssm_jax.cli.experiment1 import run

if __name__ == "__main__":
    run()
