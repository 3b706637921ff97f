"""Shim: `python -m experiments.train` from a checkout = `gssm-train` (gssm_jax/cli/train.py)."""

from gssm_jax.cli.train import run

if __name__ == "__main__":
    run()
