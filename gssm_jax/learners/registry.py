"""The learners by name: their configs, the one builder, and widths matched to the transformer's parameter count.

Every kind is the backbone (`gssm_jax.learners.backbone.LanguageModel`: embedding, pre-norm blocks,
final norm, zero head) around its own sequence mixer, so it maps int tokens (batch, length) to float32
logits (batch, length, V) with the same next-token convention (BOS = V) and the same init, and
`token_losses`, the training loop and the evaluation work on any of them.

  transformer  causal self-attention + gated MLP (`gssm_jax.learners.transformer`)
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
from gssm_jax.learners import hawk, lstm, mamba, minrnn, transformer
from gssm_jax.learners.backbone import BackboneConfig, LanguageModel, Layout, count_parameters

# kind -> (its config class, what it puts into the backbone's blocks)
_KINDS: dict[str, tuple[type[BackboneConfig], Layout]] = {
    "transformer": (transformer.TransformerConfig, transformer.LAYOUT),
    "mamba": (mamba.MambaConfig, mamba.LAYOUT),
    "hawk": (hawk.HawkConfig, hawk.LAYOUT),
    "mingru": (minrnn.MinGRUConfig, minrnn.MINGRU_LAYOUT),
    "minlstm": (minrnn.MinLSTMConfig, minrnn.MINLSTM_LAYOUT),
    "lstm": (lstm.LSTMConfig, lstm.LAYOUT),
}
KINDS = tuple(_KINDS)
_LAYOUTS = {config_class: layout for config_class, layout in _KINDS.values()}
PARAMETER_TOLERANCE = 0.10  # matched widths give the target parameter count within this relative error


def check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise UserError(f"config.model.kind={kind!r}; valid kinds are {', '.join(KINDS)}")


def model_config(kind: str, vocab_size: int, fields: Mapping[str, Any]) -> BackboneConfig:
    """The shape of a `kind` model: its config dataclass from the `fields` it declares.

    `fields` is typically `config.model`, which holds the fields of every kind (width, depth,
    heads, ...): each kind takes those its config declares and ignores the rest; fields it
    declares but `fields` lacks or holds as None keep the kind's defaults (e.g. each kind's `expansion`).
    Raises UserError (one line naming the field) for an unknown kind or a field out of range.
    """
    check_kind(kind)
    config_class = _KINDS[kind][0]
    declared = {field.name for field in dataclasses.fields(config_class)} - {"vocab_size"}
    given = {name: fields[name] for name in declared if name in fields and fields[name] is not None}
    return config_class(vocab_size=vocab_size, **given)


def build(shape: BackboneConfig, rngs: nnx.Rngs) -> LanguageModel:
    """A freshly initialised model of a shape made by `model_config` (the kind is the shape's class)."""
    layout = _LAYOUTS.get(type(shape))
    if layout is None:
        raise TypeError(f"no learner takes a {type(shape).__name__}")
    return LanguageModel(shape, layout, rngs=rngs)


def parameter_count(kind: str, vocab_size: int, fields: Mapping[str, Any]) -> int:
    """Scalar parameters of a `kind` model, from abstract shapes (nothing is allocated)."""
    shape = model_config(kind, vocab_size, fields)
    return count_parameters(nnx.eval_shape(lambda: build(shape, nnx.Rngs(0))))


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
