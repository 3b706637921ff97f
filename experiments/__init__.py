"""Shims kept so that `python -m experiments.<name> --config=configs/<file>.py ...` works from a checkout.

The entry points live in `gssm_jax/cli/` and are installed as console scripts (`gssm-train`,
`gssm-experiment1`, `gssm-calibrate`, `gssm-generate-data`, `gssm-data-sweep`, `gssm-difficulty`).
"""
