"""Shim: `python -m experiments.generate_data` = `gssm-generate-data` (gssm_jax/cli/generate_data.py)."""

from gssm_jax.cli.generate_data import run

if __name__ == "__main__":
    run()
