"""Shim: `python -m experiments.difficulty` from a checkout = `gssm-difficulty` (gssm_jax/cli/difficulty.py)."""

from gssm_jax.cli.difficulty import run

if __name__ == "__main__":
    run()
