"""Shim: `python -m experiments.calibrate` from a checkout = `gssm-calibrate` (gssm_jax/cli/calibrate.py)."""

from gssm_jax.cli.calibrate import run

if __name__ == "__main__":
    run()
