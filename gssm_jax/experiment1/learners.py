"""The learners of the sweep: one model entry per (model size, learner kind), widths matched in parameters.

`config.experiment1.models` maps an entry name (a run folder name) to
`{"kind", "size", "width", "depth", "heads", "transformer_width"}`: `size` names the model size it belongs
to (the report compares learners within a size), and a `width` of None means "the width whose parameter
count is nearest the transformer of width `transformer_width` (same depth and heads)". The match depends on
the vocabulary (embedding and read-out), so it is resolved per graph, when a run's config is made
(`resolved_model`), with `gssm_jax.learners.registry.match_width` (within its `PARAMETER_TOLERANCE`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from gssm_jax.errors import UserError

TRANSFORMER = "transformer"
ALL = "all"
SEPARATOR = "+"  # `learners=transformer+mamba` (a comma would end the config argument's item)


def parse_learners(text: str, kinds: Sequence[str]) -> tuple[str, ...]:
    """`all` or kinds joined by `+` -> the kinds, in `kinds` order; a UserError names an unknown one."""
    if text == ALL:
        return tuple(kinds)
    chosen = [name.strip() for name in text.split(SEPARATOR) if name.strip()]
    unknown = [name for name in chosen if name not in kinds]
    if unknown or not chosen:
        raise UserError(f"config argument learners={text!r}: give all or kinds joined by {SEPARATOR} "
                         f"from {', '.join(kinds)}")
    return tuple(kind for kind in kinds if kind in chosen)


def entry_name(size: str, kind: str) -> str:
    """The run folder of `kind` at model size `size`: the size itself for the transformer (older sweeps' layout)."""
    return size if kind == TRANSFORMER else f"{size}_{kind}"


def learner_models(shapes: Mapping[str, Mapping[str, int]], kinds: Sequence[str]) -> dict[str, dict[str, Any]]:
    """One entry per model size and kind (size-major), from the transformer shape of each size.

    shapes: `{size: {"width", "depth", "heads"}}`, the transformer of each model size.
    """
    return {entry_name(size, kind): {"kind": kind, "size": size, **shape,
                                     "width": shape["width"] if kind == TRANSFORMER else None,
                                     "transformer_width": shape["width"]}
            for size, shape in shapes.items() for kind in kinds}


@functools.cache
def _matched_width(kind: str, vocab_size: int, fields: tuple[tuple[str, Any], ...], transformer_width: int) -> int:
    from gssm_jax.learners import registry  # noqa: PLC0415 (flax only when a width is matched)

    shape = dict(fields)
    target = registry.parameter_count(TRANSFORMER, vocab_size, {**shape, "width": transformer_width})
    return registry.match_width(kind, vocab_size, shape, target).width


def resolved_model(entry: Mapping[str, Any], model_fields: Mapping[str, Any], vocab_size: int) -> dict[str, Any]:
    """The `config.model` fields of one entry on a graph of `vocab_size` tokens: kind, width, depth, heads.

    model_fields: the sweep's `config.model` (mlp_ratio, expansion, ... shape the parameter counts too).
    """
    # The compute dtype ("auto" resolves per backend when a run starts) does not change a parameter count.
    fields = {**model_fields, "dtype": "float32", **{key: entry[key] for key in ("kind", "depth", "heads")}}
    width = entry["width"]
    if width is None:
        shape = tuple(sorted((key, value) for key, value in fields.items()
                             if key != "kind" and isinstance(value, (int, float, str, type(None)))))
        width = _matched_width(entry["kind"], vocab_size, shape, int(entry["transformer_width"]))
    return {"kind": entry["kind"], "width": int(width), "depth": entry["depth"], "heads": entry["heads"]}


def parameter_table(shapes: Mapping[str, Mapping[str, int]], kinds: Sequence[str], model_fields: Mapping[str, Any],
                    vocab_sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Rows `{"size", "kind", "vocab_size", "width", "parameters"}` of every learner at every size (README table)."""
    from gssm_jax.learners import registry  # noqa: PLC0415

    rows = []
    for entry in learner_models(shapes, kinds).values():
        for vocab_size in vocab_sizes:
            model = resolved_model(entry, model_fields, vocab_size)
            rows.append({"size": entry["size"], "kind": entry["kind"], "vocab_size": vocab_size,
                         "width": model["width"],
                         "parameters": registry.parameter_count(entry["kind"], vocab_size, {**model_fields, **model})})
    return rows


def parameter_markdown(sizes: Mapping[str, Mapping[str, Mapping[str, int]]], kinds: Sequence[str],
                       model_fields: Mapping[str, Any], vocab_sizes: Sequence[int] = (32, 64)) -> str:
    """The README's table: per learner (rows) and experiment size / model size (columns), the width and the
    parameter count on each vocabulary (32 tokens: four_by_four and chain; 64: eight_by_four).

    sizes: `{experiment size: {model size: transformer shape}}` (`gssm_jax.configs.experiment1.MODELS`).
    """
    columns = [(size, model, shape) for size, shapes in sizes.items() for model, shape in shapes.items()]
    cells: dict[str, list[str]] = {kind: [] for kind in kinds}
    for _, model, shape in columns:
        by_kind: dict[str, list[dict]] = {}
        for row in parameter_table({model: shape}, kinds, model_fields, vocab_sizes):
            by_kind.setdefault(row["kind"], []).append(row)
        for kind, rows in by_kind.items():
            widths = [row["width"] for row in rows]
            width_text = str(widths[0]) if len(set(widths)) == 1 else " / ".join(map(str, widths))
            cells[kind].append(f"{width_text}: " + " / ".join(f"{row['parameters']:,}" for row in rows))
    header = [f"`size={size}` {model} ({shape['depth']} x {shape['width']})" for size, model, shape in columns]
    lines = ["| learner | " + " | ".join(header) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {kind} | " + " | ".join(cells[kind]) + " |" for kind in kinds]
    return "\n".join(lines)
