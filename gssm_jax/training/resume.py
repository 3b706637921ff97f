"""Resuming a run: does the new config compute the same thing as the one the run was trained with?

A run directory that holds a checkpoint or a result also holds the config it was trained with
(`config.json`, `gssm_jax.training.run_directory`). Rerunning with a config that differs in a field that
changes the computation (the graph, the data, the model, the optimizer, the held-out set, ...) would
silently mix two experiments in one run, so it is refused with one line listing the fields and the two
ways out: a new workdir, or `--config.train.allow_changes=FIELD,...` to continue with the new values
anyway. Fields in `NOT_COMPUTATION` (how often to log, evaluate and checkpoint, where to write, what
other tools read), and `train.num_steps` when increased (a finished run then trains on), continue
without a word. A resume that is let through rewrites `config.json` with the new config.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from gssm_jax.errors import shortened
from gssm_jax.training import run_directory
from gssm_jax.training.run import ConfigError, Run

# Dotted config fields (a trailing "." covers a whole section) that change neither the parameters nor the
# evaluated losses of a run. model.remat recomputes the same activations; the sections of the Experiment 1
# and data-size sweeps (experiment1, calibration, report, data_sweep) are read by those tools, not the loop.
# train.steps_per_call only regroups the same steps into calls.
NOT_COMPUTATION = ("train.log_every", "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints",
                   "train.memory_budget_gib", "train.allow_changes", "train.steps_per_call", "model.remat",
                   "data.verify", "metrics.", "distributed.", "workdir", "report.", "experiment1.", "calibration.",
                   "data_sweep.")
_SHOWN_CHARACTERS = 40


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}` (lists and tuples are leaves)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _comparable(value: Any) -> Any:
    """JSON's view of a value (tuples become lists), so that a saved config compares equal to its source."""
    return json.loads(json.dumps(value))


def changed_fields(saved: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """`{dotted field: (saved value, new value)}` of the fields that change the computation (module docstring)."""
    saved, new = flatten(saved), flatten(_comparable(dict(new)))
    changed = {}
    for field in sorted(set(saved) | set(new)):
        before, after = saved.get(field), new.get(field)
        if before == after or any(field == name or (name.endswith(".") and field.startswith(name))
                                  for name in NOT_COMPUTATION):
            continue
        if field == "train.num_steps" and isinstance(before, int) and isinstance(after, int) and after > before:
            continue
        changed[field] = (before, after)
    return changed


def allowed_changes(config: Mapping[str, Any]) -> set[str]:
    """The dotted fields named in `config["train"]["allow_changes"]` (comma-separated); each must be a field."""
    names = {name.strip() for name in str(config["train"].get("allow_changes") or "").split(",") if name.strip()}
    unknown = sorted(names - set(flatten(config)))
    if unknown:
        raise ConfigError(f"config.train.allow_changes names {', '.join(unknown)}, not fields of the config; give "
                          "dotted field names, e.g. optimizer.learning_rate")
    return names


def _show(value: Any) -> str:
    return shortened(json.dumps(value), _SHOWN_CHARACTERS)


def has_started(workdir: str) -> bool:
    """Whether `workdir` holds a checkpoint or a result (anything a changed config could contradict)."""
    checkpoints = os.path.join(workdir, run_directory.CHECKPOINTS_DIR)
    return os.path.exists(os.path.join(workdir, run_directory.RESULT_FILE)) or (
        os.path.isdir(checkpoints) and any(name.isdigit() for name in os.listdir(checkpoints)))


def check_resume(run: Run) -> dict[str, tuple[Any, Any]]:
    """Refuses to resume `run.workdir` with a config that changes the computation, unless the change is allowed.

    Returns:
      the allowed changes `{field: (saved, new)}` (empty for a fresh run or an unchanged config).

    Raises:
      ConfigError: one line listing the changed fields (saved -> new) and the two ways out.
    """
    workdir = run.workdir
    allowed = allowed_changes(run.config)
    path = os.path.join(workdir, run_directory.CONFIG_FILE)
    if not (has_started(workdir) and os.path.exists(path)):
        return {}
    with open(path) as file:
        saved = json.load(file)
    changed = changed_fields(saved, run.config)
    refused = [field for field in changed if field not in allowed]
    if refused:
        listed = ", ".join(f"{field} ({_show(changed[field][0])} -> {_show(changed[field][1])})" for field in refused)
        raise ConfigError(f"{workdir} holds a run trained with other {listed}; pass a new --workdir, or "
                          f"--config.train.allow_changes={','.join(refused)} to continue it with the new values")
    return changed
