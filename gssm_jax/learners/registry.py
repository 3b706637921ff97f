"""The learners by name: their configs, construction, and widths matched to the transformer's parameter count.

Every kind maps int tokens (batch, length) to float32 logits (batch, length, V) with the same
next-token convention (`transformer.next_token_inputs`, BOS = V) and the same init conventions, so
the training loop, the evaluation and `transformer.token_losses` work on any of them.

  transformer  decoder-only transformer (`gssm_jax.learners.transformer`)
  mamba        selective state-space model (Gu & Dao 2023; `gssm_jax.learners.mamba`)
  hawk         RG-LRU recurrence + gated MLP (De et al. 2024; `gssm_jax.learners.hawk`)
  mingru       minimal GRU (Feng et al. 2024; `gssm_jax.learners.minrnn`)
  minlstm      minimal LSTM (Feng et al. 2024; `gssm_jax.learners.minrnn`)
  lstm         classic LSTM (Hochreiter & Schmidhuber 1997; `gssm_jax.learners.lstm`)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from flax import nnx

from gssm_jax.errors import UserError
from gssm_jax.learners.hawk import Hawk, HawkConfig
from gssm_jax.learners.lstm import LSTM, LSTMConfig
from gssm_jax.learners.mamba import Mamba, MambaConfig
from gssm_jax.learners.minrnn import MinGRU, MinGRUConfig, MinLSTM, MinLSTMConfig
from gssm_jax.learners.transformer import Transformer, TransformerConfig, count_parameters

_MODELS = {
    "transformer": (TransformerConfig, Transformer),
    "mamba": (MambaConfig, Mamba),
    "hawk": (HawkConfig, Hawk),
    "mingru": (MinGRUConfig, MinGRU),
    "minlstm": (MinLSTMConfig, MinLSTM),
    "lstm": (LSTMConfig, LSTM),
}
KINDS = tuple(_MODELS)
PARAMETER_TOLERANCE = 0.10  # matched widths give the target parameter count within this relative error


def check_kind(kind: str) -> None:
    if kind not in _MODELS:
        raise UserError(f"config.model.kind={kind!r}; valid kinds are {', '.join(KINDS)}")


def model_config(kind: str, vocab_size: int, fields: Mapping[str, Any]) -> Any:
    """The shape of a `kind` model: its config dataclass from the `fields` it declares.

    `fields` is typically `config.model`, which holds the fields of every kind (width, depth,
    heads, ...): each kind takes those its config declares and ignores the rest; fields it
    declares but `fields` lacks or holds as None keep the kind's defaults (e.g. each kind's `expansion`).
    """
    check_kind(kind)
    config_class = _MODELS[kind][0]
    declared = {field.name for field in dataclasses.fields(config_class)} - {"vocab_size"}
    given = {name: fields[name] for name in declared if name in fields and fields[name] is not None}
    return config_class(vocab_size=vocab_size, **given)


def build(shape: Any, rngs: nnx.Rngs) -> nnx.Module:
    """The model of a shape made by `model_config` (each kind has its own config class)."""
    for config_class, model_class in _MODELS.values():
        if type(shape) is config_class:
            return model_class(shape, rngs=rngs)
    raise TypeError(f"no model takes a {type(shape).__name__}")


def build_model(kind: str, vocab_size: int, fields: Mapping[str, Any], rngs: nnx.Rngs) -> nnx.Module:
    """A freshly initialised `kind` model; `fields` as in `model_config`."""
    return _MODELS[kind][1](model_config(kind, vocab_size, fields), rngs=rngs)


def parameter_count(kind: str, vocab_size: int, fields: Mapping[str, Any]) -> int:
    """Scalar parameters of a `kind` model, from abstract shapes (nothing is allocated)."""
    return count_parameters(nnx.eval_shape(lambda: build_model(kind, vocab_size, fields, nnx.Rngs(0))))


class MatchedWidth(NamedTuple):
    """A learner's width whose parameter count is nearest a target."""

    kind: str
    width: int
    parameters: int
    target_parameters: int

    @property
    def relative_error(self) -> float:
        return self.parameters / self.target_parameters - 1


def match_width(kind: str, vocab_size: int, fields: Mapping[str, Any], target_parameters: int,
                tolerance: float = PARAMETER_TOLERANCE) -> MatchedWidth:
    """The width (other fields as given) whose parameter count is nearest `target_parameters`.

    The count is a quadratic in the width up to rounding (hidden sizes are rounded), so a quadratic
    through three widths gives a first guess; a walk of single steps then finds the smallest width
    reaching the target, and it or the width below is the nearest (the count grows with the width).
    Raises ValueError if the nearest is further than `tolerance` (relative), e.g. a target below the
    smallest model of that depth.
    """
    counts: dict[int, int] = {}

    def count(width: int) -> int:
        if width not in counts:
            counts[width] = parameter_count(kind, vocab_size, {**fields, "width": width})
        return counts[width]

    widths = np.array([16, 32, 64])
    quadratic = np.polyfit(widths, [count(int(width)) for width in widths], 2)
    roots = np.roots(quadratic - np.array([0, 0, target_parameters]))
    high = max([1, *(int(math.ceil(root.real)) for root in roots if abs(root.imag) < 1e-9 and root.real > 0)])
    while count(high) < target_parameters:
        high += 1
    while high > 1 and count(high - 1) >= target_parameters:
        high -= 1
    low = max(high - 1, 1)
    candidates = [MatchedWidth(kind, width, count(width), target_parameters) for width in {low, high}]
    best = min(candidates, key=lambda match: abs(match.relative_error))
    if abs(best.relative_error) > tolerance:
        raise UserError(f"no {kind} width gives {target_parameters:,} parameters within {tolerance:.0%} "
                        f"(nearest: width {best.width}, {best.parameters:,}); change config.model.depth")
    return best


def matched_widths(vocab_size: int, fields: Mapping[str, Any], kinds: tuple[str, ...] = KINDS
                   ) -> dict[str, MatchedWidth]:
    """For each kind, the width matching the transformer of shape `fields` in parameters (same depth)."""
    for kind in kinds:
        check_kind(kind)
    target = parameter_count("transformer", vocab_size, fields)
    return {kind: MatchedWidth(kind, fields["width"], target, target) if kind == "transformer"
            else match_width(kind, vocab_size, fields, target) for kind in kinds}
