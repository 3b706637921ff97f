"""What the shipped configs share: the sizes, the one `:arg` parser and the one calibration schema.

The sizes (`size=` in every shipped config's `:arg`): `tiny` runs in seconds (smoke runs, tests, the
README's quick start), `cpu` (the default) in minutes on 2 CPU cores, `paper` at composable-llm's lengths on
accelerators; `experiment1` adds `medium` (T=256 on a CPU) and `gpu` (one accelerator). Where a config does
not name a graph family, the size picks the graph: `tiny` is 2 hidden nodes x 2 states and 8 tokens at
T=32, every other size composable-llm's 4 x 4-state, 32-token graph (`four_by_four`); `base`, `data` and
`data_sweep` agree on it at every size, so a dataset of `data:size=S` is the one `base:size=S` trains on.
`calibrate` and `experiment1` name their graph families (`graph=`) and the size scales only their compute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from gssm_jax.errors import UserError

# The sizes of the training configs (base, data, data_sweep) and of calibrate; experiment1 has more.
SIZES = ("cpu", "paper", "tiny")


def parse_arg(arg: str | None, defaults: Mapping[str, Any],
              choices: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """Parses a config's `key=value,key=value` argument into a dict typed like `defaults`.

    Args:
      arg: the text after `:` in `--config=FILE:ARG` (None or "" for the defaults).
      defaults: every valid key with its default value; a value is converted to its default's type.
      choices: valid values of some keys.

    Raises:
      ValueError: one line naming the bad item and the valid keys or values (an unknown key, a missing
        `=`, a key given twice, a value of the wrong type or not among the choices).
    """
    options = dict(defaults)
    given = set()
    for item in (arg or "").split(","):
        if not item.strip():
            continue
        key, separator, value = (part.strip() for part in item.partition("="))
        if not separator or key not in defaults:
            raise UserError(f"config argument {item!r}: expected key=value with key in {', '.join(defaults)}")
        if key in given:
            raise UserError(f"config argument {key} is given twice; give each key once")
        given.add(key)
        kind = type(defaults[key])
        try:
            options[key] = kind(value)
        except ValueError:
            raise UserError(f"config argument {key}={value!r}: expected a {kind.__name__}") from None
        valid = (choices or {}).get(key)
        if valid is not None and options[key] not in valid:
            raise UserError(f"config argument {key}={options[key]!r}: valid values are {', '.join(valid)}")
    return options


def calibration_config(*, measures: Sequence[str], seeds: Sequence[int], batch_size: int, length: int,
                       tolerance: Mapping[str, float], grid_points: int, small: float,
                       compression_table: bool = False) -> ml_collections.ConfigDict:
    """`config.calibration`: the one schema read by `gssm_jax.experiment1.calibration` (gssm-calibrate, the sweep).

    The caller adds `graphs` (a tuple of family names, or a reference to `config.experiment1.graphs`).
    """
    calibration = ml_collections.ConfigDict()
    # Graph families to calibrate (names in gssm_jax.gssm.families.FAMILIES); set by the caller.
    calibration.graphs = ()
    # Measures the sides are matched on, each one of gssm_jax.difficulty.MEASURES: entropy (exact entropy rate,
    # nats/token), gzip (composable-llm's bytes/token), zlib, bz2, lzma (bits/token). The sweep matches on exactly one.
    calibration.measures = tuple(measures)
    # Graph seeds (>= 2), each matched as its own pair (common random numbers across trials): seed s draws the
    # kernels from keys.kernel_key(s) and the measured batch from keys.calibration_data_key(s).
    calibration.seeds = tuple(seeds)
    # Sequences per seed and trial.
    calibration.batch_size = batch_size
    # Tokens per sequence; 0: the graph's training length (config.experiment1.lengths), or else the family's
    # seed length (gzip depends on it).
    calibration.length = length
    # The small alpha of each side of the pair (alpha_X on one side, alpha_Z on the other).
    calibration.small = small
    # Target difficulty in the measure's unit (only with a single measure); None: the mean over the seeds of
    # the difficulty of the reference setting.
    calibration.target = ml_collections.config_dict.placeholder(float)
    # Reference setting whose difficulty is the target; None: the family's reference (alpha_X, alpha_Z).
    calibration.reference_alpha_x = ml_collections.config_dict.placeholder(float)
    calibration.reference_alpha_z = ml_collections.config_dict.placeholder(float)
    # Each seed's side is matched when |difficulty - target| <= tolerance[measure], in that measure's unit.
    calibration.tolerance = ml_collections.ConfigDict(dict(tolerance))
    # The free alpha is searched on a log grid of grid_points (>= 2) points over [min_alpha, max_alpha], then
    # refined; the range reached there is reported when the target is outside it.
    calibration.grid_points = grid_points
    calibration.min_alpha = 1e-4
    calibration.max_alpha = 10.0
    # gssm-calibrate only: also measure every calibrated setting with every compressor and the entropy rate.
    calibration.compression_table = compression_table
    # gssm-calibrate only: trained models to add to the compression table, comma-separated `row=path` (row:
    # reference, <measure>/small_alpha_x, <measure>/small_alpha_z; path: a run's result.json or run directory).
    calibration.model_results = ""
    return calibration
