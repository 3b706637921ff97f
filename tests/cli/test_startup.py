"""Every console script answers `--help` usefully, and refuses a bad flag or `:arg` before importing JAX.

Each command runs in a fresh interpreter (`python -c PROBE`), which calls the entry point's `run()` as the
console script does and, at the exit, records which heavy modules were imported by then: none may be, so a
typo costs a fraction of a second instead of the ~4 s of importing JAX, flax, optax, orbax and scipy. The wall
time is checked too, with a margin for a loaded CI machine (the module check is the robust one).
"""

import configparser
import json
import math
import os
import subprocess
import sys
import time

import pytest

from gssm_jax import configs
from gssm_jax.learners import kinds

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHONPATH = os.pathsep.join(filter(None, [REPOSITORY, os.environ.get("PYTHONPATH")]))  # the checkout first
HEAVY = ("jax", "flax", "optax", "orbax", "scipy", "matplotlib")
FAIL_SECONDS = 1.5  # what a user waits for an error on a quiet machine
MARGIN = 3.0  # a loaded CI machine (two test workers on two cores) is slower; the module check is exact
PROBE = f"""
import importlib, json, sys, time
start = time.perf_counter()
module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
try:
    importlib.import_module(module).run()
    status = 0
except SystemExit as exit_:
    status = exit_.code
heavy = sorted(name for name in {HEAVY!r} if name in sys.modules)
print(json.dumps({{"status": status, "heavy": heavy, "seconds": time.perf_counter() - start}}))
"""
# configs/experiment1.py imports the learner registry (flax) for its kind names until it takes them from
# gssm_jax.learners.kinds, as the light `--help` and errors need.
with open(os.path.join(configs.DIRECTORY, "experiment1.py")) as _file:
    _EXPERIMENT1_HEAVY = "gssm_jax.learners.registry import" in _file.read()
EXPERIMENT1_LIGHT = pytest.mark.xfail(_EXPERIMENT1_HEAVY, reason="lead: configs/experiment1.py imports the learner "
                                      "registry (flax); import KINDS from gssm_jax.learners.kinds")


def scripts() -> dict[str, str]:
    """setup.cfg's console scripts: {name: entry point module}."""
    parser = configparser.ConfigParser()
    parser.read(os.path.join(REPOSITORY, "setup.cfg"))
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return {name.strip(): target.strip().split(":")[0] for name, target in (line.split("=") for line in lines)}


SCRIPTS = scripts()
# (script, its config, a bad flag, a bad :arg); gssm-difficulty has no config: two bad flags.
BAD = {
    "gssm-train": ("base", "--config.train.nmu_steps=3", "--config=base:size=huge"),
    "gssm-experiment1": ("experiment1", "--config.train.nmu_steps=3", "--config=experiment1:size=huge"),
    "gssm-calibrate": ("calibrate", "--config.calibration.grid_pionts=3", "--config=calibrate:graph=ring"),
    "gssm-generate-data": ("data", "--config.nmu_train=3", "--config=data:size=huge"),
    "gssm-data-sweep": ("data_sweep", "--config.train.nmu_steps=3", "--config=data_sweep:size=huge"),
    "gssm-difficulty": (None, "--seeds=1", "--nosuch=3"),
}


def probe(script: str, *arguments: str) -> tuple[dict, subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", PROBE, SCRIPTS[script], *arguments], cwd=REPOSITORY,
                               capture_output=True, text=True, timeout=120,
                               env={**os.environ, "PYTHONPATH": PYTHONPATH})
    wall = time.perf_counter() - started
    assert completed.stdout.strip(), completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1]), completed, wall


def _marks(script: str) -> list:
    return [EXPERIMENT1_LIGHT] if script == "gssm-experiment1" else []


def test_every_console_script_is_in_the_table():
    assert set(BAD) == set(SCRIPTS)


@pytest.mark.parametrize("script", [pytest.param(script, marks=_marks(script)) for script in BAD])
@pytest.mark.parametrize("which", ["flag", "arg"])
def test_a_bad_flag_fails_at_once_without_jax(script, which):
    config, bad_flag, bad_arg = BAD[script]
    arguments = [bad_flag] if which == "flag" else [bad_arg]
    if config and which == "flag":
        arguments.insert(0, f"--config={config}:size=tiny" if config != "calibrate" else "--config=calibrate")
    result, completed, wall = probe(script, *arguments, "--workdir=/tmp/gssm_jax_unused")
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert result["status"] == 2 and len(lines) == 1 and lines[0].startswith("error: "), completed.stderr
    assert result["heavy"] == [], f"imported before the error: {result['heavy']}"
    assert wall <= FAIL_SECONDS * MARGIN, f"{wall:.2f} s to fail (in-process {result['seconds']:.2f} s)"


@pytest.mark.parametrize("script", [pytest.param(script, marks=_marks(script)) for script in BAD])
def test_help_says_what_it_does_with_keys_defaults_sizes_and_examples(script):
    result, completed, _ = probe(script, "--help")
    text = completed.stdout
    assert result["status"] == 0 and result["heavy"] == [], (result, completed.stderr[-2000:])
    assert text.startswith(f"{script}: ") and "Flags:" in text and "--workdir" in text, text
    examples = [line for line in text.splitlines() if line.strip().startswith(f"{script} --")]
    assert len(examples) >= 2, text
    config = BAD[script][0]
    if config is None:
        return
    module = __import__(f"gssm_jax.configs.{config}", fromlist=["ARG_DEFAULTS"])
    assert f"Its :ARG keys (--config={config}:KEY=VALUE,KEY=VALUE):" in text, text
    rows = {line.split()[0]: line for line in text.split("Its :ARG keys")[1].splitlines()[1:] if line.startswith("  ")}
    for key, default in module.ARG_DEFAULTS.items():
        shown = "unset" if isinstance(default, float) and math.isnan(default) else default
        assert rows[key].endswith(f"(default {shown})"), (key, rows)
        for choice in getattr(module, "ARG_CHOICES", {}).get(key, ()):
            assert choice in rows[key], (key, choice)
    assert "tiny" in rows["size"], rows  # the sizes


def test_help_describes_the_config_named_on_the_command_line():
    result, completed, _ = probe("gssm-train", "--config=data", "--help")
    assert result["status"] == 0 and "The config --config=data (gssm_jax/configs/data.py)" in completed.stdout
    assert "family" in completed.stdout.split("Its :ARG keys")[1]


def test_the_light_kind_names_are_the_registry_kinds():
    from gssm_jax.learners import registry

    assert kinds.KINDS == registry.KINDS


def test_light_modules_import_no_jax():
    """The package `__init__`s re-export lazily (`gssm_jax.lazy`): a light module costs only itself."""
    modules = ("gssm_jax.difficulty.sides", "gssm_jax.difficulty.measures", "gssm_jax.data.sizes",
               "gssm_jax.learners.kinds", "gssm_jax.experiment1.learners", "gssm_jax.configs.base",
               "gssm_jax.configs.data", "gssm_jax.configs.data_sweep", "gssm_jax.configs.calibrate", "gssm_jax.locks")
    code = (f"import importlib, sys\nfor name in {modules!r}:\n    importlib.import_module(name)\n"
            f"print(sorted(name for name in {HEAVY!r} if name in sys.modules))")
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPOSITORY, capture_output=True, text=True,
                               timeout=120, env={**os.environ, "PYTHONPATH": PYTHONPATH}, check=True)
    assert completed.stdout.strip() == "[]", completed.stdout
